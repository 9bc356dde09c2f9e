//! YAML text → a tree of [`Node`]s that remember where they came from.
//!
//! weft does not deserialize YAML straight into typed config: it first builds this tree, so that
//! every later stage (environment substitution, per-component deserialization, VRL compilation)
//! can point at `line:col` in the user's file and keep going after an error. Scalars are typed by
//! the YAML 1.2 core schema with two deliberate restrictions: only `true`/`false` are booleans
//! (no `yes`/`on`), and numbers with a leading zero stay strings (`010` is a zip code, not 8).
//! Aliases are expanded with a node budget so an alias bomb cannot exhaust memory.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Where a node starts in its file. Lines and columns are 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub line: u32,
    pub col: u32,
}

/// How a scalar was written; needed to map an offset inside its text back to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
    Collection,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub loc: Loc,
    pub style: Style,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, Kind::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node's content without positions or styles, so that a file edited elsewhere, or a
    /// value written another way, gives the same text: what hot reload compares.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut String) {
        use std::fmt::Write;
        match &self.kind {
            Kind::Null => out.push('~'),
            Kind::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Kind::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Kind::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            Kind::Str(s) => {
                let _ = write!(out, "{s:?}");
            }
            Kind::Seq(items) => {
                out.push('[');
                for item in items {
                    item.write_canonical(out);
                    out.push(',');
                }
                out.push(']');
            }
            Kind::Map(entries) => {
                out.push('{');
                for (key, value) in entries {
                    key.write_canonical(out);
                    out.push(':');
                    value.write_canonical(out);
                    out.push(',');
                }
                out.push('}');
            }
        }
    }

    /// The node written back as YAML (block style, two spaces a level), each scalar's text first
    /// given to `hide` with the key it stands under: what `hide` answers is written instead, as
    /// a string. What the dashboard shows as a flow's effective config.
    pub fn to_yaml(&self, hide: &dyn Fn(Option<&str>, &str) -> Option<String>) -> String {
        let mut out = String::new();
        self.write_yaml(None, 0, hide, &mut out);
        out
    }

    fn write_yaml(
        &self,
        key: Option<&str>,
        indent: usize,
        hide: &dyn Fn(Option<&str>, &str) -> Option<String>,
        out: &mut String,
    ) {
        let pad = " ".repeat(indent);
        match &self.kind {
            Kind::Map(entries) if !entries.is_empty() => {
                for (k, v) in entries {
                    let name = match &k.kind {
                        Kind::Str(s) => s.clone(),
                        _ => k.scalar_text(),
                    };
                    out.push_str(&pad);
                    match &k.kind {
                        // A key is one line: never a block.
                        Kind::Str(s) if s.contains('\n') => out.push_str(&quoted(s)),
                        Kind::Str(s) => out.push_str(&yaml_string(s, indent)),
                        _ => out.push_str(&name),
                    }
                    out.push(':');
                    match &v.kind {
                        Kind::Map(e) if !e.is_empty() => {
                            out.push('\n');
                            v.write_yaml(Some(&name), indent + 2, hide, out);
                        }
                        Kind::Seq(items) if !items.is_empty() => {
                            out.push('\n');
                            v.write_yaml(Some(&name), indent + 2, hide, out);
                        }
                        _ => {
                            out.push(' ');
                            v.write_yaml(Some(&name), indent + 2, hide, out);
                        }
                    }
                }
            }
            Kind::Seq(items) if !items.is_empty() => {
                for item in items {
                    let mut text = String::new();
                    match &item.kind {
                        Kind::Map(e) if !e.is_empty() => {
                            item.write_yaml(key, indent + 2, hide, &mut text);
                            // The first entry goes on the dash's line.
                            out.push_str(&pad);
                            out.push_str("- ");
                            out.push_str(&text[indent + 2..]);
                        }
                        Kind::Seq(i) if !i.is_empty() => {
                            item.write_yaml(key, indent + 2, hide, &mut text);
                            out.push_str(&pad);
                            out.push_str("-\n");
                            out.push_str(&text);
                        }
                        _ => {
                            item.write_yaml(key, indent + 2, hide, &mut text);
                            out.push_str(&pad);
                            out.push_str("- ");
                            out.push_str(&text);
                        }
                    }
                }
            }
            Kind::Map(_) => out.push_str("{}\n"),
            Kind::Seq(_) => out.push_str("[]\n"),
            Kind::Str(s) => {
                let text = hide(key, s).unwrap_or_else(|| s.clone());
                out.push_str(&yaml_string(&text, indent));
                out.push('\n');
            }
            _ => {
                let text = self.scalar_text();
                match hide(key, &text) {
                    Some(hidden) => out.push_str(&yaml_string(&hidden, indent)),
                    None => out.push_str(&text),
                }
                out.push('\n');
            }
        }
    }

    /// A scalar that is not a string, as YAML writes it.
    fn scalar_text(&self) -> String {
        match &self.kind {
            Kind::Null => "null".into(),
            Kind::Bool(b) => b.to_string(),
            Kind::Int(i) => i.to_string(),
            Kind::Float(f) if f.is_nan() => ".nan".into(),
            Kind::Float(f) if f.is_infinite() => if *f > 0.0 { ".inf" } else { "-.inf" }.into(),
            Kind::Float(f) => format!("{f:?}"),
            Kind::Str(s) => s.clone(),
            Kind::Seq(_) | Kind::Map(_) => String::new(),
        }
    }

    /// Short description of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

