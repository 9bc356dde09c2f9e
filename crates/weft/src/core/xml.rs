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
}
