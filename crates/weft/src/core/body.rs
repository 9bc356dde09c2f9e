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
//! | `multipart/form-data` | an object of fields: a text part as a string, a file part as `{ filename, content_type, content }` |
//!
//! JSON nesting is bounded by serde_json (128 levels), XML nesting by [`super::xml::MAX_DEPTH`].
//!
//! A compressed body (`Content-Encoding: gzip`, `deflate`, `br`) is unpacked first
//! ([`unpack`]), bounded by the size of what it unpacks to.
//!
//! And values → bodies, for components that send messages ([`Encoding`]): by the component's
//! `format`, else by the `Content-Type` header it was given, else JSON (a string message as its
//! raw text).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use super::mapping::{ObjectMap, Value};
use super::xml;

/// What a body is, from its `Content-Type` (parameters ignored, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
    Xml,
    Csv,
    Multipart,
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
        "multipart/form-data" => Kind::Multipart,
        _ => Kind::Text,
    }
}

/// Why a body's `Content-Encoding` could not be undone.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unpacked {
    #[error("content encoding `{0}` is not supported (gzip, deflate, br; at most two)")]
    Unsupported(String),
    #[error("the decoded body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the {0} body does not decode: {1}")]
    Corrupt(&'static str, String),
}

/// `body` with its `Content-Encoding` undone (`gzip, br`: the last applied first), never
/// growing past `limit` bytes however small it was sent: a decompression bomb stops there.
pub fn unpack(encoding: &str, body: Bytes, limit: usize) -> Result<Bytes, Unpacked> {
    use std::io::Read;
    let codings: Vec<&str> = encoding
        .rsplit(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        .collect();
    // Each layer may unpack to `limit`: a long chain would multiply the work a small body asks.
    if codings.len() > 2 {
        return Err(Unpacked::Unsupported(encoding.to_string()));
    }
    let mut body = body;
    for coding in codings {
        let coding = coding.to_ascii_lowercase();
        let (name, reader): (&'static str, Box<dyn Read + '_>) = match coding.as_str() {
            "gzip" | "x-gzip" => (
                "gzip",
                Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
            ),
            "deflate" => (
                "deflate",
                Box::new(flate2::read::ZlibDecoder::new(&body[..])),
            ),
            "br" => (
                "br",
                Box::new(brotli_decompressor::Decompressor::new(&body[..], 8 * 1024)),
            ),
            _ => return Err(Unpacked::Unsupported(coding)),
        };
        let mut out = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| Unpacked::Corrupt(name, e.to_string()))?;
        if out.len() > limit {
            return Err(Unpacked::TooLarge(limit));
        }
        body = Bytes::from(out);
    }
    Ok(body)
}

/// Decodes `body` as its content type says.
pub fn decode(content_type: Option<&str>, body: Bytes) -> Result<Value, String> {
    let kind = kind(content_type);
    if reads_as_json(kind, &body) {
        return json(&body);
    }
    match kind {
        Kind::Form => {
            let mut object = ObjectMap::new();
            for (k, v) in form_urlencoded::parse(&body) {
                object.insert(k.as_ref().into(), Value::from(v.as_ref()));
            }
            Ok(Value::Object(object))
        }
        Kind::Xml => xml::parse(&body).map_err(|e| e.to_string()),
        Kind::Csv => csv(&body),
        Kind::Multipart => multipart(content_type.unwrap_or(""), body),
        // (JSON was read above.)
        Kind::Json | Kind::Text => Ok(Value::Bytes(body)),
    }
}

/// Whether [`decode`] reads a body of this kind as JSON.
pub fn reads_as_json(kind: Kind, body: &[u8]) -> bool {
    match kind {
        Kind::Json => true,
        // `curl -d '{…}'` labels JSON as a form; a form body cannot start with `{` or `[`.
        Kind::Form => body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'{' | b'[')),
        _ => false,
    }
}