#[derive(Debug)]
pub struct SyntaxError {
    pub loc: Loc,
    pub message: String,
}

/// The most nodes a document may expand to (aliases included).
const MAX_NODES: usize = 1_000_000;

/// Parses one YAML document. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: Vec::new(),
        root: None,
        nodes: 0,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            loc: Loc {
                line: e.marker().line() as u32,
                col: e.marker().col() as u32 + 1,
            },
            message: e.info().to_string(),
        })?;
        builder.event(event, span)?;
    }
    Ok(builder.root.unwrap_or(Node {
        kind: Kind::Null,
        loc: Loc { line: 1, col: 1 },
        style: Style::Plain,
    }))
}

struct Frame {
    node: Node,
    anchor: usize,
    pending_key: Option<Node>,
}

struct Builder {
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let loc = Loc {
            line: span.start.line() as u32,
            col: span.start.col() as u32 + 1,
        };
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let quoted_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let (kind, style) = match style {
                    ScalarStyle::Plain if !quoted_tag => (resolve_plain(&text), Style::Plain),
                    ScalarStyle::Plain => (Kind::Str(text.into_owned()), Style::Plain),
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                        (Kind::Str(text.into_owned()), Style::Quoted)
                    }
                    _ => (Kind::Str(text.into_owned()), Style::Block),
                };
                self.push_value(Node { kind, loc, style }, anchor, loc)?;
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame {
                node: Node {
                    kind: Kind::Seq(Vec::new()),
                    loc,
                    style: Style::Collection,
                },
                anchor,
                pending_key: None,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame {
                node: Node {
                    kind: Kind::Map(Vec::new()),
                    loc,
                    style: Style::Collection,
                },
                anchor,
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self.stack.pop().expect("parser emits balanced events");
                self.push_value(frame.node, frame.anchor, loc)?;
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| SyntaxError {
                        loc,
                        message: "alias to an unknown anchor".into(),
                    })?;
                self.nodes += count(&node);
                self.push_value(node, 0, loc)?;
            }
            Event::DocumentStart(_) if self.root.is_some() => {
                return Err(SyntaxError {
                    loc,
                    message: "a config file holds one YAML document; found a second `---`".into(),
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn push_value(&mut self, node: Node, anchor: usize, loc: Loc) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                loc,
                message: format!("document expands to more than {MAX_NODES} nodes"),
            });
        }
        if anchor != 0 {
            self.anchors.push((anchor, node.clone()));
        }
        let Some(top) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut top.node.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(entries) => match top.pending_key.take() {
                None => top.pending_key = Some(node),
                Some(key) => {
                    if let Kind::Str(k) = &key.kind
                        && entries
                            .iter()
                            .any(|(e, _)| matches!(&e.kind, Kind::Str(s) if s == k))
                    {
                        return Err(SyntaxError {
                            loc: key.loc,
                            message: format!("duplicate key `{k}`"),
                        });
                    }
                    entries.push((key, node));
                }
            },
            _ => unreachable!("only collections are pushed on the stack"),
        }
        Ok(())
    }
}

fn count(node: &Node) -> usize {
    match &node.kind {
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// `text` as a YAML string: plain where it reads back as the same string, a literal block for
/// several lines (a VRL program), else double-quoted.
fn yaml_string(text: &str, indent: usize) -> String {
    let plain = !text.is_empty()
        && matches!(resolve_plain(text), Kind::Str(_))
        && !text.starts_with(|c: char| c.is_whitespace() || "-?:,[]{}#&*!|>'\"%@`".contains(c))
        && !text.ends_with(char::is_whitespace)
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with(':')
        && !text.chars().any(char::is_control);
    if plain {
        return text.to_string();
    }
    let lines_fit = text.contains('\n')
        && !text.starts_with([' ', '\n'])
        && !text.ends_with("\n\n")
        && !text.chars().any(|c| c.is_control() && c != '\n');
    if lines_fit {
        let pad = " ".repeat(indent.max(2));
        let body = text.trim_end_matches('\n');
        let chomp = if text.ends_with('\n') { "" } else { "-" };
        let mut out = format!("|{chomp}");
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&pad);
                out.push_str(line);
            }
        }
        return out;
    }
    quoted(text)
}

