//! What a JSON Schema validation found, said so that it can be shown to a caller, logged and
//! kept with a dead letter: where and which rule, never the value. Shared by the `openapi`
//! components (parameters, bodies, answers) and the `validate` processor.

use serde_json::Value as Json;

/// Where and which rule a failed validation broke — never the value itself, which may be a
/// secret or personal data bound for a log or a dead letter.
pub fn problems(validator: &jsonschema::Validator, instance: &Json) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let at = e.instance_path().to_string();
            let rule = e.schema_path().to_string();
            let keyword = rule.rsplit('/').next().unwrap_or("");
            let what = match (keyword, e.kind()) {
                // The property's name is the schema's, not the message's: safe to say.
                (_, jsonschema::error::ValidationErrorKind::Required { property }) => {
                    match property.as_str() {
                        Some(name) => format!("`{name}` is required"),
                        None => "a required property is missing".to_string(),
                    }
                }
                ("", _) => "does not match".to_string(),
                (k, _) => format!("breaks `{k}`"),
            };
            if at.is_empty() {
                format!("{what} (schema {rule})")
            } else {
                format!("{at}: {what} (schema {rule})")
            }
        })
        .collect()
}