/// The parts of a `multipart/form-data` body (read whole already, so this never waits).
fn multipart(content_type: &str, body: Bytes) -> Result<Value, String> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| format!("multipart: {e}"))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut object = ObjectMap::new();
    let read = async {
        while let Some(field) = parts
            .next_field()
            .await
            .map_err(|e| format!("multipart: {e}"))?
        {
            let name = field.name().unwrap_or("").to_string();
            let file_name = field.file_name().map(str::to_string);
            let part_type = field.content_type().map(ToString::to_string);
            let data = field.bytes().await.map_err(|e| format!("multipart: {e}"))?;
            let value = match file_name {
                None => Value::Bytes(data),
                Some(file_name) => {
                    let mut file = ObjectMap::new();
                    file.insert("filename".into(), Value::from(file_name));
                    file.insert(
                        "content_type".into(),
                        part_type.map_or(Value::Null, Value::from),
                    );
                    file.insert("content".into(), Value::Bytes(data));
                    Value::Object(file)
                }
            };
            match object.get_mut(name.as_str()) {
                Some(Value::Array(items)) => items.push(value),
                Some(first) => {
                    let first = std::mem::replace(first, Value::Null);
                    object.insert(name.into(), Value::Array(vec![first, value]));
                }
                None => {
                    object.insert(name.into(), value);
                }
            }
        }
        Ok::<_, String>(())
    };
    // The whole body is in memory: polling once more than there are parts finishes it.
    futures_util::FutureExt::now_or_never(read)
        .ok_or_else(|| "multipart: the body is incomplete".to_string())??;
    Ok(Value::Object(object))
}

/// How a component writes a message as a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The message as JSON.
    Json,
    /// An object of scalars (or arrays of them, repeated) as `application/x-www-form-urlencoded`.
    Form,
    /// An object as `multipart/form-data`: scalars as text parts, `{ filename, content,
    /// content_type }` as file parts, anything else as a JSON part.
    Multipart,
    /// `{ root: … }` as an XML document (`@attr`, `#text`, arrays repeat elements).
    Xml,
    /// An array of objects (or one object) as CSV with a header row.
    Csv,
    /// A string as its text; anything else as JSON text, sent as `text/plain`.
    Text,
}

/// What a sending component does with its messages: a fixed [`Format`], or the default (JSON,
/// a string message as its raw text). A format chosen by a `Content-Type` header leaves string
/// messages as they are (a SOAP envelope or a form written by a template, say).
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoding {
    format: Option<Format>,
    /// Chosen by a `Content-Type` header rather than `format`: a string message is then taken
    /// as already written in that format and sent as it is.
    by_header: bool,
}

impl Encoding {
    /// From the component's `format`, else its configured `Content-Type` header.
    pub fn new(format: Option<Format>, content_type: Option<&str>) -> Result<Encoding, String> {
        let by_header = format.is_none() && content_type.is_some();
        let format = format.or_else(|| {
            content_type.map(|ct| match kind(Some(ct)) {
                Kind::Json => Format::Json,
                Kind::Form => Format::Form,
                Kind::Xml => Format::Xml,
                Kind::Csv => Format::Csv,
                Kind::Multipart => Format::Multipart,
                Kind::Text => Format::Text,
            })
        });
        if format == Some(Format::Multipart) && content_type.is_some() {
            return Err(
                "with multipart bodies leave `Content-Type` out: weft sets it with the boundary"
                    .into(),
            );
        }
        Ok(Encoding { format, by_header })
    }

