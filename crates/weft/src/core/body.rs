//! Bodies → values, by content type, for every component that receives structured data over
//! HTTP (`http_server` requests, `http_poll` pages):
//!
//! | content type | value |
//! |---|---|
//! | none, `application/json`, `*+json` | the JSON |
//! | `application/x-www-form-urlencoded` | an object of strings (a body starting with `{` or `[` is JSON: `curl -d` labels JSON so) |
//! | `application/xml`, `text/xml`, `*+xml` | the XML as a value (see [`super::xml`]; DTDs refused) |
//! | `text/csv` | an array of objects, one per row, keyed by the header row |
//! | anything else | the text (or bytes) as a string |
//!
//! JSON nesting is bounded by serde_json (128 levels), XML nesting by [`super::xml::MAX_DEPTH`].

use bytes::Bytes;

use super::mapping::{ObjectMap, Value};
use super::xml;

/// What a body is, from its `Content-Type` (parameters ignored, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
    Xml,
    Csv,
    Text,
}

pub fn kind(content_type: Option<&str>) -> Kind {
    let Some(content_type) = content_type else {
        return Kind::Json;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/json" => Kind::Json,
        t if t.ends_with("+json") => Kind::Json,
        "application/x-www-form-urlencoded" => Kind::Form,
        "application/xml" | "text/xml" => Kind::Xml,
        t if t.ends_with("+xml") => Kind::Xml,
        "text/csv" => Kind::Csv,
        _ => Kind::Text,
    }
}

/// Decodes `body` as its content type says.
pub fn decode(content_type: Option<&str>, body: Bytes) -> Result<Value, String> {
    match kind(content_type) {
        Kind::Json => json(&body),
        // `curl -d '{…}'` labels JSON as a form; a form body cannot start with `{` or `[`.
        Kind::Form
            if body
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|b| matches!(b, b'{' | b'[')) =>
        {
            json(&body)
        }
        Kind::Form => {
            let mut object = ObjectMap::new();
            for (k, v) in form_urlencoded::parse(&body) {
                object.insert(k.as_ref().into(), Value::from(v.as_ref()));
            }
            Ok(Value::Object(object))
        }
        Kind::Xml => xml::parse(&body).map_err(|e| e.to_string()),
        Kind::Csv => csv(&body),
        Kind::Text => Ok(Value::Bytes(body)),
    }
}

fn json(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("body is empty; expected JSON".into());
    }
    serde_json::from_slice::<Value>(body).map_err(|e| {
        format!(
            "invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })
}

fn csv(body: &[u8]) -> Result<Value, String> {
    let mut reader = ::csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| format!("CSV: {e}"))?
        .iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("CSV: {e}"))?;
        let mut row = ObjectMap::new();
        for (name, field) in headers.iter().zip(record.iter()) {
            row.insert(name.as_str().into(), Value::from(field));
        }
        rows.push(Value::Object(row));
    }
    Ok(Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_content_type() {
        let csv = decode(
            Some("text/csv; charset=utf-8"),
            Bytes::from("id,name\n1,Ada\n2,\"B, C\"\n"),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&csv).unwrap(),
            serde_json::json!([{"id": "1", "name": "Ada"}, {"id": "2", "name": "B, C"}])
        );
        assert!(
            decode(Some("text/csv"), Bytes::from("a,b\n1\n")).is_err(),
            "ragged rows"
        );
        let xml = decode(Some("application/soap+xml"), Bytes::from("<a><b>1</b></a>")).unwrap();
        assert_eq!(
            serde_json::to_value(&xml).unwrap(),
            serde_json::json!({"a": {"b": "1"}})
        );
        assert_eq!(kind(Some("Application/Problem+JSON")), Kind::Json);
        assert_eq!(kind(Some("text/plain")), Kind::Text);
    }
}