/// `text` double-quoted, every character YAML does not print escaped (JSON's escapes, and
/// DEL and the C1 controls, which JSON leaves raw).
fn quoted(text: &str) -> String {
    let json = serde_json::to_string(text).unwrap_or_default();
    if !json
        .chars()
        .any(|c| c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c))
    {
        return json;
    }
    json.chars()
        .map(|c| match c {
            '\u{7f}' | '\u{80}'..='\u{9f}' => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// Types a plain scalar by the YAML 1.2 core schema (restricted, see the module docs).
pub fn resolve_plain(text: &str) -> Kind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | "+.inf" | ".Inf" | "+.Inf" => return Kind::Float(f64::INFINITY),
        "-.inf" | "-.Inf" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if digits.len() > 1 && digits.starts_with('0') {
            return Kind::Str(text.to_string());
        }
        if let Ok(i) = text.parse::<i64>() {
            return Kind::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Kind::Int(i);
    }
    let looks_float = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return Kind::Float(f);
    }
    Kind::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn written_back_as_yaml_it_reads_the_same_and_hides_what_it_is_told() {
        let text = r##"
name: "orders: EU"
input:
  http_server: { address: "127.0.0.1:8080", path: /orders }
pipeline:
  - map: |
      .total = .price * 2
      .note = "a: b"
  - switch:
      - check: .kind == "refund"
        processors: [{ filter: "false" }]
      - processors: []
output:
  http_client:
    url: https://api.example.com/x?a=1
    headers: { Authorization: "Bearer abc", X-Count: "010" }
    retry: { max_attempts: 3, jitter: 0.5, on: [500, 502], dead: ~, empty: {}, zero: "" }
    tags: [[1, 2], "- x", "#y", "yes", " lead", "tab\there", "del\u007f"]
    codes: { 200: ok, ~: none }
"##;
        let node = super::parse(text).unwrap();
        let plain = node.to_yaml(&|_, _| None);
        let again = super::parse(&plain).unwrap_or_else(|e| panic!("{e:?}\n{plain}"));
        assert_eq!(again.canonical(), node.canonical(), "{plain}");
        assert!(
            plain.contains("  - map: |\n      .total = .price * 2\n"),
            "{plain}"
        );
        let hidden =
            node.to_yaml(&|key, _| (key == Some("Authorization")).then(|| "[redacted]".into()));
        assert!(hidden.contains("Authorization: \"[redacted]\""), "{hidden}");
        assert!(!hidden.contains("Bearer abc"), "{hidden}");
    }

    use super::*;

    #[test]
    fn scalars_follow_the_restricted_core_schema() {
        assert!(matches!(resolve_plain("yes"), Kind::Str(_)));
        assert!(matches!(resolve_plain("true"), Kind::Bool(true)));
        assert!(matches!(resolve_plain("010"), Kind::Str(_)));
        assert!(matches!(resolve_plain("10"), Kind::Int(10)));
        assert!(matches!(resolve_plain("-3"), Kind::Int(-3)));
        assert!(matches!(resolve_plain("1.5"), Kind::Float(_)));
        assert!(matches!(resolve_plain("127.0.0.1:80"), Kind::Str(_)));
        assert!(matches!(resolve_plain("1.2.3"), Kind::Str(_)));
        assert!(matches!(resolve_plain("~"), Kind::Null));
    }

    #[test]
    fn locations_are_one_based() {
        let doc = parse("a:\n  bb: 1\n  c: |\n    x\n").unwrap();
        let bb = doc.get("a").unwrap().get("bb").unwrap();
        assert_eq!(bb.loc, Loc { line: 2, col: 7 });
        let a = doc.get("a").unwrap();
        let Kind::Map(entries) = &a.kind else {
            panic!()
        };
        assert_eq!(entries[0].0.loc, Loc { line: 2, col: 3 });
        assert_eq!(doc.get("a").unwrap().get("c").unwrap().style, Style::Block);
    }

    #[test]
    fn duplicate_keys_and_second_documents_are_errors() {
        assert!(
            parse("a: 1\na: 2\n")
                .unwrap_err()
                .message
                .contains("duplicate")
        );
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn aliases_expand_within_budget() {
        let doc = parse("x: &a {k: 1}\ny: *a\n").unwrap();
        assert!(matches!(
            doc.get("y").unwrap().get("k").unwrap().kind,
            Kind::Int(1)
        ));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(parse(&bomb).unwrap_err().message.contains("expands"));
    }
}
