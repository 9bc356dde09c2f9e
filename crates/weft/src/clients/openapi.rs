//! OpenAPI 3.0 / 3.1 documents: loaded from a file (YAML or JSON), their operations found by
//! `operationId`, and JSON Schema validators built for each operation's parameters and request
//! body (local `$ref`s inlined; 3.0's `nullable` turned into a `null` type), so a request that
//! does not match the document is refused before it is sent.

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

pub struct Param {
    pub name: String,
    pub location: In,
    pub required: bool,
    pub validator: Option<jsonschema::Validator>,
}

pub struct Operation {
    pub id: String,
    pub method: Method,
    pub path: String,
    pub summary: String,
    pub params: Vec<Param>,
    /// The JSON request body's validator, and whether a body is required.
    pub body: Option<(jsonschema::Validator, bool)>,
    /// Alternatives of security requirements, each a list of scheme names.
    pub security: Vec<Vec<String>>,
    /// Validators of the JSON answers, by status (`200`, `2XX`, `default`).
    pub responses: Vec<(String, jsonschema::Validator)>,
}

impl Operation {
    /// The validator for an answer with `status`: the exact code, its class, or `default`.
    pub fn response_validator(&self, status: u16) -> Option<&jsonschema::Validator> {
        let exact = status.to_string();
        let class = format!("{}XX", status / 100);
        [exact.as_str(), class.as_str(), "default"]
            .iter()
            .find_map(|key| {
                self.responses
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
    }
}

pub struct Spec {
    pub servers: Vec<String>,
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

/// `value` with every local `$ref` replaced by what it points at.
fn inline(doc: &Json, value: &Json, depth: usize) -> Json {
    match value {
        Json::Object(map) => {
            if let Some(Json::String(target)) = map.get("$ref")
                && let Some(pointer) = target.strip_prefix('#')
            {
                if depth >= MAX_REF_DEPTH {
                    return Json::Object(Default::default());
                }
                return doc
                    .pointer(pointer)
                    .map_or(Json::Null, |found| inline(doc, found, depth + 1));
            }
            Json::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), inline(doc, v, depth)))
                    .collect(),
            )
        }
        Json::Array(items) => Json::Array(items.iter().map(|i| inline(doc, i, depth)).collect()),
        other => other.clone(),
    }
}

/// 3.0's `nullable: true` as JSON Schema says it: `null` among the types.
fn nullable_to_type(value: &mut Json) {
    match value {
        Json::Object(map) => {
            if map.remove("nullable") == Some(Json::Bool(true))
                && let Some(Json::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), serde_json::json!([t, "null"]));
            }
            map.values_mut().for_each(nullable_to_type);
        }
        Json::Array(items) => items.iter_mut().for_each(nullable_to_type),
        _ => {}
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
        let doc: Json = if text.trim_start().starts_with('{') {
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?
        } else {
            to_json(&yaml::parse(&text).map_err(|e| format!("{path}: {}", e.message))?)
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
            .map(|s| {
                s.iter()
                    .filter_map(|s| s.get("url")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let root_security = doc.get("security").cloned();
        let mut operations = Vec::new();
        let paths = doc
            .get("paths")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        for (path, item) in &paths {
            let item = inline(&doc, item, 0);
            let shared_params = item.get("parameters").cloned();
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                let Some(op) = item.get(method) else { continue };
                let id = op
                    .get("operationId")
                    .and_then(Json::as_str)
                    .map_or_else(|| format!("{method} {path}"), str::to_string);
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
                        let place = p.get("in").and_then(Json::as_str).unwrap_or("").to_string();
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
                    let validator = match p.get("schema") {
                        Some(schema) => Some(
                            validator(schema, v31)
                                .map_err(|e| format!("{path}: {id}: parameter `{name}`: {e}"))?,
                        ),
                        None => None,
                    };
                    params.push(Param {
                        required: location == In::Path
                            || p.get("required").and_then(Json::as_bool).unwrap_or(false),
                        name,
                        location,
                        validator,
                    });
                }
                let body = match op.pointer("/requestBody/content/application~1json/schema") {
                    Some(schema) => Some((
                        validator(schema, v31).map_err(|e| format!("{path}: {id}: body: {e}"))?,
                        op.pointer("/requestBody/required")
                            .and_then(Json::as_bool)
                            .unwrap_or(false),
                    )),
                    None => None,
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
                operations.push(Operation {
                    id,
                    method: Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                        .expect("a known method"),
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
                });
            }
        }
        Ok(Spec {
            servers,
            operations,
        })
    }
}

/// Every message of a failed validation, with where in the instance it is.
pub fn problems(validator: &jsonschema::Validator, instance: &Json) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect()
}