    /// For a component with `format` and `headers` settings (a `Content-Type` header there
    /// chooses the format when `format` does not).
    pub fn configured(
        format: Option<Format>,
        headers: &std::collections::BTreeMap<String, String>,
    ) -> Result<Encoding, String> {
        let content_type = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str());
        if format == Some(Format::Multipart) && content_type.is_some() {
            return Err(
                "with multipart bodies leave `Content-Type` out: weft sets it with the boundary"
                    .into(),
            );
        }
        // A templated content type is only known per message: it chooses no format.
        Encoding::new(format, content_type.filter(|v| !v.contains("{{")))
    }

    /// For a component that writes whole messages as files or records (no HTTP form parts).
    pub fn for_records(format: Option<Format>) -> Result<Encoding, String> {
        if format == Some(Format::Multipart) {
            return Err("multipart is for HTTP bodies".into());
        }
        Encoding::new(format, None)
    }

    /// The body and its content type.
    pub fn encode(&self, value: &Value) -> Result<(Bytes, Cow<'static, str>), String> {
        if self.by_header
            && let Some(text) = raw(value)
        {
            return Ok((text, "text/plain; charset=utf-8".into()));
        }
        Ok(match self.format {
            None => match raw(value) {
                Some(text) => (text, "text/plain; charset=utf-8".into()),
                None => (to_json(value), "application/json".into()),
            },
            Some(Format::Json) => (to_json(value), "application/json".into()),
            Some(Format::Text) => (
                raw(value).unwrap_or_else(|| to_json(value)),
                "text/plain; charset=utf-8".into(),
            ),
            Some(Format::Form) => (
                Bytes::from(form(value)?),
                "application/x-www-form-urlencoded".into(),
            ),
            Some(Format::Xml) => (
                Bytes::from(xml::write(value).map_err(|e| e.to_string())?),
                "application/xml".into(),
            ),
            Some(Format::Csv) => (Bytes::from(write_csv(value)?), "text/csv".into()),
            Some(Format::Multipart) => {
                let boundary = format!("weft-{:032x}", fastrand::u128(..));
                let body = write_multipart(value, &boundary)?;
                (
                    Bytes::from(body),
                    format!("multipart/form-data; boundary={boundary}").into(),
                )
            }
        })
    }
}

/// A string's bytes (VRL holds text as bytes or as a checked string).
fn raw(value: &Value) -> Option<Bytes> {
    match value {
        Value::Bytes(b) => Some(b.clone()),
        Value::String(s) => Some(s.as_bytes().clone()),
        _ => None,
    }
}

/// A scalar's text in a form, a CSV cell or a multipart part.
fn scalar(value: &Value) -> Option<String> {
    Some(match value {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Null => String::new(),
        Value::Object(_) | Value::Array(_) => return None,
        other => match serde_json::to_value(other).ok()? {
            serde_json::Value::String(s) => s,
            v => v.to_string(),
        },
    })
}

fn fields<'a>(value: &'a Value, what: &str) -> Result<&'a ObjectMap, String> {
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(format!("a {what} body is made from an object")),
    }
}

fn form(value: &Value) -> Result<String, String> {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, v) in fields(value, "form")? {
        let items = match v {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for item in items {
            let text = scalar(item).ok_or_else(|| {
                format!("form field `{name}` must be a scalar or an array of scalars")
            })?;
            out.append_pair(name, &text);
        }
    }
    Ok(out.finish())
}

fn write_csv(value: &Value) -> Result<Vec<u8>, String> {
    let rows: Vec<&ObjectMap> = match value {
        Value::Array(items) => items
            .iter()
            .map(|row| fields(row, "CSV row's"))
            .collect::<Result<_, _>>()?,
        one => vec![fields(one, "CSV")?],
    };
    // Columns in the order they first appear.
    let mut columns: Vec<&str> = Vec::new();
    for row in &rows {
        for name in row.keys() {
            if !columns.contains(&name.as_str()) {
                columns.push(name.as_str());
            }
        }
    }
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    writer
        .write_record(&columns)
        .map_err(|e| format!("CSV: {e}"))?;
    for row in rows {
        let mut record = Vec::with_capacity(columns.len());
        for column in &columns {
            let cell = row.get(*column).unwrap_or(&Value::Null);
            record.push(
                scalar(cell).unwrap_or_else(|| serde_json::to_string(cell).unwrap_or_default()),
            );
        }
        writer
            .write_record(&record)
            .map_err(|e| format!("CSV: {e}"))?;
    }
    writer.into_inner().map_err(|e| format!("CSV: {e}"))
}

