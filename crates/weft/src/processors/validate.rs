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
    /// A file holding the JSON Schema (JSON or YAML), instead of `schema`.
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

fn read_schema(path: &str) -> Result<serde_json::Value, BuildError> {
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
