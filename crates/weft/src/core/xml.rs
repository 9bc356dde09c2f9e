//! XML → value, for answers that come as XML (SOAP). An element becomes an object of its
//! children by local name (namespace prefixes dropped; a name seen twice becomes an array), its
//! attributes as `@name`, and its text as `#text` — or, for an element with only text, the text
//! itself; an empty element is null.
//!
//! Untrusted input is bounded: a document with a DTD (`<!DOCTYPE …>`) is refused, so no entity
//! is ever declared, let alone expanded; only the five predefined entities and character
//! references are resolved; nesting deeper than [`MAX_DEPTH`] is refused.

use quick_xml::XmlVersion;
use quick_xml::events::Event;

use super::mapping::{ObjectMap, Value};

pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("XML: {0}")]
pub struct XmlError(pub String);

#[derive(Default)]
struct Element {
    name: String,
    fields: ObjectMap,
    text: String,
}

fn add(fields: &mut ObjectMap, name: String, value: Value) {
    match fields.get_mut(name.as_str()) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = std::mem::replace(existing, Value::Null);
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            fields.insert(name.into(), value);
        }
    }
}

impl Element {
    fn open(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, XmlError> {
        let mut element = Element {
            name: start.local_name().as_ref().to_string(),
            ..Default::default()
        };
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| XmlError(e.to_string()))?;
            let key = attribute.key.local_name().as_ref().to_string();
            // Namespace declarations are syntax, not data.
            if attribute.key.as_ref().starts_with("xmlns") {
                continue;
            }
            let value = attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| XmlError(e.to_string()))?;
            element
                .fields
                .insert(format!("@{key}").into(), Value::from(value.as_ref()));
        }
        Ok(element)
    }

    fn close(self) -> (String, Value) {
        let text = self.text.trim();
        let value = if self.fields.is_empty() {
            if text.is_empty() {
                Value::Null
            } else {
                Value::from(text)
            }
        } else {
            let mut fields = self.fields;
            if !text.is_empty() {
                fields.insert("#text".into(), Value::from(text));
            }
            Value::Object(fields)
        };
        (self.name, value)
    }
}

/// Parses a whole document into `{ <root name>: <root value> }`.
pub fn parse(document: &[u8]) -> Result<Value, XmlError> {
    let text = std::str::from_utf8(document).map_err(|e| XmlError(e.to_string()))?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError(format!("at byte {}: {e}", reader.buffer_position())))?;
        match event {
            Event::DocType(_) => {
                return Err(XmlError(
                    "documents with a DTD (<!DOCTYPE>) are refused".into(),
                ));
            }
            Event::Start(start) => {
                if stack.len() > MAX_DEPTH {
                    return Err(XmlError(format!("nested deeper than {MAX_DEPTH}")));
                }
                stack.push(Element::open(&start)?);
            }
            Event::Empty(start) => {
                let (name, value) = Element::open(&start)?.close();
                let parent = stack
                    .last_mut()
                    .expect("the document level is never popped");
                add(&mut parent.fields, name, value);
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err(XmlError("an end tag without its start".into()));
                }
                let (name, value) = stack.pop().expect("checked above").close();
                let parent = stack
                    .last_mut()
                    .expect("the document level is never popped");
                add(&mut parent.fields, name, value);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                }
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&c.xml_content(XmlVersion::Implicit1_0));
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = r.xml_content(XmlVersion::Implicit1_0);
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| {
                                XmlError(format!(
                                    "unknown entity `&{name};` (entities are not expanded)"
                                ))
                            })?
                            .to_string()
                    }
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Event::Eof => break,
            // Declarations, comments and processing instructions carry no data.
            _ => {}
        }
    }
    if stack.len() != 1 {
        return Err(XmlError("the document ends inside an element".into()));
    }
    let document = stack.pop().expect("one left");
    if document.fields.is_empty() {
        return Err(XmlError("no root element".into()));
    }
    Ok(Value::Object(document.fields))
}

/// Writes `value` as a document, the mirror of [`parse`]: `{ root: … }` is the root element; in
/// an object, `@name` fields are attributes, `#text` is text and other fields are child
/// elements (an array of values repeats the element); null is an empty element.
pub fn write(value: &Value) -> Result<Vec<u8>, XmlError> {
    let Value::Object(root) = value else {
        return Err(XmlError(
            "to write XML, the value must be an object with one field, the root element".into(),
        ));
    };
    let mut fields = root.iter();
    let (Some((name, content)), None) = (fields.next(), fields.next()) else {
        return Err(XmlError(format!(
            "to write XML, the value must have exactly one field (the root element), not {}",
            root.len()
        )));
    };
    if matches!(content, Value::Array(_)) {
        return Err(XmlError(format!(
            "to write XML, the root element `{name}` must be one element, not an array"
        )));
    }
    let mut out = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>".to_vec();
    element(&mut out, name, content, 0)?;
    Ok(out)
}

