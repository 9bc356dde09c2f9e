//! `http`: calls an API in the middle of a pipeline and merges its answer into the message —
//! the enricher. It uses the same request stack as `http_client` (templates, `auth`,
//! `rate_limit`, `circuit_breaker`) and its retry policy: an answer that can be retried (408,
//! 429, 5xx, no answer) is retried in place with backoff; one that cannot (another 4xx, or
//! retries used up) fails the message.
//!
//! `result` is a VRL program run on the message with the answer in `%response` (`.status`,
//! `.body` — parsed JSON when it is JSON, else the text); by default the answer's body
//! becomes the message. A `GET` sends no body; other methods send the message.
//!
//! ```yaml
//! pipeline:
//!   - http:
//!       url: "https://crm.example.com/api/customers/{{ .customer_id }}"
//!       auth: crm
//!       result: |
//!         .customer = %response.body
//! ```

use std::time::Duration;

use http::Method;
use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::request::{Parts, RequestSpec};
use crate::config::BuildError;
use crate::config::units::{Dur, Size};
use crate::core::Context;
use crate::core::Step;
use crate::core::body::Encoding;
use crate::core::mapping::{empty_object, insert};
use crate::core::{Attempt, Message, StepError, Value};

crate::clients::call::call_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "HttpProcessor")]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        /// The URL; may contain `{{ expression }}` parts.
        pub url: String,
        /// The largest answer read.
        #[serde(default = "default_max_body")]
        pub max_body_size: Size,
    }
    with { method, format, auth, retry, result }
}

fn default_method() -> String {
    "GET".into()
}
fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_max_body() -> Size {
    Size(10 << 20)
}

pub struct Http(super::ApiStep<Call>);

/// The request of one `http` step.
struct Call {
    spec: RequestSpec,
    encoding: Encoding,
    max_body: usize,
}

impl super::Spec for Config {
    type Built = Http;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Http, Vec<BuildError>> {
        let client = &shared.http;
        let encoding = Encoding::configured(self.format, &self.headers)
            .map_err(|e| vec![BuildError::new("format", e)])?;
        let call = RequestSpec::build(
            client,
            resources,
            Parts {
                url: &self.url,
                method: &self.method,
                auth: self.auth.as_deref(),
                call: self.call(),
            },
        )
        .map(|spec| Call {
            spec,
            encoding,
            max_body: self.max_body_size.0 as usize,
        });
        super::ApiStep::build(call, &self.retry, self.result.as_deref()).map(Http)
    }
}

impl Http {
    async fn apply(&self, message: Message) -> Result<Option<Message>, StepError> {
        let (status, body) = self.0.ask(|| self.0.call.call(&message)).await?;
        let mut response = empty_object();
        insert(&mut response, "status", Value::Integer(i64::from(status)));
        insert(&mut response, "body", body.clone());
        self.0.merge(message, response, body)
    }
}

impl crate::core::Processor for Http {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.0.call.spec.reads_metadata() || self.0.result_reads_metadata()
    }
}

impl Call {
    /// One call: the answer (status, body) or how the attempt failed.
    async fn call(&self, message: &Message) -> Result<(u16, Value), Attempt> {
        let uri = self
            .spec
            .uri(&message.value, &message.metadata)
            .map_err(|reason| Attempt::Fatal {
                reason,
                response: None,
            })?;
        let method = &self.spec.method;
        let (body, content_type) = if method == Method::GET || method == Method::HEAD {
            (bytes::Bytes::new(), None)
        } else {
            let (body, content_type) =
                self.encoding
                    .encode(&message.value)
                    .map_err(|reason| Attempt::Fatal {
                        reason,
                        response: None,
                    })?;
            (body, Some(content_type))
        };
        let response = self
            .spec
            .success(
                &uri,
                method,
                (&message.value, &message.metadata),
                body,
                content_type.as_deref(),
                self.max_body,
                &[],
            )
            .await?;
        let body = serde_json::from_slice::<Value>(response.body())
            .unwrap_or_else(|_| Value::Bytes(response.body().clone()));
        Ok((response.status().as_u16(), body))
    }
}
