//! Shapes that exist only for the JSON Schema: a field whose YAML takes one of several forms
//! (deserialized by hand where it is read) is described with these instead.

use schemars::JsonSchema;

/// A field that takes one string or a list of them.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A component with a short form: a bare value, or its settings.
#[derive(JsonSchema)]
#[schemars(rename = "ShortOr{T}")]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ShortOr<T> {
    Short(String),
    Full(T),
}