/// A name in a part's `Content-Disposition` (quotes and line breaks escaped as browsers do).
fn disposition_name(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn write_multipart(value: &Value, boundary: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (name, v) in fields(value, "multipart")? {
        let items = match v {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for item in items {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let name = disposition_name(name);
            let file = match item {
                Value::Object(f) if f.contains_key("filename") && f.contains_key("content") => {
                    Some(f)
                }
                _ => None,
            };
            let (headers, data): (String, Bytes) = match (file, scalar(item)) {
                (Some(f), _) => {
                    let filename = disposition_name(
                        &scalar(&f["filename"])
                            .ok_or_else(|| format!("part `{name}`: `filename` must be text"))?,
                    );
                    let content_type = f
                        .get("content_type")
                        .and_then(scalar)
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| "application/octet-stream".into());
                    if content_type.contains(['\r', '\n']) {
                        return Err(format!("part `{name}`: its content type has a line break"));
                    }
                    let data = raw(&f["content"]).unwrap_or_else(|| {
                        Bytes::from(serde_json::to_vec(&f["content"]).unwrap_or_default())
                    });
                    (
                        format!(
                            "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n"
                        ),
                        data,
                    )
                }
                (None, Some(text)) => (
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n"),
                    Bytes::from(text),
                ),
                (None, None) => (
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"\r\nContent-Type: application/json\r\n"
                    ),
                    Bytes::from(serde_json::to_vec(item).unwrap_or_default()),
                ),
            };
            out.extend_from_slice(headers.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out)
}

/// `value` as JSON. Room for a typical body is taken up front: grown from empty, the vector of
/// a 300-byte body is moved six times.
pub fn to_json(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(512);
    if serde_json::to_writer(&mut out, value).is_err() {
        out.clear();
    }
    Bytes::from(out)
}

/// A broker's payload as a message value: JSON when it parses, else the text (or bytes).
pub fn payload(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| Value::Bytes(Bytes::copy_from_slice(bytes)))
}

fn json(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("body is empty; expected JSON".into());
    }
    serde_json::from_slice::<Value>(body).map_err(invalid_json)
}

fn invalid_json(e: serde_json::Error) -> String {
    format!(
        "invalid JSON at line {} column {}: {e}",
        e.line(),
        e.column()
    )
}

/// Whether `body` parses as [`decode`] would parse it as JSON (the same errors, the same
/// nesting bound), without building the value (at most the parser's one buffer for escaped
/// strings is allocated). What a durable flow stores as it was sent, to be parsed once, when
/// it is delivered.
pub fn check_json(body: &[u8]) -> Result<(), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("body is empty; expected JSON".into());
    }
    serde_json::from_slice::<Checked>(body)
        .map(drop)
        .map_err(invalid_json)
}

