//! One OpenAPI operation as a call, shared by the `openapi` output and processor: built from
//! the document (the operation's method, path, parameters, body type, security and answers),
//! the message turned into path, query, header and body parameters, the answer checked against
//! the document when asked. [`openapi_config!`] declares the settings of either component.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use super::{In, Operation, Spec};
use crate::clients::Resources;
use crate::clients::auth::AuthProfile;
use crate::clients::call::CallSettings;
use crate::clients::http::HttpClient;
use crate::clients::json_schema::problems;
use crate::clients::request::{Parts, RequestSpec, check_uri};
use crate::config::BuildError;
use crate::core::mapping::Mapping;
use crate::core::{Attempt, Message, Value};

/// Declares the config struct of a component that calls an OpenAPI operation, with the shared
/// call settings ([`crate::clients::call::call_config!`]; no `auth`: the document's security
/// schemes are mapped to profiles under `security`), plus `fn openapi(&self) -> OpenApiParts`.
macro_rules! openapi_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {}
        with { $($flag:ident),* $(,)? }
    ) => {
        $crate::clients::call::call_config! {
            $(#[$meta])*
            pub struct $name {
                /// The OpenAPI document (YAML or JSON file).
                pub spec: String,
                /// The `operationId` to call.
                pub operation: String,
                /// Base URL instead of the document's first server.
                #[serde(default)]
                pub server: Option<String>,
                /// Values of the document's server variables (`{region}` in its URL); the rest
                /// keep their defaults.
                #[serde(default)]
                pub server_variables: std::collections::BTreeMap<String, String>,
                /// VRL expression giving the parameters object; default: the message.
                #[serde(default)]
                pub parameters: Option<String>,
                /// VRL expression giving the JSON body; default: the message.
                #[serde(default)]
                pub body: Option<String>,
                /// Security scheme name (from the document) → auth profile (from
                /// `resources.auth`).
                #[serde(default)]
                pub security: std::collections::BTreeMap<String, String>,
                /// Also check a 2xx JSON answer against the document; one that does not match
                /// fails.
                #[serde(default)]
                pub validate_response: bool,
            }
            with { $($flag),* }
        }

        impl $name {
            /// What the call is built from.
            pub fn openapi(&self) -> $crate::clients::openapi::call::OpenApiParts<'_> {
                $crate::clients::openapi::call::OpenApiParts {
                    spec: &self.spec,
                    operation: &self.operation,
                    server: self.server.as_deref(),
                    server_variables: &self.server_variables,
                    parameters: self.parameters.as_deref(),
                    body: self.body.as_deref(),
                    security: &self.security,
                    validate_response: self.validate_response,
                    call: self.call(),
                }
            }
        }
    };
}

pub(crate) use openapi_config;

/// The configured parts of an OpenAPI call.
pub struct OpenApiParts<'a> {
    pub spec: &'a str,
    pub operation: &'a str,
    pub server: Option<&'a str>,
    pub server_variables: &'a BTreeMap<String, String>,
    pub parameters: Option<&'a str>,
    pub body: Option<&'a str>,
    pub security: &'a BTreeMap<String, String>,
    pub validate_response: bool,
    pub call: CallSettings<'a>,
}

/// The largest answer read.
const MAX_ANSWER: usize = 16 << 20;

pub struct OpenApiCall {
    validate_response: bool,
    spec: RequestSpec,
    server: String,
    operation: Operation,
    parameters: Option<Mapping>,
    body: Option<Mapping>,
}

