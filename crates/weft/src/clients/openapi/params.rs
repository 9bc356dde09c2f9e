//! An operation's parameters: where each goes (path, query, header, cookie) and how its value
//! is written there (OpenAPI's `style` and `explode`).

use serde_json::Value as Json;

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
}

/// How a parameter's value is written (OpenAPI's `style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Simple,
    Label,
    Matrix,
    Form,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

impl Style {
    pub(super) fn parse(text: Option<&str>, location: In) -> Result<Style, String> {
        let style = match text {
            None if location == In::Query => return Ok(Style::Form),
            None => return Ok(Style::Simple),
            Some("simple") => Style::Simple,
            Some("label") => Style::Label,
            Some("matrix") => Style::Matrix,
            Some("form") => Style::Form,
            Some("spaceDelimited") => Style::SpaceDelimited,
            Some("pipeDelimited") => Style::PipeDelimited,
            Some("deepObject") => Style::DeepObject,
            Some(other) => return Err(format!("unknown style `{other}`")),
        };
        let allowed = match location {
            In::Path => matches!(style, Style::Simple | Style::Label | Style::Matrix),
            In::Query => matches!(
                style,
                Style::Form | Style::SpaceDelimited | Style::PipeDelimited | Style::DeepObject
            ),
            In::Header => style == Style::Simple,
        };
        if allowed {
            Ok(style)
        } else {
            Err(format!(
                "style `{}` is not allowed here",
                text.unwrap_or("")
            ))
        }
    }
}

pub struct Param {
    pub name: String,
    pub location: In,
    pub required: bool,
    pub style: Style,
    pub explode: bool,
    /// Described by `content` rather than `schema`: sent as JSON text.
    pub json: bool,
    pub validator: Option<jsonschema::Validator>,
}

/// A value's text inside a parameter.
pub(super) fn value_text(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Percent-encoded for a path segment or a query component (a space as `%20`).
fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Param {
    /// The parameter as it is sent, by its `style` and `explode`: for a path, what replaces
    /// `{name}`; for a query, its `name=value` pairs joined by `&` (empty when there are none);
    /// for a header, the value. Path and query text is percent-encoded, delimiters are not.
    pub fn serialize(&self, value: &Json) -> String {
        let enc = |t: &str| {
            if self.location == In::Header {
                t.to_string()
            } else {
                encoded(t)
            }
        };
        let name = enc(&self.name);
        if self.json {
            let text = enc(&value.to_string());
            return match self.location {
                In::Query => format!("{name}={text}"),
                In::Path | In::Header => text,
            };
        }
        // The value as items: one for a primitive, the elements of an array, and for an object
        // either `key=value` items (exploded) or keys and values in turn.
        let exploded_object = matches!(value, Json::Object(_)) && self.explode;
        let items: Vec<String> = match value {
            Json::Array(values) => values.iter().map(|v| enc(&value_text(v))).collect(),
            Json::Object(fields) if self.explode || self.style == Style::DeepObject => fields
                .iter()
                .map(|(k, v)| match self.style {
                    Style::DeepObject => format!("{name}%5B{}%5D={}", enc(k), enc(&value_text(v))),
                    _ => format!("{}={}", enc(k), enc(&value_text(v))),
                })
                .collect(),
            Json::Object(fields) => fields
                .iter()
                .flat_map(|(k, v)| [enc(k), enc(&value_text(v))])
                .collect(),
            primitive => vec![enc(&value_text(primitive))],
        };
        let array = matches!(value, Json::Array(_));
        match self.style {
            Style::Simple => items.join(","),
            Style::Label if self.explode => format!(".{}", items.join(".")),
            Style::Label => format!(".{}", items.join(",")),
            Style::Matrix if items.is_empty() => format!(";{name}"),
            Style::Matrix if exploded_object => items.iter().map(|i| format!(";{i}")).collect(),
            Style::Matrix if self.explode && array => {
                items.iter().map(|i| format!(";{name}={i}")).collect()
            }
            Style::Matrix => format!(";{name}={}", items.join(",")),
            Style::Form if exploded_object => items.join("&"),
            Style::DeepObject if matches!(value, Json::Object(_)) => items.join("&"),
            Style::Form if !self.explode => format!("{name}={}", items.join(",")),
            Style::SpaceDelimited if !self.explode => format!("{name}={}", items.join("%20")),
            Style::PipeDelimited if !self.explode => format!("{name}={}", items.join("%7C")),
            // deepObject is defined for objects only; anything else is written as exploded form.
            Style::Form | Style::DeepObject | Style::SpaceDelimited | Style::PipeDelimited => items
                .iter()
                .map(|i| format!("{name}={i}"))
                .collect::<Vec<_>>()
                .join("&"),
        }
    }
}