/// Any JSON value, visited as a [`Value`] is built (numbers parsed, so one out of range is
/// refused as it would be there), and then forgotten.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Checked, E> {
        // A `Value` holds no NaN.
        if v.is_nan() {
            return Err(E::invalid_value(serde::de::Unexpected::Float(v), &self));
        }
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
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

    /// A durable flow checks a JSON body without parsing it, and parses it when delivered:
    /// what one refuses the other must refuse too, with the same words.
    #[test]
    fn check_json_refuses_what_decode_refuses() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases = [
            r#"{"id": 1, "tags": ["a", {"b": null}], "x": -2.5e3, "t": true}"#.to_string(),
            "  [1, 2]\n".into(),
            "\"text\"".into(),
            "18446744073709551616".into(),
            r#"{"big": 1e400}"#.into(),
            r#"{"s": "\ud800"}"#.into(),
            r#"{"a": 1,}"#.into(),
            r#"{"a": 1} trailing"#.into(),
            "".into(),
            "  \n".into(),
            "{\"a\":".into(),
            "\u{feff}{}".into(),
            deep(127),
            deep(200),
        ];
        for case in cases {
            let decoded = json(case.as_bytes()).map(drop);
            assert_eq!(check_json(case.as_bytes()), decoded, "{case:?}");
        }
        assert!(check_json(deep(200).as_bytes()).is_err());
        assert!(check_json(br#"{"big": 1e400}"#).is_err());
    }

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

    fn value(json: serde_json::Value) -> Value {
        serde_json::from_value(json).unwrap()
    }

    fn round_trip(format: Format, json: serde_json::Value) -> serde_json::Value {
        let encoding = Encoding::new(Some(format), None).unwrap();
        let (body, content_type) = encoding.encode(&value(json)).unwrap();
        serde_json::to_value(decode(Some(&content_type), body).unwrap()).unwrap()
    }

    #[test]
    fn what_is_written_reads_back() {
        assert_eq!(
            round_trip(
                Format::Form,
                serde_json::json!({"q": "a&b c", "n": 2, "tag": ["x", "y"]})
            ),
            // Forms are flat: a repeated name keeps its last value when read into an object.
            serde_json::json!({"q": "a&b c", "n": "2", "tag": "y"})
        );
        assert_eq!(
            round_trip(
                Format::Xml,
                serde_json::json!({"r": {"@id": "1", "a": ["x<", "y"], "b": {"#text": "t", "@k": "v"}}})
            ),
            serde_json::json!({"r": {"@id": "1", "a": ["x<", "y"], "b": {"#text": "t", "@k": "v"}}})
        );
        assert_eq!(
            round_trip(
                Format::Csv,
                serde_json::json!([{"a": "1", "b": "x,\"y\""}, {"a": "2"}])
            ),
            serde_json::json!([{"a": "1", "b": "x,\"y\""}, {"a": "2", "b": ""}])
        );
        assert_eq!(
            round_trip(
                Format::Multipart,
                serde_json::json!({"t": "v", "f": {"filename": "a\".txt", "content": "--\r\n"}})
            ),
            serde_json::json!({"t": "v", "f": {
                "filename": "a%22.txt", "content_type": "application/octet-stream", "content": "--\r\n"
            }})
        );
        // What a format cannot hold is refused with the reason.
        let refused = |format, json| {
            Encoding::new(Some(format), None)
                .unwrap()
                .encode(&value(json))
                .unwrap_err()
        };
        assert!(refused(Format::Form, serde_json::json!({"a": {"b": 1}})).contains("`a`"));
        assert!(refused(Format::Csv, serde_json::json!([1])).contains("object"));
        assert!(refused(Format::Xml, serde_json::json!({"1x": 1})).contains("not an XML name"));
        // A Content-Type header chooses the format; multipart's boundary is weft's to set.
        let headers = |ct: &str| [("Content-Type".to_string(), ct.to_string())].into();
        let (_, ct) = Encoding::configured(None, &headers("text/csv"))
            .unwrap()
            .encode(&value(serde_json::json!({"a": 1})))
            .unwrap();
        assert_eq!(ct, "text/csv");
        assert!(Encoding::configured(None, &headers("multipart/form-data")).is_err());
        assert!(Encoding::configured(Some(Format::Multipart), &headers("{{ .t }}")).is_err());
        // A string under a header-chosen format is taken as already written in it.
        let (body, _) = Encoding::configured(None, &headers("text/xml"))
            .unwrap()
            .encode(&Value::from("<a/>"))
            .unwrap();
        assert_eq!(body, "<a/>");
    }
}

#[cfg(test)]
mod unpack_tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn bodies_are_unpacked_within_the_limit() {
        let json = br#"{"n": 1}"#;
        assert_eq!(unpack("gzip", gzip(json), 100).unwrap(), &json[..]);
        assert_eq!(
            unpack("identity", Bytes::from_static(json), 100).unwrap(),
            &json[..]
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(json).unwrap();
        let twice = gzip(&zlib.finish().unwrap());
        assert_eq!(unpack("deflate, gzip", twice, 100).unwrap(), &json[..]);
        // `{"n": 1}` as Node's zlib.brotliCompressSync writes it.
        let br = [139, 3, 128, 123, 34, 110, 34, 58, 32, 49, 125, 3];
        assert_eq!(
            unpack("br", Bytes::copy_from_slice(&br), 100).unwrap(),
            &json[..]
        );
        // 10 MB of zeros in a few kilobytes: stopped at the limit.
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            unpack("gzip", bomb, 1 << 20),
            Err(Unpacked::TooLarge(1 << 20))
        );
        assert!(matches!(
            unpack("gzip, gzip, gzip", gzip(json), 100),
            Err(Unpacked::Unsupported(_))
        ));
        assert!(matches!(
            unpack("zstd", Bytes::new(), 100),
            Err(Unpacked::Unsupported(c)) if c == "zstd"
        ));
        assert!(matches!(
            unpack("br", Bytes::from_static(b"not brotli"), 100),
            Err(Unpacked::Corrupt("br", _))
        ));
    }
}
