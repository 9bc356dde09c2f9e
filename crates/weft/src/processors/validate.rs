//! `validate`: checks each message against a JSON Schema and fails the one that does not
//! match, saying where and which rule it broke: `/amount: breaks `minimum``, `` `id` is
//! required ``. Never the value itself, which may be a secret or personal data bound for a
//! log or a dead letter. A failed message fails as any step's failure does: a direct
//! `http_server` caller gets 422 with the problems, a durable flow keeps it as a dead letter,
//! `try`/`catch` can take it.
//!
//! The schema is written inline (YAML or JSON) or read from `schema_file` at load time. Its
//! `$schema` picks the draft (4, 6, 7, 2019-09, 2020-12; 2020-12 without one). A `$ref`
//! resolves only within the schema: nothing is fetched over the network or read from disk,
//! and a schema that needs that is refused by `weft check`.
//!
//! `schema_file` may name a schema inside a larger document by a JSON pointer after `#`:
//! `api.openapi.yaml#/components/schemas/Order` checks against that schema, its `$ref`s to
//! the document's other schemas resolved, so an OpenAPI 3.1 document is the one source of an
//! API's shapes. An OpenAPI document named without a pointer is refused: it is not a schema,
//! and would match anything.
//!
//! ```yaml
//! pipeline:
//!   - validate:
//!       schema:
//!         type: object
//!         required: [id, amount]
//!         properties:
//!           id: { type: string, minLength: 1 }
//!           amount: { type: number, minimum: 0 }
//!   - validate: { schema_file: schemas/order.json }
//!   - validate: { schema_file: "api.openapi.yaml#/components/schemas/Order" }
//! ```

use serde::Deserialize;

use crate::clients::json_schema::problems;
use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::{MappingError, Message, Step, StepError};

/// The largest `schema_file` read.
const MAX_SCHEMA_FILE: u64 = 4 << 20;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ValidateProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The JSON Schema the message must match, written inline (in YAML or JSON).
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// A file holding the JSON Schema (JSON or YAML), instead of `schema`; or a schema
    /// inside a document, by a JSON pointer after `#` (`api.openapi.yaml#/components/schemas/Order`).
    #[serde(default)]
    pub schema_file: Option<String>,
    /// How many problems a failure names at most.
    #[serde(default = "default_max_problems")]
    pub max_problems: usize,
}

fn default_max_problems() -> usize {
    5
}

impl super::Spec for Config {
    type Built = Validate;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Validate, Vec<BuildError>> {
        let (field, schema) = match (&self.schema, &self.schema_file) {
            (Some(schema), None) => ("schema", schema.clone()),
            (None, Some(path)) => ("schema_file", read_schema(path).map_err(|e| vec![e])?),
            (Some(_), Some(_)) => {
                return Err(vec![BuildError::new(
                    "schema_file",
                    "give `schema` or `schema_file`, not both",
                )]);
            }
            (None, None) => {
                return Err(vec![BuildError::new(
                    "schema",
                    "give the JSON Schema as `schema`, or its file as `schema_file`",
                )]);
            }
        };
        if self.max_problems == 0 {
            return Err(vec![BuildError::new("max_problems", "at least 1")]);
        }
        let validator = jsonschema::options()
            .build(&schema)
            .map_err(|e| vec![BuildError::new(field, unusable(&e))])?;
        Ok(Validate {
            validator,
            max_problems: self.max_problems,
        })
    }
}

fn unusable(e: &jsonschema::ValidationError) -> String {
    use jsonschema::ReferencingError;
    use jsonschema::error::ValidationErrorKind;
    match e.kind() {
        ValidationErrorKind::Referencing(ReferencingError::Unretrievable { uri, .. }) => format!(
            "not a usable JSON Schema: `$ref` to `{uri}`, outside the schema; references resolve only within it (nothing is fetched or read)"
        ),
        _ => format!("not a usable JSON Schema: {e}"),
    }
}

fn read_schema(named: &str) -> Result<serde_json::Value, BuildError> {
    let (path, pointer) = match named.split_once('#') {
        Some((path, pointer)) => (path, Some(pointer)),
        None => (named, None),
    };
    let fail = |why: String| BuildError::new("schema_file", format!("{named}: {why}"));
    let document = read_document(path)?;
    let openapi = document
        .get("openapi")
        .or_else(|| document.get("swagger"))
        .map(|v| v.as_str().unwrap_or_default().to_string());
    let Some(pointer) = pointer else {
        if openapi.is_some() {
            return Err(fail(
                "an OpenAPI document, not a schema: name one of its schemas, e.g. `#/components/schemas/Order`".into(),
            ));
        }
        return Ok(document);
    };
    if !pointer.starts_with('/') {
        return Err(fail(
            "after `#` comes a JSON pointer, e.g. `#/components/schemas/Order`".into(),
        ));
    }
    if let Some(version) = &openapi
        && !version.starts_with("3.1")
    {
        return Err(fail(format!(
            "an OpenAPI {version} document: its schemas are not JSON Schema (`nullable`, boolean `exclusiveMinimum`); point into an OpenAPI 3.1 document"
        )));
    }
    if document.pointer(pointer).is_none() {
        return Err(fail(format!("the document has nothing at `{pointer}`")));
    }
    // The root checks by that one schema alone, and keeps what `$ref`s inside the document
    // may point at (the section the pointer is in, `components`, `$defs`, `definitions`) so
    // they resolve; the document's own root keywords would otherwise apply as well.
    let first = pointer[1..].split('/').next().unwrap_or_default();
    let mut root = serde_json::Map::new();
    for key in [
        first,
        "components",
        "$defs",
        "definitions",
        "$schema",
        "$id",
    ] {
        if let Some(value) = document.get(key) {
            root.insert(key.to_string(), value.clone());
        }
    }
    root.insert("$ref".into(), format!("#{pointer}").into());
    Ok(serde_json::Value::Object(root))
}