impl OpenApiCall {
    pub fn build(
        client: &HttpClient,
        resources: &Resources,
        parts: OpenApiParts<'_>,
    ) -> Result<OpenApiCall, Vec<BuildError>> {
        let err = |field: &str, message: String| vec![BuildError::new(field, message)];
        let document = Spec::load(parts.spec).map_err(|e| err("spec", e))?;
        let ids: Vec<String> = document.operations.iter().map(|o| o.id.clone()).collect();
        let Some(operation) = document
            .operations
            .into_iter()
            .find(|o| o.id == *parts.operation)
        else {
            let mut message = format!("no operation `{}` in {}", parts.operation, parts.spec);
            if let Some(near) =
                crate::config::de::did_you_mean(parts.operation, ids.iter().map(String::as_str))
            {
                message.push_str(&format!("; did you mean `{near}`?"));
            }
            return Err(err("operation", message));
        };
        if let Some(broken) = &operation.broken {
            return Err(err(
                "operation",
                format!(
                    "the document describes `{}` wrongly: {broken}",
                    operation.id
                ),
            ));
        }
        let server = match (parts.server, document.servers.first()) {
            (Some(s), _) if !parts.server_variables.is_empty() => {
                return Err(err(
                    "server_variables",
                    format!("server variables fill the document's server URL, not `{s}`"),
                ));
            }
            (Some(s), _) => s.to_string(),
            (None, Some(first)) => first
                .resolve(parts.server_variables)
                .map_err(|e| err("server_variables", e))?,
            (None, None) => {
                return Err(err(
                    "server",
                    "the document names no server; give `server: https://…`".into(),
                ));
            }
        };
        let server = server.trim_end_matches('/').to_string();
        check_uri(&format!("{server}/")).map_err(|e| err("server", e))?;
        // The first alternative of the operation's security whose schemes are all mapped; its
        // profiles are applied together.
        let mut auth = None;
        if !operation.security.is_empty() {
            let chosen = operation.security.iter().find(|alternative| {
                alternative
                    .iter()
                    .all(|scheme| parts.security.contains_key(scheme))
            });
            match chosen {
                Some(alternative) if alternative.is_empty() => {}
                Some(alternative) => {
                    let mut profiles = Vec::new();
                    for scheme in alternative {
                        profiles.push(
                            resources
                                .auth(&parts.security[scheme])
                                .map_err(|e| err("security", e))?,
                        );
                    }
                    auth = Some(if profiles.len() == 1 {
                        profiles.remove(0)
                    } else {
                        Arc::new(
                            AuthProfile::all(alternative.join(" + "), profiles)
                                .map_err(|e| err("security", e))?,
                        )
                    });
                }
                None => {
                    let wanted: Vec<String> =
                        operation.security.iter().map(|a| a.join(" + ")).collect();
                    return Err(err(
                        "security",
                        format!(
                            "operation `{}` needs {}; map each scheme of one of them to an auth profile under `security`",
                            operation.id,
                            wanted.join(" or ")
                        ),
                    ));
                }
            }
        }
        let mut errors = Vec::new();
        let compile = |field: &str, source: Option<&str>, errors: &mut Vec<BuildError>| {
            source.and_then(|s| {
                Mapping::compile(s)
                    .map_err(|d| errors.extend(BuildError::from_diagnostics(field, d)))
                    .ok()
            })
        };
        let parameters = compile("parameters", parts.parameters, &mut errors);
        let body = compile("body", parts.body, &mut errors);
        let base = format!("{server}/");
        let spec = RequestSpec::build(
            client,
            resources,
            Parts {
                url: &base,
                method: operation.method.as_str(),
                auth: None,
                call: parts.call,
            },
        )
        .map_err(|e| errors.extend(e))
        .ok()
        .and_then(|spec| match auth {
            Some(profile) => spec
                .with_auth(profile)
                .map_err(|e| errors.push(BuildError::new("server", e)))
                .ok(),
            None => Some(spec),
        });
        match spec {
            Some(spec) if errors.is_empty() => Ok(OpenApiCall {
                validate_response: parts.validate_response,
                spec,
                server,
                operation,
                parameters,
                body,
            }),
            _ => Err(errors),
        }
    }

    pub fn reads_metadata(&self) -> bool {
        self.spec.reads_metadata()
            || self
                .parameters
                .as_ref()
                .is_some_and(Mapping::reads_metadata)
            || self.body.as_ref().is_some_and(Mapping::reads_metadata)
    }

