//! The reference pages in `docs/components/`: one per input, processor and output, made from the
//! JSON Schema of its config struct ([`super::schema::generate`]: fields, types, defaults) and
//! the `//!` doc at the top of its file (the description and its ```yaml example), plus an index.
//! Only tests use this: `the_committed_component_docs_are_current` fails when a committed page
//! is stale, missing or extra, and `WEFT_BLESS=1 cargo test -p weft --lib component_docs`
//! writes them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

const REGENERATE: &str = "WEFT_BLESS=1 cargo test -p weft --lib component_docs";

/// One registry: its schema definition, its folder (under `src/` and `docs/components/`).
struct Kind {
    registry: &'static str,
    folder: &'static str,
    noun: &'static str,
    title: &'static str,
}

const KINDS: [Kind; 3] = [
    Kind {
        registry: "InputConfig",
        folder: "inputs",
        noun: "input",
        title: "Inputs",
    },
    Kind {
        registry: "ProcessorConfig",
        folder: "processors",
        noun: "processor",
        title: "Processors",
    },
    Kind {
        registry: "OutputConfig",
        folder: "outputs",
        noun: "output",
        title: "Outputs",
    },
];

/// Components whose file is not named after them: (folder, name, file stem).
const FILES: &[(&str, &str, &str)] = &[("processors", "try", "catch")];

/// One component, as its page shows it.
struct Component {
    kind: &'static Kind,
    name: String,
    /// Its file, from the repository root.
    source: String,
    description: String,
    example: String,
    /// What the doc says after the example, about it.
    after_example: String,
    /// The schema of its settings (usually a `$ref`).
    settings: Value,
}