fn read_document(path: &str) -> Result<serde_json::Value, BuildError> {
    let fail = |why: String| BuildError::new("schema_file", format!("{path}: {why}"));
    let bytes = crate::config::read_bounded(path, MAX_SCHEMA_FILE).map_err(fail)?;
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    // JSON is YAML too; the YAML reader says where a broken file breaks.
    let node = crate::config::yaml::parse(&text).map_err(|e| {
        fail(format!(
            "line {}, column {}: {}",
            e.loc.line, e.loc.col, e.message
        ))
    })?;
    crate::config::de::from_node(&node).map_err(|e| fail(e.message))
}

pub struct Validate {
    validator: jsonschema::Validator,
    max_problems: usize,
}

impl crate::core::Immediate for Validate {
    fn step(&self, message: Message) -> Result<Step, StepError> {
        let instance = serde_json::to_value(&message.value)
            .map_err(|e| MappingError(format!("the message is not JSON: {e}")))?;
        if self.validator.is_valid(&instance) {
            return Ok(Step::One(message));
        }
        let mut found = problems(&self.validator, &instance);
        let more = found.len().saturating_sub(self.max_problems);
        found.truncate(self.max_problems);
        let mut reason = format!("does not match its schema: {}", found.join("; "));
        if more > 0 {
            reason.push_str(&format!(" (and {more} more)"));
        }
        Err(MappingError(reason).into())
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Immediate;
    use crate::processors::Spec;

    fn built(schema_file: &str) -> Result<Validate, Vec<BuildError>> {
        Config {
            schema: None,
            schema_file: Some(schema_file.into()),
            max_problems: 5,
        }
        .build(&Shared::default(), &Resources::default())
    }

    fn passes(validate: &Validate, json: serde_json::Value) -> bool {
        let value = serde_json::from_value(json).unwrap();
        validate.step(Message::new(value)).is_ok()
    }

    #[test]
    fn a_schema_inside_an_openapi_document_is_named_by_a_pointer() {
        let dir = std::env::temp_dir().join(format!("weft-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api.openapi.yaml");
        std::fs::write(
            &file,
            "openapi: 3.1.0\ninfo: { title: t, version: '1' }\npaths: {}\ncomponents:\n  schemas:\n    Money: { type: string, pattern: '^[0-9]+\\.[0-9]{2}$' }\n    Order:\n      type: object\n      required: [id, total]\n      additionalProperties: false\n      properties:\n        id: { type: integer }\n        total: { $ref: '#/components/schemas/Money' }\n",
        )
        .unwrap();
        let path = file.display().to_string();
        let order = built(&format!("{path}#/components/schemas/Order")).unwrap();
        assert!(passes(
            &order,
            serde_json::json!({"id": 1, "total": "12.50"})
        ));
        // Its own rules and the neighbour it refers to both hold.
        assert!(!passes(
            &order,
            serde_json::json!({"id": 1, "total": "12.5"})
        ));
        assert!(!passes(
            &order,
            serde_json::json!({"id": 1, "total": "1.00", "x": 1})
        ));
        assert!(!passes(&order, serde_json::json!({"total": "1.00"})));
        // The document alone would match anything: refused, and so are pointers to nothing.
        for (named, says) in [
            (path.clone(), "an OpenAPI document, not a schema"),
            (format!("{path}#/components/schemas/Nope"), "nothing at"),
            (format!("{path}#components"), "JSON pointer"),
        ] {
            let errors = built(&named).err().unwrap();
            assert!(errors[0].message.contains(says), "{named}: {errors:?}");
            assert_eq!(errors[0].field, "schema_file");
        }
        // A schema file's own root keywords do not apply to the schema a pointer names.
        let defs = dir.join("money.schema.json");
        std::fs::write(
            &defs,
            r##"{"type": "object", "required": ["x"], "$defs": {"Money": {"type": "string", "pattern": "^[0-9]+\\.[0-9]{2}$"}, "Price": {"$ref": "#/$defs/Money"}}}"##,
        )
        .unwrap();
        let price = built(&format!("{}#/$defs/Price", defs.display())).unwrap();
        assert!(passes(&price, serde_json::json!("3.50")));
        assert!(!passes(&price, serde_json::json!("3.5")));
        // An OpenAPI 3.0 document's schemas are not JSON Schema.
        let old = dir.join("old.openapi.yaml");
        std::fs::write(
            &old,
            "openapi: 3.0.3\ncomponents: { schemas: { A: { type: string, nullable: true } } }\n",
        )
        .unwrap();
        let errors = built(&format!("{}#/components/schemas/A", old.display()))
            .err()
            .unwrap();
        assert!(errors[0].message.contains("OpenAPI 3.0.3"), "{errors:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
