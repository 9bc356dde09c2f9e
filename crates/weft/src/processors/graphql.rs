//! `graphql`: queries a GraphQL API mid-pipeline and merges the answer's `data` into the
//! message with VRL (`%response.data`); by default `data` becomes the message. A 200 with
//! `errors` fails the message; answers that can be retried are retried in place, as in `http`.
//!
//! ```yaml
//! pipeline:
//!   - graphql:
//!       url: https://api.example.com/graphql
//!       query: 'query($id: ID!) { customer(id: $id) { name tier } }'
//!       variables: '{ "id": .customer_id }'
//!       result: .customer = %response.data.customer
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::graphql::{GraphqlCall, GraphqlParts};
use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::mapping::{Mapping, empty_object, insert};
use crate::core::retry::{self, RetryConfig, RetryPolicy};
use crate::core::{MappingError, Message, StepError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    /// The query document.
    pub query: String,
    /// A VRL expression giving the variables object; default: the message (when an object).
    #[serde(default)]
    pub variables: Option<String>,
    /// VRL program merging `%response.data` into the message.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<String>,
    #[serde(default)]
    pub circuit_breaker: Option<String>,
    /// How to connect: CA file, client certificate (mTLS), lowest TLS version, timeouts, pool.
    #[serde(default)]
    pub client: crate::clients::http::ClientConfig,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

pub struct Graphql {
    call: GraphqlCall,
    retry: RetryPolicy,
    pub(super) result: Option<Mapping>,
}

impl Config {
    pub fn build(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<Graphql, Vec<BuildError>> {
        let mut errors = Vec::new();
        let call = GraphqlCall::build(
            client,
            resources,
            GraphqlParts {
                url: &self.url,
                query: &self.query,
                variables: self.variables.as_deref(),
                headers: &self.headers,
                timeout: self.timeout.0,
                auth: self.auth.as_deref(),
                rate_limit: self.rate_limit.as_deref(),
                circuit_breaker: self.circuit_breaker.as_deref(),
                client: &self.client,
            },
        )
        .map_err(|e| errors.extend(e))
        .ok();
        let result = super::compile_result(self.result.as_deref(), &mut errors);
        let retry = super::in_place_policy(&self.retry, &mut errors);
        match (call, retry) {
            (Some(call), Some(retry)) if errors.is_empty() => Ok(Graphql {
                call,
                retry,
                result,
            }),
            _ => Err(errors),
        }
    }
}

impl Graphql {
    pub fn reads_metadata(&self) -> bool {
        self.call.reads_metadata() || self.result.as_ref().is_some_and(Mapping::reads_metadata)
    }

    pub async fn process(&self, message: Message) -> Result<Option<Message>, StepError> {
        let data = retry::in_place(&self.retry, || self.call.call(&message))
            .await
            .map_err(MappingError)?;
        let mut response = empty_object();
        insert(&mut response, "data", data.clone());
        super::merge_answer(self.result.as_ref(), message, response, data)
    }
}