    /// The request's URL, headers and body, or every way the message does not match.
    #[allow(clippy::type_complexity)]
    fn request(
        &self,
        message: &Message,
    ) -> Result<(http::Uri, Vec<(HeaderName, HeaderValue)>, Option<Bytes>), String> {
        let op = &self.operation;
        let eval = |m: &Option<Mapping>| -> Result<Value, String> {
            match m {
                Some(m) => m
                    .eval(&message.value, &message.metadata)
                    .map_err(|e| e.to_string()),
                None => Ok(message.value.clone()),
            }
        };
        let params = serde_json::to_value(eval(&self.parameters)?).map_err(|e| e.to_string())?;
        let mut problems_found = Vec::new();
        let mut path = op.path.clone();
        let mut query = Vec::new();
        let mut headers = Vec::new();
        for p in &op.params {
            // OpenAPI ignores these as header parameters: weft sets them itself.
            if p.location == In::Header
                && ["authorization", "content-type", "accept"]
                    .contains(&p.name.to_ascii_lowercase().as_str())
            {
                continue;
            }
            let Some(value) = params.get(&p.name).filter(|v| !v.is_null()) else {
                if p.required {
                    problems_found.push(format!("parameter `{}` is required", p.name));
                }
                continue;
            };
            if let Some(v) = &p.validator {
                for problem in problems(v, value) {
                    problems_found.push(format!("parameter `{}`: {problem}", p.name));
                }
            }
            let text = p.serialize(value);
            match p.location {
                In::Path => path = path.replace(&format!("{{{}}}", p.name), &text),
                In::Query if text.is_empty() => {}
                In::Query => query.push(text),
                In::Header => match (
                    HeaderName::from_bytes(p.name.as_bytes()),
                    HeaderValue::from_str(&text),
                ) {
                    (Ok(name), Ok(value)) => headers.push((name, value)),
                    _ => problems_found
                        .push(format!("parameter `{}`: not a valid header value", p.name)),
                },
            }
        }
        let body = match &op.body {
            None => None,
            Some(spec) => {
                let value = serde_json::to_value(eval(&self.body)?).map_err(|e| e.to_string())?;
                if value.is_null() {
                    if spec.required {
                        problems_found.push("the request body is required".into());
                    }
                    None
                } else {
                    if let Some(validator) = &spec.validator {
                        for problem in problems(validator, &value) {
                            problems_found.push(format!("body {problem}"));
                        }
                    }
                    Some(Bytes::from(value.to_string()))
                }
            }
        };
        if !problems_found.is_empty() {
            return Err(format!(
                "the message does not match operation `{}` of the OpenAPI document: {}",
                op.id,
                problems_found.join("; ")
            ));
        }
        let separator = if self.server.contains('?') { '&' } else { '?' };
        let uri = if query.is_empty() {
            check_uri(&format!("{}{path}", self.server))?
        } else {
            check_uri(&format!(
                "{}{path}{separator}{}",
                self.server,
                query.join("&")
            ))?
        };
        Ok((uri, headers, body))
    }

    /// One call: the answer's status and body (parsed JSON when it is JSON), or how the attempt
    /// failed. With `validate_response`, a JSON answer that does not match the document fails.
    pub async fn call(&self, message: &Message) -> Result<(u16, Value), Attempt> {
        let fatal = |reason: String| Attempt::Fatal {
            reason,
            response: None,
        };
        let (uri, headers, body) = self.request(message).map_err(fatal)?;
        let method = &self.operation.method;
        let shown = self.spec.shown(&uri);
        let mut content_type = body.as_ref().map(|_| "application/json");
        let mut headers = headers;
        if body.is_some()
            && let Some(spec) = &self.operation.body
            && spec.content_type != "application/json"
            && let Ok(value) = HeaderValue::from_str(&spec.content_type)
        {
            // The document's own JSON type (`application/merge-patch+json`…) instead.
            headers.push((http::header::CONTENT_TYPE, value));
            content_type = None;
        }
        let response = self
            .spec
            .success(
                &uri,
                method,
                (&message.value, &message.metadata),
                body.unwrap_or_default(),
                content_type,
                MAX_ANSWER,
                &headers,
            )
            .await?;
        let status = response.status();
        let json: Option<serde_json::Value> = serde_json::from_slice(response.body()).ok();
        let empty = response.body().iter().all(u8::is_ascii_whitespace);
        // An empty answer (201, 204…) has nothing to check: the server already acted on it.
        if self.validate_response
            && !empty
            && let Some(validator) = self.operation.response_validator(status.as_u16())
        {
            let found = match &json {
                Some(answer) => problems(validator, answer),
                None => vec!["the answer is not JSON".to_string()],
            };
            if !found.is_empty() {
                return Err(fatal(format!(
                    "{method} {shown}: the answer ({status}) does not match operation `{}` of the OpenAPI document: {}",
                    self.operation.id,
                    found.join("; ")
                )));
            }
        }
        let value = match json {
            Some(j) => serde_json::from_value(j).map_err(|e| fatal(e.to_string()))?,
            None => Value::Bytes(response.body().clone()),
        };
        Ok((status.as_u16(), value))
    }
}

/// `weft openapi list`: one line per operation.
pub fn list(path: &str) -> Result<Vec<String>, String> {
    let spec = Spec::load(path)?;
    Ok(spec
        .operations
        .iter()
        .map(|o| {
            let summary = match (&o.broken, o.summary.is_empty()) {
                (Some(broken), _) => format!("  (cannot be called: {broken})"),
                (None, true) => String::new(),
                (None, false) => format!("  {}", o.summary),
            };
            format!("{}  {} {}{summary}", o.id, o.method, o.path)
        })
        .collect())
}
