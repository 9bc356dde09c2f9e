//! `openapi`: calls one operation of an OpenAPI 3.0/3.1 document per message, by its
//! `operationId`. Parameters (path, query, header) are taken from the message by name — or from
//! the object `parameters` makes — and the JSON body is the message, or what `body` makes. Both
//! are validated against the document's schemas first: a message that does not match fails at
//! once, with every problem named, and nothing is sent. The document's security schemes are
//! mapped onto auth profiles with `security` (a requirement naming several schemes sends all of
//! their credentials); `validate_response: true` checks a 2xx JSON answer against the document
//! too. Parameters are written as their `style` and `explode` say (`form`, `spaceDelimited`,
//! `pipeDelimited`, `deepObject` in queries; `simple`, `label`, `matrix` in paths), and the
//! document's server URL takes its `{variables}` from `server_variables` or their defaults.
//! The `openapi` processor takes the same settings plus `result`, a
//! VRL program that merges the answer (`%response.status`, `%response.body`) into the message.
//! `weft openapi list FILE` shows the operations.
//!
//! ```yaml
//! output:
//!   openapi:
//!     spec: ./crm.openapi.yaml
//!     operation: createContact
//!     parameters: '{ "team": .team_id }'   # default: the message's fields by name
//!     body: .contact                       # default: the message
//!     security: { bearerAuth: crm }        # scheme in the document → resources.auth profile
//!     server_variables: { region: eu }     # `{region}` in the document's server URL
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::auth::AuthProfile;
use crate::clients::http::{ClientConfig, HttpClient};
use crate::clients::openapi::{In, Operation, Spec, problems};
use crate::clients::request::{Parts, RequestSpec, check_uri};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::mapping::Mapping;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message, Value};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "OpenapiCall")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The OpenAPI document (YAML or JSON file).
    pub spec: String,
    /// The `operationId` to call.
    pub operation: String,
    /// Base URL instead of the document's first server.
    #[serde(default)]
    pub server: Option<String>,
    /// Values of the document's server variables (`{region}` in its URL); the rest keep their
    /// defaults.
    #[serde(default)]
    pub server_variables: BTreeMap<String, String>,
    /// VRL expression giving the parameters object; default: the message.
    #[serde(default)]
    pub parameters: Option<String>,
    /// VRL expression giving the JSON body; default: the message.
    #[serde(default)]
    pub body: Option<String>,
    /// Security scheme name (from the document) → auth profile (from `resources.auth`).
    #[serde(default)]
    pub security: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub rate_limit: Option<String>,
    #[serde(default)]
    pub circuit_breaker: Option<String>,
    #[serde(default)]
    pub client: ClientConfig,
    /// Also check a 2xx JSON answer against the document; one that does not match fails.
    #[serde(default)]
    pub validate_response: bool,
    /// Processor only: VRL program merging the answer (`%response.status`, `%response.body`)
    /// into the message; by default the answer's body becomes the message.
    #[serde(default)]
    pub result: Option<String>,
}

/// The largest answer read.
const MAX_ANSWER: usize = 16 << 20;

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

pub struct OpenApiOutput {
    validate_response: bool,
    spec: RequestSpec,
    server: String,
    operation: Operation,
    parameters: Option<Mapping>,
    body: Option<Mapping>,
}

impl Config {
    /// As an output: `result` has nothing to merge into.
    pub fn build_output(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<OpenApiOutput, Vec<BuildError>> {
        super::no_result(&self.result)?;
        self.build(client, resources)
    }

    pub fn build(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<OpenApiOutput, Vec<BuildError>> {
        let err = |field: &str, message: String| vec![BuildError::new(field, message)];
        let document = Spec::load(&self.spec).map_err(|e| err("spec", e))?;
        let ids: Vec<String> = document.operations.iter().map(|o| o.id.clone()).collect();
        let Some(operation) = document
            .operations
            .into_iter()
            .find(|o| o.id == self.operation)
        else {
            let mut message = format!("no operation `{}` in {}", self.operation, self.spec);
            if let Some(near) =
                crate::config::de::did_you_mean(&self.operation, ids.iter().map(String::as_str))
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
        let server = match (&self.server, document.servers.first()) {
            (Some(s), _) if !self.server_variables.is_empty() => {
                return Err(err(
                    "server_variables",
                    format!("server variables fill the document's server URL, not `{s}`"),
                ));
            }
            (Some(s), _) => s.clone(),
            (None, Some(first)) => first
                .resolve(&self.server_variables)
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
                    .all(|scheme| self.security.contains_key(scheme))
            });
            match chosen {
                Some(alternative) if alternative.is_empty() => {}
                Some(alternative) => {
                    let mut profiles = Vec::new();
                    for scheme in alternative {
                        profiles.push(
                            resources
                                .auth(&self.security[scheme])
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
        let compile = |field: &str, source: &Option<String>, errors: &mut Vec<BuildError>| {
            source.as_deref().and_then(|s| {
                Mapping::compile(s)
                    .map_err(|d| errors.extend(BuildError::from_diagnostics(field, d)))
                    .ok()
            })
        };
        let parameters = compile("parameters", &self.parameters, &mut errors);
        let body = compile("body", &self.body, &mut errors);
        let base = format!("{server}/");
        let spec = RequestSpec::build(
            client,
            resources,
            Parts {
                url: &base,
                method: operation.method.as_str(),
                headers: &self.headers,
                timeout: self.timeout.0,
                auth: None,
                rate_limit: self.rate_limit.as_deref(),
                circuit_breaker: self.circuit_breaker.as_deref(),
                client: &self.client,
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
            Some(spec) if errors.is_empty() => Ok(OpenApiOutput {
                validate_response: self.validate_response,
                spec,
                server,
                operation,
                parameters,
                body,
            }),
            _ => Err(errors),
        }
    }
}

impl OpenApiOutput {
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

    pub async fn send(&self, message: &Message) -> Attempt {
        match self.call(message).await {
            Ok(_) => Attempt::Delivered,
            Err(failed) => failed,
        }
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
