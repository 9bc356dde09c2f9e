//! OpenAPI 3.0 / 3.1 documents: loaded from a file (YAML or JSON), their operations found by
//! `operationId`, and JSON Schema validators built for each operation's parameters and request
//! body (local `$ref`s inlined, a recursive one cut where it recurs; 3.0's `nullable` turned
//! into a `null` type), so a request that does not match the document's schemas is refused
//! before it is sent. Error messages name where and which rule, never the value.

pub mod call;

use std::collections::BTreeMap;

use http::Method;
use serde_json::Value as Json;

use crate::config::yaml::{self, Kind, Node};

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
    fn parse(text: Option<&str>, location: In) -> Result<Style, String> {
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
fn value_text(value: &Json) -> String {
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

pub struct Operation {
    pub id: String,
    pub method: Method,
    pub path: String,
    pub summary: String,
    pub params: Vec<Param>,
    /// The JSON request body, when the operation takes one.
    pub body: Option<Body>,
    /// Alternatives of security requirements, each a list of scheme names.
    pub security: Vec<Vec<String>>,
    /// Validators of the JSON answers, by status (`200`, `2XX`, `default`).
    pub responses: Vec<(String, jsonschema::Validator)>,
    /// What the document gets wrong in this operation, which cannot be called then.
    pub broken: Option<String>,
}

fn method_of(method: &str) -> Method {
    Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("a known method")
}

impl Operation {
    /// The validator for a success with `status`: the exact code or its class (`default`
    /// usually describes errors, so it is not used for a success).
    pub fn response_validator(&self, status: u16) -> Option<&jsonschema::Validator> {
        let exact = status.to_string();
        let class = format!("{}XX", status / 100);
        [exact.as_str(), class.as_str()].iter().find_map(|key| {
            self.responses
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }
}

pub struct Body {
    pub required: bool,
    /// The document's JSON media type (`application/json`, `…+json`).
    pub content_type: String,
    pub validator: Option<jsonschema::Validator>,
}

/// A server of the document: its URL template and variables (name → default, allowed values).
pub struct Server {
    pub url: String,
    pub variables: BTreeMap<String, (Option<String>, Vec<String>)>,
}

impl Server {
    /// The URL with its `{variables}` filled from `values`, else their defaults.
    pub fn resolve(&self, values: &BTreeMap<String, String>) -> Result<String, String> {
        if let Some(unknown) = values.keys().find(|k| !self.variables.contains_key(*k)) {
            return Err(format!(
                "the server `{}` has no variable `{unknown}`",
                self.url
            ));
        }
        let mut url = self.url.clone();
        for (name, (default, allowed)) in &self.variables {
            let Some(value) = values.get(name).or(default.as_ref()) else {
                return Err(format!(
                    "server variable `{name}` has no default; give it under `server_variables`"
                ));
            };
            if !allowed.is_empty() && !allowed.contains(value) {
                return Err(format!(
                    "server variable `{name}` must be one of {allowed:?}"
                ));
            }
            url = url.replace(&format!("{{{name}}}"), value);
        }
        Ok(url)
    }
}

pub struct Spec {
    pub servers: Vec<Server>,
    pub operations: Vec<Operation>,
}

/// How deep `$ref`s are followed (a recursive schema is cut there, accepting anything below).
const MAX_REF_DEPTH: usize = 16;

fn to_json(node: &Node) -> Json {
    match &node.kind {
        Kind::Null => Json::Null,
        Kind::Bool(b) => Json::Bool(*b),
        Kind::Int(i) => Json::from(*i),
        Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Kind::Str(s) => Json::String(s.clone()),
        Kind::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match &k.kind {
                        Kind::Str(s) => s.clone(),
                        Kind::Int(i) => i.to_string(),
                        _ => String::new(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

/// The most schema nodes inlining may produce, so a document that reuses schemas heavily
/// cannot blow up at load.
const MAX_INLINED: usize = 200_000;

/// `value` with every local `$ref` replaced by what it points at. A `$ref` that comes back on
/// its own chain (a recursive schema) is cut there and accepts anything below; one that points
/// nowhere is an error.
fn inline(
    doc: &Json,
    value: &Json,
    chain: &mut Vec<String>,
    budget: &mut usize,
) -> Result<Json, String> {
    if *budget == 0 {
        return Err("the document's schemas expand too far to inline".into());
    }
    *budget -= 1;
    Ok(match value {
        Json::Object(map) => {
            if let Some(Json::String(target)) = map.get("$ref") {
                let Some(pointer) = target.strip_prefix('#') else {
                    return Err(format!(
                        "`$ref: {target}`: only references inside the document are followed"
                    ));
                };
                if chain.iter().any(|t| t == target) || chain.len() >= MAX_REF_DEPTH {
                    return Ok(Json::Object(Default::default()));
                }
                let found = doc
                    .pointer(pointer)
                    .ok_or_else(|| format!("`$ref: {target}` points at nothing"))?;
                chain.push(target.clone());
                let inlined = inline(doc, found, chain, budget);
                chain.pop();
                return inlined;
            }
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), inline(doc, v, chain, budget)?);
            }
            Json::Object(out)
        }
        Json::Array(items) => Json::Array(
            items
                .iter()
                .map(|i| inline(doc, i, chain, budget))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// 3.0's `nullable: true` as JSON Schema says it: `null` among the types. Walks schemas only,
/// so a property that happens to be called `nullable` is left alone.
fn nullable_to_type(schema: &mut Json) {
    let Json::Object(map) = schema else { return };
    if map.get("nullable") == Some(&Json::Bool(true)) {
        map.remove("nullable");
        match map.get("type").cloned() {
            Some(Json::String(t)) => {
                map.insert("type".into(), serde_json::json!([t, "null"]));
            }
            _ => {
                if let Some(Json::Array(options)) = map.get_mut("enum") {
                    options.push(Json::Null);
                }
            }
        }
    } else if map.get("nullable") == Some(&Json::Bool(false)) {
        map.remove("nullable");
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" | "definitions" | "$defs" => {
                if let Json::Object(schemas) = value {
                    schemas.values_mut().for_each(nullable_to_type);
                }
            }
            "items" | "not" | "additionalProperties" | "contains" => nullable_to_type(value),
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Json::Array(schemas) = value {
                    schemas.iter_mut().for_each(nullable_to_type);
                }
            }
            _ => {}
        }
    }
}

fn validator(schema: &Json, v31: bool) -> Result<jsonschema::Validator, String> {
    let mut schema = schema.clone();
    let draft = if v31 {
        jsonschema::Draft::Draft202012
    } else {
        nullable_to_type(&mut schema);
        jsonschema::Draft::Draft4
    };
    jsonschema::options()
        .with_draft(draft)
        .build(&schema)
        .map_err(|e| e.to_string())
}

impl Spec {
    pub fn load(path: &str) -> Result<Spec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        Self::parse(path, &text)
    }

    /// A document's text (JSON or YAML) into its operations; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Spec, String> {
        let doc: Json = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("{path}: {e}"))?
        } else {
            to_json(&yaml::parse(text).map_err(|e| format!("{path}: {}", e.message))?)
        };
        let version = doc.get("openapi").and_then(Json::as_str).unwrap_or("");
        if !version.starts_with("3.") {
            return Err(format!(
                "{path}: not an OpenAPI 3 document (`openapi: {version}`)"
            ));
        }
        let v31 = version.starts_with("3.1");
        let servers = doc
            .get("servers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|server| {
                let url = server.get("url")?.as_str()?.to_string();
                let variables = server
                    .get("variables")
                    .and_then(Json::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(name, v)| {
                        let default = v.get("default").map(value_text);
                        let allowed = v
                            .get("enum")
                            .and_then(Json::as_array)
                            .map(|e| e.iter().map(value_text).collect())
                            .unwrap_or_default();
                        (name.clone(), (default, allowed))
                    })
                    .collect();
                Some(Server { url, variables })
            })
            .collect();
        let root_security = doc.get("security").cloned();
        let mut operations = Vec::new();
        let paths = doc
            .get("paths")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let mut budget = MAX_INLINED;
        for (path, item) in &paths {
            let item = inline(&doc, item, &mut Vec::new(), &mut budget)
                .map_err(|e| format!("{path}: {e}"))?;
            let shared_params = item.get("parameters").cloned();
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                let Some(op) = item.get(method) else { continue };
                let id = op
                    .get("operationId")
                    .and_then(Json::as_str)
                    .map_or_else(|| format!("{method} {path}"), str::to_string);
                // A part of one operation the document gets wrong spoils that operation only:
                // vendor documents often carry a mistake in a corner nobody calls.
                let built = (|| -> Result<Operation, String> {
                    let mut by_name: BTreeMap<(String, String), Json> = BTreeMap::new();
                    for list in [shared_params.as_ref(), op.get("parameters")]
                        .into_iter()
                        .flatten()
                    {
                        for p in list.as_array().into_iter().flatten() {
                            let name = p
                                .get("name")
                                .and_then(Json::as_str)
                                .unwrap_or("")
                                .to_string();
                            let place =
                                p.get("in").and_then(Json::as_str).unwrap_or("").to_string();
                            by_name.insert((place, name), p.clone());
                        }
                    }
                    let mut params = Vec::new();
                    for ((place, name), p) in by_name {
                        let location = match place.as_str() {
                            "path" => In::Path,
                            "query" => In::Query,
                            "header" => In::Header,
                            // Cookies are not sent by weft.
                            _ => continue,
                        };
                        // A parameter described by `content` (one media type, JSON in practice)
                        // is sent as that JSON text, not by style.
                        let content_schema = p
                            .get("content")
                            .and_then(Json::as_object)
                            .and_then(|c| c.values().next())
                            .map(|media| media.get("schema"));
                        let validator =
                            match content_schema.unwrap_or_else(|| p.get("schema")) {
                                Some(schema) => Some(validator(schema, v31).map_err(|e| {
                                    format!("{path}: {id}: parameter `{name}`: {e}")
                                })?),
                                None => None,
                            };
                        let style =
                            Style::parse(p.get("style").and_then(Json::as_str), location)
                                .map_err(|e| format!("{path}: {id}: parameter `{name}`: {e}"))?;
                        params.push(Param {
                            required: location == In::Path
                                || p.get("required").and_then(Json::as_bool).unwrap_or(false),
                            explode: p
                                .get("explode")
                                .and_then(Json::as_bool)
                                .unwrap_or(style == Style::Form),
                            style,
                            json: content_schema.is_some(),
                            name,
                            location,
                            validator,
                        });
                    }
                    let body = match op.get("requestBody") {
                        None => None,
                        Some(request_body) => {
                            let required = request_body
                                .get("required")
                                .and_then(Json::as_bool)
                                .unwrap_or(false);
                            let content = request_body.get("content").and_then(Json::as_object);
                            let json = content.into_iter().flatten().find(|(media, _)| {
                                let essence = media.split(';').next().unwrap_or("").trim();
                                essence == "application/json" || essence.ends_with("+json")
                            });
                            match json {
                                Some((media, spec)) => Some(Body {
                                    required,
                                    content_type: media.clone(),
                                    validator: match spec.get("schema") {
                                        Some(schema) => Some(
                                            validator(schema, v31)
                                                .map_err(|e| format!("{path}: {id}: body: {e}"))?,
                                        ),
                                        None => None,
                                    },
                                }),
                                None if required => {
                                    let types: Vec<&String> =
                                        content.into_iter().flatten().map(|(m, _)| m).collect();
                                    return Err(format!(
                                        "{path}: {id}: the body must be one of {types:?}; weft sends JSON"
                                    ));
                                }
                                None => None,
                            }
                        }
                    };
                    let mut responses = Vec::new();
                    for (status, answer) in op
                        .get("responses")
                        .and_then(Json::as_object)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(schema) = answer.pointer("/content/application~1json/schema") {
                            responses.push((
                                status.clone(),
                                validator(schema, v31)
                                    .map_err(|e| format!("{path}: {id}: response {status}: {e}"))?,
                            ));
                        }
                    }
                    let security = op
                        .get("security")
                        .or(root_security.as_ref())
                        .and_then(Json::as_array)
                        .map(|alternatives| {
                            alternatives
                                .iter()
                                .filter_map(Json::as_object)
                                .map(|req| req.keys().cloned().collect())
                                .collect()
                        })
                        .unwrap_or_default();
                    Ok(Operation {
                        id: id.clone(),
                        method: method_of(method),
                        path: path.clone(),
                        summary: op
                            .get("summary")
                            .and_then(Json::as_str)
                            .unwrap_or("")
                            .to_string(),
                        params,
                        body,
                        security,
                        responses,
                        broken: None,
                    })
                })();
                operations.push(built.unwrap_or_else(|broken| Operation {
                    id,
                    method: method_of(method),
                    path: path.clone(),
                    summary: String::new(),
                    params: Vec::new(),
                    body: None,
                    security: Vec::new(),
                    responses: Vec::new(),
                    broken: Some(broken),
                }));
            }
        }
        Ok(Spec {
            servers,
            operations,
        })
    }
}

