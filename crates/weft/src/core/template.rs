//! Strings with per-message parts: `"http://api/users/{{ .user_id }}"`.
//!
//! Each `{{ … }}` is a VRL expression compiled once at load and evaluated, read-only, per message.
//! A template without placeholders costs nothing per message. In URLs an interpolated value is
//! percent-encoded (so `a/b` or `?x` in data cannot change the path or query), except when the
//! placeholder opens the URL: `{{ .callback_url }}` takes a whole URL from the message.

use super::mapping::{Diagnostic, Mapping, MappingError, Value, to_text};

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Expr(Box<Mapping>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    None,
    Url,
}

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
    escape: Escape,
}

impl Template {
    pub fn parse(source: &str, escape: Escape) -> Result<Template, Vec<Diagnostic>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let Some(close) = rest[open + 2..].find("}}") else {
                errors.push(Diagnostic {
                    message: "`{{` without a closing `}}`".into(),
                    span: Some(offset + open..source.len()),
                });
                return Err(errors);
            };
            let expr_start = open + 2;
            let expr = &rest[expr_start..expr_start + close];
            match Mapping::compile(expr) {
                Ok(m) => parts.push(Part::Expr(Box::new(m))),
                Err(diags) => errors.extend(diags.into_iter().map(|d| {
                    Diagnostic {
                        message: d.message,
                        span: d
                            .span
                            .map(|s| s.start + offset + expr_start..s.end + offset + expr_start),
                    }
                })),
            }
            let consumed = expr_start + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if errors.is_empty() {
            Ok(Template { parts, escape })
        } else {
            Err(errors)
        }
    }

    pub fn reads_metadata(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Expr(m) if m.reads_metadata()))
    }

    /// The text when the template has no placeholders.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    pub fn render(&self, value: &Value, metadata: &Value) -> Result<String, MappingError> {
        if let Some(s) = self.as_static() {
            return Ok(s.to_string());
        }
        let mut out = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Expr(m) => {
                    let text = to_text(&m.eval(value, metadata)?);
                    if self.escape == Escape::Url && i > 0 {
                        percent_encode(&text, &mut out);
                    } else {
                        out.push_str(&text);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::mapping::empty_object;

    fn value(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn renders_and_escapes() {
        let t = Template::parse("http://h/users/{{ .id }}?q={{ .q }}", Escape::Url).unwrap();
        let v = value(r#"{"id": 7, "q": "a b/c"}"#);
        assert_eq!(
            t.render(&v, &empty_object()).unwrap(),
            "http://h/users/7?q=a%20b%2Fc"
        );
        let whole = Template::parse("{{ .u }}/x", Escape::Url).unwrap();
        let v = value(r#"{"u": "http://h:1"}"#);
        assert_eq!(whole.render(&v, &empty_object()).unwrap(), "http://h:1/x");
        assert_eq!(
            Template::parse("plain", Escape::None).unwrap().as_static(),
            Some("plain")
        );
    }

    #[test]
    fn errors_point_into_the_template() {
        let errs = Template::parse("ab{{ foo( }}", Escape::None).unwrap_err();
        assert!(errs[0].span.as_ref().unwrap().start >= 4, "{errs:?}");
        assert!(Template::parse("x{{ .a", Escape::None).is_err());
    }
}