fn checked_name(name: &str) -> Result<&str, XmlError> {
    // A name, or `prefix:name`.
    let part = |p: &str| {
        p.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && p.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    let valid = match name.split_once(':') {
        Some((prefix, local)) => part(prefix) && part(local),
        None => part(name),
    };
    if valid {
        Ok(name)
    } else {
        Err(XmlError(format!("`{name}` is not an XML name")))
    }
}

/// `text` escaped for XML content or an attribute; characters XML 1.0 cannot hold are refused.
fn escaped(text: &str, attribute: bool, element: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' if attribute => out.push_str("&quot;"),
            // A parser turns these into spaces in an attribute unless written as references.
            '\t' | '\n' | '\r' if attribute => out.push_str(&format!("&#{};", c as u32)),
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {
                return Err(XmlError(format!(
                    "`{element}` holds the character U+{:04X}, which XML cannot carry",
                    c as u32
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Null => String::new(),
        other => serde_json::to_value(other)
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_default(),
    }
}

fn element(out: &mut Vec<u8>, name: &str, value: &Value, depth: usize) -> Result<(), XmlError> {
    if depth > MAX_DEPTH {
        return Err(XmlError(format!("nested deeper than {MAX_DEPTH} elements")));
    }
    if let Value::Array(items) = value {
        for item in items {
            element(out, name, item, depth)?;
        }
        return Ok(());
    }
    let name = checked_name(name)?;
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    let Value::Object(fields) = value else {
        let text = scalar_text(value);
        if text.is_empty() {
            out.extend_from_slice(b"/>");
        } else {
            out.push(b'>');
            out.extend_from_slice(escaped(&text, false, name)?.as_bytes());
            out.extend_from_slice(format!("</{name}>").as_bytes());
        }
        return Ok(());
    };
    for (key, v) in fields {
        if let Some(attribute) = key.strip_prefix('@') {
            let attribute = checked_name(attribute)?;
            let text = scalar_text(v);
            out.extend_from_slice(
                format!(" {attribute}=\"{}\"", escaped(&text, true, name)?).as_bytes(),
            );
        }
    }
    out.push(b'>');
    for (key, v) in fields {
        if key.as_str() == "#text" {
            out.extend_from_slice(escaped(&scalar_text(v), false, name)?.as_bytes());
        } else if !key.starts_with('@') {
            element(out, key, v, depth + 1)?;
        }
    }
    out.extend_from_slice(format!("</{name}>").as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn elements_attributes_repeats_and_entities() {
        let doc = br#"<?xml version="1.0"?>
            <s:Envelope xmlns:s="urn:x"><s:Body><r id="7">
              <item>a &amp; b</item><item>&#x41;</item><empty/><c><![CDATA[<raw>]]></c>
            </r></s:Body></s:Envelope>"#;
        assert_eq!(
            json(&parse(doc).unwrap()),
            serde_json::json!({"Envelope": {"Body": {"r": {
                "@id": "7", "item": ["a & b", "A"], "empty": null, "c": "<raw>"
            }}}})
        );
    }

    #[test]
    fn dtds_unknown_entities_and_depth_are_refused() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa">]><l>&a;</l>"#;
        assert!(parse(bomb).unwrap_err().0.contains("DTD"));
        assert!(
            parse(b"<l>&a;</l>")
                .unwrap_err()
                .0
                .contains("unknown entity")
        );
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(deep.as_bytes()).unwrap_err().0.contains("deeper"));
        assert!(parse(b"<a><b></a>").is_err());
    }

    #[test]
    fn written_documents_are_well_formed_or_refused() {
        let v = |j: serde_json::Value| -> Value { serde_json::from_value(j).unwrap() };
        let text = |j| String::from_utf8(write(&v(j)).unwrap()).unwrap();
        assert_eq!(
            text(serde_json::json!({"ns:r": {"@a": "x\n\"y\"", "#text": "1 < 2\n"}})),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ns:r a=\"x&#10;&quot;y&quot;\">1 &lt; 2\n</ns:r>"
        );
        let refused = |j| write(&v(j)).unwrap_err().0;
        assert!(refused(serde_json::json!({"r": [1, 2]})).contains("not an array"));
        assert!(refused(serde_json::json!({"r": "bell\u{7}"})).contains("U+0007"));
        assert!(refused(serde_json::json!({"a:": 1})).contains("not an XML name"));
        assert!(refused(serde_json::json!({"a:b:c": 1})).contains("not an XML name"));
        assert!(refused(serde_json::json!({"a": 1, "b": 2})).contains("exactly one field"));
    }
}