/// Where and which rule a failed validation broke — never the value itself, which may be a
/// secret or personal data bound for a log or a dead letter.
pub fn problems(validator: &jsonschema::Validator, instance: &Json) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let at = e.instance_path().to_string();
            let rule = e.schema_path().to_string();
            let keyword = rule.rsplit('/').next().unwrap_or("");
            let what = match keyword {
                "required" => "a required property is missing".to_string(),
                "" => "does not match".to_string(),
                k => format!("breaks `{k}`"),
            };
            if at.is_empty() {
                format!("{what} (schema {rule})")
            } else {
                format!("{at}: {what} (schema {rule})")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(doc: serde_json::Value) -> Result<Spec, String> {
        let path = std::env::temp_dir().join(format!(
            "weft-openapi-{}-{}.json",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::write(&path, doc.to_string()).unwrap();
        let spec = Spec::load(&path.display().to_string());
        let _ = std::fs::remove_file(&path);
        spec
    }

    #[test]
    fn recursive_refs_nullable_fields_and_json_flavoured_bodies() {
        let spec = load(serde_json::json!({
            "openapi": "3.0.3",
            "components": {"schemas": {"Node": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                    "nullable": {"type": "string"},
                    "note": {"type": "string", "nullable": true}
                }
            }}},
            "paths": {"/nodes": {"patch": {
                "operationId": "patchNode",
                "requestBody": {"required": true, "content": {
                    "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/Node"}}
                }}
            }}}
        }))
        .unwrap();
        let op = &spec.operations[0];
        let body = op.body.as_ref().unwrap();
        assert_eq!(body.content_type, "application/merge-patch+json");
        let v = body.validator.as_ref().unwrap();
        let ok = serde_json::json!({"note": null, "nullable": "a property", "children": [{"children": []}]});
        assert!(problems(v, &ok).is_empty(), "{:?}", problems(v, &ok));
        assert!(!problems(v, &serde_json::json!({"nullable": 1})).is_empty());

        let missing = load(serde_json::json!({
            "openapi": "3.1.0",
            "paths": {"/x": {"get": {"parameters": [{"$ref": "#/components/parameters/Nope"}]}}}
        }));
        assert!(missing.err().unwrap().contains("points at nothing"));
    }

    /// The style table of the OpenAPI specification (3.1, "Style Examples"): `color` as the
    /// string "blue", the array ["blue","black","brown"] and the object {R:100,G:200,B:150}.
    #[test]
    fn parameters_are_written_by_style_and_explode() {
        let param = |location: In, style: &str, explode: bool| Param {
            name: "color".into(),
            location,
            required: false,
            style: Style::parse(Some(style), location).unwrap(),
            explode,
            json: false,
            validator: None,
        };
        let string = serde_json::json!("blue");
        let array = serde_json::json!(["blue", "black", "brown"]);
        let object = serde_json::json!({"R": 100, "G": 200, "B": 150});
        let cases = [
            (
                In::Path,
                "simple",
                false,
                "blue",
                "blue,black,brown",
                "B,150,G,200,R,100",
            ),
            (
                In::Path,
                "simple",
                true,
                "blue",
                "blue,black,brown",
                "B=150,G=200,R=100",
            ),
            (
                In::Path,
                "label",
                false,
                ".blue",
                ".blue,black,brown",
                ".B,150,G,200,R,100",
            ),
            (
                In::Path,
                "label",
                true,
                ".blue",
                ".blue.black.brown",
                ".B=150.G=200.R=100",
            ),
            (
                In::Path,
                "matrix",
                false,
                ";color=blue",
                ";color=blue,black,brown",
                ";color=B,150,G,200,R,100",
            ),
            (
                In::Path,
                "matrix",
                true,
                ";color=blue",
                ";color=blue;color=black;color=brown",
                ";B=150;G=200;R=100",
            ),
            (
                In::Query,
                "form",
                false,
                "color=blue",
                "color=blue,black,brown",
                "color=B,150,G,200,R,100",
            ),
            (
                In::Query,
                "form",
                true,
                "color=blue",
                "color=blue&color=black&color=brown",
                "B=150&G=200&R=100",
            ),
            (
                In::Query,
                "spaceDelimited",
                false,
                "color=blue",
                "color=blue%20black%20brown",
                "color=B%20150%20G%20200%20R%20100",
            ),
            (
                In::Query,
                "pipeDelimited",
                false,
                "color=blue",
                "color=blue%7Cblack%7Cbrown",
                "color=B%7C150%7CG%7C200%7CR%7C100",
            ),
            (
                In::Query,
                "deepObject",
                true,
                "color=blue",
                "color=blue&color=black&color=brown",
                "color%5BB%5D=150&color%5BG%5D=200&color%5BR%5D=100",
            ),
            (
                In::Header,
                "simple",
                false,
                "blue",
                "blue,black,brown",
                "B,150,G,200,R,100",
            ),
        ];
        for (location, style, explode, s, a, o) in cases {
            let p = param(location, style, explode);
            assert_eq!(p.serialize(&string), s, "{style} {explode} string");
            assert_eq!(p.serialize(&array), a, "{style} {explode} array");
            assert_eq!(p.serialize(&object), o, "{style} {explode} object");
        }
        // Text is percent-encoded in paths and queries, delimiters are not; headers stay raw.
        let tricky = serde_json::json!(["a b", "c,d&e"]);
        assert_eq!(
            param(In::Query, "form", false,).serialize(&tricky),
            "color=a%20b,c%2Cd%26e"
        );
        assert_eq!(
            param(In::Header, "simple", false).serialize(&tricky),
            "a b,c,d&e"
        );
        assert_eq!(
            param(In::Query, "pipeDelimited", true).serialize(&array),
            "color=blue&color=black&color=brown"
        );
        assert_eq!(
            param(In::Path, "matrix", false).serialize(&serde_json::json!([])),
            ";color"
        );
        let json = Param {
            json: true,
            ..param(In::Query, "form", true)
        };
        assert_eq!(
            json.serialize(&object),
            "color=%7B%22B%22%3A150%2C%22G%22%3A200%2C%22R%22%3A100%7D"
        );
        assert!(Style::parse(Some("form"), In::Path).is_err());
        assert!(Style::parse(Some("matrix"), In::Header).is_err());
    }

    #[test]
    fn server_variables_take_defaults_and_refuse_values_outside_their_enum() {
        let spec = load(serde_json::json!({
            "openapi": "3.1.0",
            "servers": [{"url": "https://{region}.api.example.com/{version}", "variables": {
                "region": {"default": "eu", "enum": ["eu", "us"]},
                "version": {"default": "v2"}
            }}],
            "paths": {}
        }))
        .unwrap();
        let server = &spec.servers[0];
        let values = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            server.resolve(&values(&[])).unwrap(),
            "https://eu.api.example.com/v2"
        );
        assert_eq!(
            server
                .resolve(&values(&[("region", "us"), ("version", "v3")]))
                .unwrap(),
            "https://us.api.example.com/v3"
        );
        let e = server.resolve(&values(&[("region", "mars")])).unwrap_err();
        assert!(e.contains("`region` must be one of"), "{e}");
        let e = server.resolve(&values(&[("zone", "a")])).unwrap_err();
        assert!(e.contains("no variable `zone`"), "{e}");
    }

    #[test]
    fn a_mistake_in_one_operation_spoils_only_that_one() {
        let spec = load(serde_json::json!({
            "openapi": "3.0.3",
            "servers": [{"url": "https://{tenant}.example.com", "variables": {"tenant": {}}}],
            "paths": {
                "/a": {"get": {"operationId": "bad", "parameters": [
                    {"name": "q", "in": "query", "style": "matrix", "schema": {"type": "string"}}
                ]}},
                "/b": {"get": {"operationId": "good", "parameters": [
                    {"name": "f", "in": "query", "content": {"application/json": {"schema": {"type": "object"}}}}
                ]}}
            }
        }))
        .unwrap();
        let op = |id: &str| spec.operations.iter().find(|o| o.id == id).unwrap();
        assert!(
            op("bad")
                .broken
                .as_deref()
                .unwrap()
                .contains("style `matrix` is not allowed")
        );
        assert!(op("good").broken.is_none());
        assert!(op("good").params[0].json);
        let e = spec.servers[0].resolve(&BTreeMap::new()).unwrap_err();
        assert!(e.contains("`tenant` has no default"), "{e}");
    }
}
