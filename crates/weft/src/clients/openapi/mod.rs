//! OpenAPI 3.0 / 3.1 documents: loaded from a file (YAML or JSON), their operations found by
//! `operationId`, and JSON Schema validators built for each operation's parameters and request
//! body (local `$ref`s inlined, a recursive one cut where it recurs; 3.0's `nullable` turned
//! into a `null` type), so a request that does not match the document's schemas is refused
//! before it is sent. Error messages name where and which rule, never the value.

pub mod call;
mod params;
mod schema;

use params::value_text;
pub use params::{In, Param, Style};
use schema::{MAX_INLINED, inline, to_json, validator};

use std::collections::BTreeMap;

use http::Method;
use serde_json::Value as Json;

use crate::config::yaml::{self};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::json_schema::problems;

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