impl Component {
    /// The page's path under `docs/components/`.
    fn page(&self) -> String {
        format!("{}/{}.md", self.kind.folder, self.name)
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every component of every registry, in registry order, read from the schema and the sources.
fn components(schema: &Value) -> Result<Vec<Component>, String> {
    let defs = &schema["$defs"];
    let mut components = Vec::new();
    for kind in &KINDS {
        let variants = defs[kind.registry]["oneOf"]
            .as_array()
            .ok_or_else(|| format!("the schema has no `{}` variants", kind.registry))?;
        for variant in variants {
            let Some((name, settings)) = variant["properties"]
                .as_object()
                .and_then(|p| p.iter().next())
            else {
                return Err(format!("a `{}` variant is not a mapping", kind.registry));
            };
            let stem = FILES
                .iter()
                .find(|(folder, n, _)| *folder == kind.folder && n == name)
                .map_or(name.as_str(), |(_, _, stem)| stem);
            let source = [
                format!("crates/weft/src/{}/{stem}.rs", kind.folder),
                format!("crates/weft/src/{}/{stem}/mod.rs", kind.folder),
            ]
            .into_iter()
            .find(|path| root().join(path).is_file())
            .ok_or_else(|| format!("no source file for the {} `{name}`", kind.noun))?;
            let text = std::fs::read_to_string(root().join(&source)).map_err(|e| e.to_string())?;
            let (mut description, example, after_example) = split_example(&module_doc(&text))
                .ok_or_else(|| format!("{source}: its `//!` doc has no ```yaml example"))?;
            if description.is_empty() {
                description = described(variant).unwrap_or_default();
            }
            components.push(Component {
                kind,
                name: name.clone(),
                source,
                description,
                example,
                after_example,
                settings: settings.clone(),
            });
        }
    }
    Ok(components)
}

/// The `//!` lines at the top of a file, without their markers.
fn module_doc(text: &str) -> String {
    text.lines()
        .map_while(|line| line.strip_prefix("//!"))
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A module doc's first ```yaml block, and the text before and after it (rustdoc links made
/// plain).
fn split_example(doc: &str) -> Option<(String, String, String)> {
    let lines: Vec<&str> = doc.lines().collect();
    let start = lines.iter().position(|l| l.trim() == "```yaml")?;
    let end = start + 1 + lines[start + 1..].iter().position(|l| l.trim() == "```")?;
    let example = lines[start + 1..end].join("\n") + "\n";
    Some((text(&lines[..start]), example, text(&lines[end + 1..])))
}

fn text(lines: &[&str]) -> String {
    let mut text = String::new();
    for line in lines {
        if line.is_empty() && (text.is_empty() || text.ends_with("\n\n")) {
            continue;
        }
        text.push_str(&plain_links(line));
        text.push('\n');
    }
    text.trim_end().to_string()
}

/// Rustdoc's "[`item`]" links as plain code: they have no target outside rustdoc.
fn plain_links(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("[`") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.find("`]") {
            Some(close) if !after[close + 2..].starts_with(['(', '[']) => {
                out.push_str(&after[..close + 1]);
                rest = &after[close + 2..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out + rest
}

/// The first sentence of a description, without its "`name`: " lead.
fn summary(description: &str) -> String {
    let paragraph = description
        .split("\n\n")
        .next()
        .unwrap_or("")
        .replace('\n', " ");
    let mut text = paragraph.as_str();
    if text.starts_with('`')
        && let Some(colon) = text.find(": ").filter(|&c| c < 60)
    {
        text = &text[colon + 2..];
    }
    let mut end = text.len();
    let mut from = 0;
    while let Some(dot) = text[from..].find(". ") {
        let at = from + dot;
        if !(text[..at].ends_with("e.g") || text[..at].ends_with("i.e")) {
            end = at;
            break;
        }
        from = at + 2;
    }
    let sentence = text[..end].trim_end_matches('.');
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

/// The pages, by path under `docs/components/`.
fn generate(schema: &Value) -> Result<BTreeMap<String, String>, String> {
    let components = components(schema)?;
    let defs = schema["$defs"]
        .as_object()
        .ok_or("the schema has no `$defs`")?;
    let mut pages = BTreeMap::new();
    let mut value_types = BTreeSet::new();
    for component in &components {
        let mut page = Page::new(defs, &component.name);
        let text = page.render(component);
        value_types.append(&mut page.value_types);
        pages.insert(component.page(), text);
    }
    pages.insert(
        "README.md".to_string(),
        index(&components, defs, &value_types),
    );
    Ok(pages)
}

fn generated_from(source: &str) -> String {
    format!(
        "<!-- Generated from {source} and the config structs by `{REGENERATE}`. Edit those, not this page. -->\n\n"
    )
}

fn index(
    components: &[Component],
    defs: &Map<String, Value>,
    value_types: &BTreeSet<String>,
) -> String {
    let mut out = generated_from("the components' doc comments");
    out.push_str("# Components\n\n");
    out.push_str(
        "Every input, processor and output weft knows, with its settings, their defaults and an \
         example. A flow is an `input`, a `pipeline` of processors and one or more outputs (see \
         [`../flows.md`](../flows.md)); the JSON Schema of a whole file is \
         [`../weft.schema.json`](../weft.schema.json).\n",
    );
    for kind in &KINDS {
        let _ = write!(
            out,
            "\n## {}\n\n| {} | What it does |\n|---|---|\n",
            kind.title,
            capitalized(kind.noun)
        );
        for c in components.iter().filter(|c| c.kind.folder == kind.folder) {
            let _ = writeln!(
                out,
                "| [`{}`]({}) | {} |",
                c.name,
                c.page(),
                cell(&summary(&c.description))
            );
        }
    }
    if !value_types.is_empty() {
        out.push_str("\n## Value types\n\nTypes that settings of many components share.\n");
        for name in value_types {
            let def = &defs[name];
            let _ = write!(out, "\n### {name}\n\n");
            if let Some(description) = described(def) {
                let _ = writeln!(out, "{description}");
            }
            if let Some(examples) = def["examples"].as_array() {
                let examples: Vec<String> = examples.iter().map(|e| code(&inline(e))).collect();
                let _ = writeln!(out, "\nFor example {}.", examples.join(", "));
            }
        }
    }
    out
}

/// One page being written: the definitions it links to are explained below its settings.
struct Page<'a> {
    defs: &'a Map<String, Value>,
    name: &'a str,
    queued: VecDeque<String>,
    seen: BTreeSet<String>,
    /// Scalar types the page names, explained once in the index.
    value_types: BTreeSet<String>,
}

impl<'a> Page<'a> {
    fn new(defs: &'a Map<String, Value>, name: &'a str) -> Page<'a> {
        Page {
            defs,
            name,
            queued: VecDeque::new(),
            seen: BTreeSet::new(),
            value_types: BTreeSet::new(),
        }
    }

    fn render(&mut self, c: &Component) -> String {
        let mut out = generated_from(&c.source);
        let _ = write!(
            out,
            "# `{}`\n\n{} {} · source: [`{}`](../../../{}) · [all components](../README.md)\n\n",
            c.name,
            article(c.kind.noun),
            c.kind.noun,
            c.source.trim_start_matches("crates/weft/src/"),
            c.source,
        );
        let _ = write!(out, "{}\n\n", c.description);
        let _ = write!(out, "## Example\n\n```yaml\n{}```\n\n", c.example);
        if !c.after_example.is_empty() {
            let _ = write!(out, "{}\n\n", c.after_example);
        }
        out.push_str("## Settings\n\n");
        self.settings(&mut out, &c.settings);
        while let Some(name) = self.queued.pop_front() {
            let def = &self.defs[&name];
            let _ = write!(out, "\n### {name}\n\n");
            if let Some(description) = described(def) {
                let _ = write!(out, "{description}\n\n");
            }
            self.body(&mut out, def);
        }
        out
    }

    /// The component's own settings: a table, or what its value is.
    fn settings(&mut self, out: &mut String, schema: &Value) {
        let mut def = schema;
        while let Some(name) = reference(def) {
            def = &self.defs[name];
        }
        if let Some(description) = described(def)
            && def.get("properties").is_some()
        {
            let _ = write!(out, "{description}\n\n");
        }
        // The short form (`split: .items`): a string, or the settings as a mapping.
        if let Some(alternatives) = def["anyOf"].as_array()
            && let [short, full] = &alternatives[..]
            && short["type"] == "string"
            && let Some(name) = reference(full)
        {
            let full = &self.defs[name];
            let _ = write!(
                out,
                "{}\n\n",
                described(full)
                    .as_deref()
                    .unwrap_or("A string (the short form), or these settings.")
            );
            self.table(out, full);
            return;
        }
        if def["type"] == "object" && def.get("oneOf").is_none() {
            if def["properties"].as_object().is_none_or(Map::is_empty) {
                let _ = writeln!(out, "None: write `{}: {{}}`.", self.name);
            } else {
                self.table(out, def);
            }
            return;
        }
        let _ = write!(out, "**Value:** {}", self.type_of(def));
        if let Some(description) = described(def) {
            let _ = write!(out, ". {description}");
        }
        out.push('\n');
    }

    /// What a definition is: fields, alternatives or a value.
    fn body(&mut self, out: &mut String, def: &Value) {
        if def.get("properties").is_some() || def["type"] == "object" {
            if def["properties"].as_object().is_none_or(Map::is_empty) {
                out.push_str("No settings: `{}`.\n");
            } else {
                self.table(out, def);
            }
        } else if let Some(alternatives) = def["oneOf"].as_array().or(def["anyOf"].as_array()) {
            out.push_str("One of:\n\n");
            for alternative in alternatives {
                let line = self.alternative(alternative);
                let _ = writeln!(out, "- {line}");
            }
        } else {
            let _ = writeln!(out, "**Value:** {}.", self.type_of(def));
        }
    }

    fn alternative(&mut self, alt: &Value) -> String {
        let description = described(alt);
        let mut line = match (alt.get("const"), alt["properties"].as_object()) {
            (Some(value), _) => code(&inline(value)),
            (None, Some(properties)) if properties.len() == 1 => {
                let (key, schema) = properties.iter().next().expect("one property");
                let what = self.type_of(schema);
                return match description.or_else(|| described(schema)) {
                    Some(d) => format!("`{key}`: {what}. {d}"),
                    None => format!("`{key}`: {what}"),
                };
            }
            _ => self.type_of(alt),
        };
        if let Some(d) = description {
            let _ = write!(line, ": {d}");
        }
        line
    }

    fn table(&mut self, out: &mut String, def: &Value) {
        let empty = Map::new();
        let properties = def["properties"].as_object().unwrap_or(&empty);
        let required: BTreeSet<&str> = def["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // Required fields first, then the rest, each by name.
        let mut names: Vec<&String> = properties.keys().collect();
        names.sort_by_key(|n| (!required.contains(n.as_str()), n.as_str()));
        out.push_str("| Field | Type | Default | Required | Description |\n");
        out.push_str("|---|---|---|---|---|\n");
        for name in names {
            let schema = &properties[name];
            let default = match schema.get("default") {
                None | Some(Value::Null) => String::new(),
                Some(value) => code(&inline(value)),
            };
            let what = self.type_of(schema);
            let _ = writeln!(
                out,
                "| `{name}` | {} | {} | {} | {} |",
                cell(&what),
                cell(&default),
                if required.contains(name.as_str()) {
                    "yes"
                } else {
                    "no"
                },
                cell(&self.field_description(schema)),
            );
        }
    }

    /// A field's own description, else the first sentence of the type it names (`retry:`
    /// reads as what a `RetryConfig` is, without each output saying it again).
    fn field_description(&self, schema: &Value) -> String {
        if let Some(own) = described(schema) {
            return own;
        }
        let named = reference(schema).or_else(|| {
            schema["anyOf"]
                .as_array()?
                .iter()
                .find_map(|alternative| reference(alternative))
        });
        named
            .and_then(|name| described(&self.defs[name]))
            .map(|d| first_sentence(&d))
            .unwrap_or_default()
    }

    /// A schema as a readable type; definitions it names are queued for explaining.
    fn type_of(&mut self, schema: &Value) -> String {
        if let Some(name) = reference(schema) {
            return self.link(name);
        }
        if let Some(value) = schema.get("const") {
            return code(&inline(value));
        }
        if let Some(values) = schema["enum"].as_array() {
            return one_of(values.iter().filter(|v| !v.is_null()));
        }
        if let Some(alternatives) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            let alternatives: Vec<&Value> = alternatives
                .iter()
                .filter(|a| a["type"] != "null")
                .collect();
            if alternatives.iter().all(|a| a.get("const").is_some()) {
                return one_of(alternatives.iter().map(|a| &a["const"]));
            }
            let types: Vec<String> = alternatives.iter().map(|a| self.type_of(a)).collect();
            return types.join(" or ");
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let types: Vec<String> = types
            .into_iter()
            .filter(|t| *t != "null")
            .map(|t| match t {
                "array" => match schema.get("items") {
                    Some(items) => format!("list of {}", self.type_of(items)),
                    None => "list".to_string(),
                },
                "object" => match schema.get("additionalProperties") {
                    Some(values @ Value::Object(_)) => format!("map of {}", self.type_of(values)),
                    _ => "object".to_string(),
                },
                other => other.to_string(),
            })
            .collect();
        if types.is_empty() {
            "any".to_string()
        } else {
            types.join(" or ")
        }
    }

    /// A named definition: a link to the index for registries and value types, the listing
    /// itself for a bare enum, else a link to its section on this page.
    fn link(&mut self, name: &str) -> String {
        if let Some(kind) = KINDS.iter().find(|k| k.registry == name) {
            return format!("[{}](../README.md#{})", kind.noun, kind.folder);
        }
        let def = &self.defs[name];
        if let Some(values) = def["enum"].as_array() {
            return one_of(values.iter());
        }
        let scalar = def.get("properties").is_none()
            && def.get("oneOf").is_none()
            && def.get("anyOf").is_none()
            && !matches!(def["type"].as_str(), Some("object" | "array"));
        if scalar {
            self.value_types.insert(name.to_string());
            return format!("[{name}](../README.md#{})", name.to_lowercase());
        }
        // An untagged choice of plain values (`OneOrMany`) reads best as what it takes.
        if let Some(alternatives) = def["anyOf"].as_array()
            && alternatives.iter().all(|a| a.get("properties").is_none())
        {
            return self.type_of(def);
        }
        if self.seen.insert(name.to_string()) {
            self.queued.push_back(name.to_string());
        }
        format!("[{name}](#{})", name.to_lowercase())
    }
}

/// Up to the first full stop that ends a sentence.
fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(end) => text[..=end].to_string(),
        None => text.to_string(),
    }
}

/// A schema's description, rustdoc links made plain.
fn described(schema: &Value) -> Option<String> {
    schema["description"]
        .as_str()
        .map(|d| text(&d.lines().collect::<Vec<_>>()))
}

fn reference(schema: &Value) -> Option<&str> {
    schema["$ref"].as_str()?.strip_prefix("#/$defs/")
}

fn one_of<'v>(values: impl Iterator<Item = &'v Value>) -> String {
    let values: Vec<String> = values.map(|v| code(&inline(v))).collect();
    match values.len() {
        1 => values[0].clone(),
        _ => format!("one of {}", values.join(", ")),
    }
}

/// A value as YAML would be written inline: `30s`, `[a, b]`, `{ max_attempts: 3 }`.
fn inline(value: &Value) -> String {
    match value {
        Value::String(s) if plain(s) => s.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) if map.is_empty() => "{}".to_string(),
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", inline(&Value::String(k.clone())), inline(v)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
        other => other.to_string(),
    }
}

/// Whether a string can be written unquoted in YAML's flow style and stay a string.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.trim() == s
        && !s.contains([
            ',', '[', ']', '{', '}', ':', '#', '"', '\'', '\n', '&', '*', '!', '|', '>', '%', '@',
            '`',
        ])
        && !s.starts_with(['-', '?'])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "~" | "yes" | "no" | "on" | "off"
        )
        && s.parse::<f64>().is_err()
}

