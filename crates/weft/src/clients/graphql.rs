//! GraphQL over HTTP, shared by the `graphql` output and processor: a query document sent as
//! `{"query", "variables"}` (POST, JSON) through the common request stack, and the answer's
//! `data` back. A 200 whose `errors` list is not empty is a failure, with the errors' messages
//! as the reason — retried when every error's `extensions.code` says "not now" (`THROTTLED`,
//! `RATE_LIMITED`, …), final otherwise; other answers are judged as any HTTP answer (5xx
//! retried, 4xx failed).

use bytes::Bytes;
use http::Method;

use super::Resources;
use super::call::CallSettings;
use super::http::HttpClient;
use super::request::{Parts, RequestSpec};
use crate::config::BuildError;
use crate::core::mapping::Mapping;
use crate::core::retry::Answer;
use crate::core::{Attempt, Message, Value};

/// Declares the config struct of a component that makes GraphQL calls: the endpoint, the query
/// and the variables, with `auth` and the shared call settings ([`super::call::call_config!`]),
/// plus `fn graphql(&self) -> GraphqlParts<'_>`. The output and the processor each declare
/// theirs (`with { retry }`, `with { retry, result }`), so neither offers a field it refuses.
macro_rules! graphql_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {}
        with { $($flag:ident),* $(,)? }
    ) => {
        $crate::clients::call::call_config! {
            $(#[$meta])*
            pub struct $name {
                /// The GraphQL endpoint.
                pub url: String,
                /// The query document.
                pub query: String,
                /// A VRL expression giving the variables object; default: the message (when
                /// an object).
                #[serde(default)]
                pub variables: Option<String>,
            }
            with { auth, $($flag),* }
        }

        impl $name {
            /// What the call is built from.
            pub fn graphql(&self) -> $crate::clients::graphql::GraphqlParts<'_> {
                $crate::clients::graphql::GraphqlParts {
                    url: &self.url,
                    query: &self.query,
                    variables: self.variables.as_deref(),
                    auth: self.auth.as_deref(),
                    call: self.call(),
                }
            }
        }
    };
}

pub(crate) use graphql_config;

/// The configured parts of a GraphQL call.
pub struct GraphqlParts<'a> {
    pub url: &'a str,
    pub query: &'a str,
    pub variables: Option<&'a str>,
    pub auth: Option<&'a str>,
    pub call: CallSettings<'a>,
}

pub struct GraphqlCall {
    spec: RequestSpec,
    query: String,
    variables: Option<Mapping>,
}

/// The largest answer read.
const MAX_ANSWER: usize = 16 << 20;

/// `extensions.code` values that mean "not now" rather than "never".
const TRANSIENT_CODES: &[&str] = &[
    "THROTTLED",
    "RATE_LIMITED",
    "TOO_MANY_REQUESTS",
    "SERVICE_UNAVAILABLE",
    "TIMEOUT",
];

impl GraphqlCall {
    pub fn build(
        client: &HttpClient,
        resources: &Resources,
        parts: GraphqlParts<'_>,
    ) -> Result<GraphqlCall, Vec<BuildError>> {
        let mut errors = Vec::new();
        let spec = RequestSpec::build(
            client,
            resources,
            Parts {
                url: parts.url,
                method: "POST",
                auth: parts.auth,
                call: parts.call,
            },
        )
        .map_err(|e| errors.extend(e))
        .ok();
        if parts.query.trim().is_empty() {
            errors.push(BuildError::new("query", "the query document is empty"));
        }
        let variables = parts.variables.and_then(|v| {
            Mapping::compile(v)
                .map_err(|d| errors.extend(BuildError::from_diagnostics("variables", d)))
                .ok()
        });
        match spec {
            Some(spec) if errors.is_empty() => Ok(GraphqlCall {
                spec,
                query: parts.query.to_string(),
                variables,
            }),
            _ => Err(errors),
        }
    }

    pub fn reads_metadata(&self) -> bool {
        self.spec.reads_metadata() || self.variables.as_ref().is_some_and(Mapping::reads_metadata)
    }

    /// One call with the message: its `data`, or how the attempt failed.
    pub async fn call(&self, message: &Message) -> Result<Value, Attempt> {
        let fatal = |reason: String| Attempt::Fatal {
            reason,
            response: None,
        };
        // Variables: the expression's object, else the message when it is an object.
        let variables = match &self.variables {
            Some(expr) => expr
                .eval(&message.value, &message.metadata)
                .map_err(|e| fatal(format!("variables: {e}")))?,
            None => match &message.value {
                Value::Object(_) => message.value.clone(),
                _ => Value::Object(Default::default()),
            },
        };
        if !matches!(variables, Value::Object(_)) {
            return Err(fatal("variables must be an object".into()));
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "query": self.query,
            "variables": variables,
        }))
        .map_err(|e| fatal(e.to_string()))?;
        let uri = self
            .spec
            .uri(&message.value, &message.metadata)
            .map_err(fatal)?;
        let shown = self.spec.shown(&uri);
        let response = self
            .spec
            .success(
                &uri,
                &Method::POST,
                (&message.value, &message.metadata),
                Bytes::from(body),
                Some("application/json"),
                MAX_ANSWER,
                &[],
            )
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(response.body())
            .map_err(|e| fatal(format!("POST {shown}: the answer is not JSON: {e}")))?;
        if let Some(errors) = answer.get("errors").and_then(|e| e.as_array())
            && !errors.is_empty()
        {
            let messages: Vec<&str> = errors
                .iter()
                .map(|e| {
                    e.get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or("(no message)")
                })
                .collect();
            let excerpt =
                String::from_utf8_lossy(&response.body()[..response.body().len().min(2048)])
                    .into_owned();
            let reason = format!("POST {shown}: GraphQL errors: {}", messages.join("; "));
            let answer = Some(Answer {
                status: response.status().as_u16(),
                excerpt,
            });
            // Rate limits and outages reported inside a 200 (`extensions.code`) are worth a retry.
            let transient = errors.iter().all(|e| {
                e.pointer("/extensions/code")
                    .and_then(|c| c.as_str())
                    .is_some_and(|c| TRANSIENT_CODES.contains(&c))
            });
            return Err(if transient {
                Attempt::Retryable {
                    reason,
                    retry_after: None,
                    response: answer,
                }
            } else {
                Attempt::Fatal {
                    reason,
                    response: answer,
                }
            });
        }
        let data = answer
            .get("data")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        serde_json::from_value(data).map_err(|e| fatal(e.to_string()))
    }
}