/// Code in Markdown, with enough backticks for what it holds.
fn code(text: &str) -> String {
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// Text for a table cell: one line, `|` escaped.
fn cell(text: &str) -> String {
    text.replace("\n\n", "<br>")
        .replace('\n', " ")
        .replace('|', "\\|")
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "An"
    } else {
        "A"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{env, yaml};

    fn schema() -> Value {
        serde_json::from_str(&super::super::schema::generate()).expect("the schema is JSON")
    }

    fn pages() -> BTreeMap<String, String> {
        generate(&schema()).unwrap_or_else(|e| panic!("cannot generate the component docs: {e}"))
    }

    /// Every file under `dir`, by path relative to it.
    fn committed(dir: &Path, under: &str, into: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir.join(under)) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = format!("{under}{}", entry.file_name().to_string_lossy());
            if entry.file_type().unwrap().is_dir() {
                committed(dir, &format!("{path}/"), into);
            } else {
                into.insert(path);
            }
        }
    }

    #[test]
    fn every_setting_is_described() {
        let mut undescribed = Vec::new();
        for (path, text) in &pages() {
            let mut section = "Settings";
            for line in text.lines() {
                if let Some(heading) = line.strip_prefix("### ") {
                    section = heading;
                }
                if let Some(row) = line.strip_prefix("| `") {
                    let description = row.trim_end_matches('|').rsplit('|').next().unwrap();
                    if description.trim().is_empty() {
                        let field = row.split('`').next().unwrap();
                        undescribed.push(format!("{path}: {section}: `{field}`"));
                    }
                }
            }
        }
        assert!(
            undescribed.is_empty(),
            "settings without a description (a `///` on the field or its type):\n{}",
            undescribed.join("\n")
        );
    }

    #[test]
    fn the_committed_component_docs_are_current() {
        let dir = root().join("docs/components");
        let pages = pages();
        let mut on_disk = BTreeSet::new();
        committed(&dir, "", &mut on_disk);
        if std::env::var_os("WEFT_BLESS").is_some() {
            for extra in on_disk.iter().filter(|p| !pages.contains_key(*p)) {
                std::fs::remove_file(dir.join(extra)).unwrap();
            }
            for (path, text) in &pages {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            return;
        }
        let mut problems = Vec::new();
        for (path, text) in &pages {
            match std::fs::read_to_string(dir.join(path)) {
                Ok(current) if current == *text => {}
                Ok(_) => problems.push(format!("docs/components/{path} is stale")),
                Err(_) => problems.push(format!("docs/components/{path} is missing")),
            }
        }
        for extra in on_disk.iter().filter(|p| !pages.contains_key(*p)) {
            problems.push(format!("docs/components/{extra} is not a component's page"));
        }
        assert!(
            problems.is_empty(),
            "{}\nregenerate with `{REGENERATE}`",
            problems.join("\n")
        );
    }

    /// The resources the examples name (`auth: crm`, `database: crm`…), so each loads as written.
    const RESOURCES: &str = r#"{
        "auth": { "crm": { "bearer": "token" }, "shop": { "bearer": "token" } },
        "rate_limits": { "crm": { "requests": 10, "per": "1s" } },
        "circuit_breakers": { "crm": {} },
        "sql": { "crm": { "url": "postgres://weft@127.0.0.1/crm" } }
    }"#;

    /// An example as a whole file: a fragment (`input:`, `pipeline:`, `output:`…) becomes a flow,
    /// given a `stdin` input and a `drop` output where it has none.
    fn as_file(example: &str) -> Value {
        let mut node = yaml::parse(example).expect("the example parses as YAML");
        let _ = env::substitute(&mut node, &|_| Some("example".to_string()));
        let Value::Object(mut top) =
            crate::config::de::from_node(&node).expect("YAML maps to JSON")
        else {
            panic!("the example is not a mapping");
        };
        if !top.contains_key("flows") {
            let flow_keys = schema()["$defs"]["Flow"]["properties"]
                .as_object()
                .expect("the schema describes a flow")
                .clone();
            let flow: Map<String, Value> = flow_keys
                .keys()
                .filter_map(|k| top.remove(k).map(|v| (k.clone(), v)))
                .collect();
            top.insert(
                "flows".into(),
                Value::Object(Map::from_iter([("example".into(), Value::Object(flow))])),
            );
        }
        for flow in top["flows"].as_object_mut().unwrap().values_mut() {
            let flow = flow.as_object_mut().unwrap();
            flow.entry("input")
                .or_insert(serde_json::json!({ "stdin": {} }));
            if !flow.contains_key("outputs") {
                flow.entry("output")
                    .or_insert(serde_json::json!({ "drop": {} }));
            }
        }
        let resources = top
            .entry("resources")
            .or_insert(Value::Object(Map::new()))
            .as_object_mut()
            .unwrap();
        let stubs: Map<String, Value> = serde_json::from_str(RESOURCES).unwrap();
        for (kind, named) in stubs {
            let into = resources
                .entry(kind)
                .or_insert(Value::Object(Map::new()))
                .as_object_mut()
                .unwrap();
            for (name, value) in named.as_object().unwrap() {
                into.entry(name.clone()).or_insert(value.clone());
            }
        }
        Value::Object(top)
    }

    /// What an example needs from outside that a test does not have: a file it names.
    fn needs_a_file(error: &crate::config::ConfigError) -> bool {
        ["spec", "client.ca_file", "schema_file"].contains(&error.field.as_str())
            && (error.message.contains("No such file") || error.message.contains("not found"))
    }

    #[test]
    fn every_example_is_a_valid_flow() {
        let schema = schema();
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let mut problems = Vec::new();
        let components = components(&schema).unwrap();
        assert!(components.len() > 40);
        for c in &components {
            let file = as_file(&c.example);
            for error in validator.iter_errors(&file) {
                problems.push(format!(
                    "{} `{}`: {}: {error}",
                    c.kind.noun,
                    c.name,
                    error.instance_path()
                ));
            }
            let text = serde_json::to_string_pretty(&file).unwrap();
            let lookup = |_: &str| Some("example".to_string());
            let shared = crate::clients::Shared::default();
            if let Err(errors) = crate::load::load_str(&c.name, &text, &lookup, &shared) {
                for error in errors.iter().filter(|e| !needs_a_file(e)) {
                    problems.push(format!("{} `{}`: {error}", c.kind.noun, c.name));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn descriptions_lose_their_rustdoc_links_and_keep_the_rest() {
        assert_eq!(
            plain_links("see [`auth`] and [`x`](y), [a] b"),
            "see `auth` and [`x`](y), [a] b"
        );
        assert_eq!(
            summary("`delay`: holds each message, e.g. for rate. More.\nNext"),
            "Holds each message, e.g. for rate."
        );
        let (before, example, after) =
            split_example("Intro.\n\n\nMore.\n\n```yaml\na: 1\n```\n\nAfter.").unwrap();
        assert_eq!(
            (before.as_str(), example.as_str(), after.as_str()),
            ("Intro.\n\nMore.", "a: 1\n", "After.")
        );
    }

    #[test]
    fn defaults_read_as_yaml() {
        let value = serde_json::json!({ "max_attempts": 3, "codes": ["a b", "1", "", "no"] });
        assert_eq!(
            inline(&value),
            r#"{ codes: [a b, "1", "", "no"], max_attempts: 3 }"#
        );
    }
}
