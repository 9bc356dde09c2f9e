//! `graphql`: sends each message to a GraphQL API as a mutation (or any operation), with the
//! message — or what `variables` makes of it — as the variables. A 200 answer with `errors` is
//! a failure (the errors' messages are the reason, kept with a dead letter); other answers and
//! retries are as for `http_client`.
//!
//! ```yaml
//! output:
//!   graphql:
//!     url: https://api.example.com/graphql
//!     auth: shop                        # resources.auth.shop
//!     query: |
//!       mutation Upsert($input: CustomerInput!) { upsertCustomer(input: $input) { id } }
//!     variables: '{ "input": { "email": .email, "name": .name } }'
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::graphql::{GraphqlCall, GraphqlParts};
use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "GraphqlCall")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The GraphQL endpoint.
    pub url: String,
    /// The query document.
    pub query: String,
    /// A VRL expression giving the variables object; default: the message (when an object).
    #[serde(default)]
    pub variables: Option<String>,
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
    /// Processor only: VRL program merging the answer (`%response`) into the message.
    #[serde(default)]
    pub result: Option<String>,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Config {
    /// As an output: `result` has nothing to merge into.
    pub fn build_output(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<GraphqlOutput, Vec<BuildError>> {
        super::no_result(&self.result)?;
        self.build(client, resources)
    }

    pub fn build(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<GraphqlOutput, Vec<BuildError>> {
        Ok(GraphqlOutput(GraphqlCall::build(
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
        )?))
    }
}

pub struct GraphqlOutput(pub GraphqlCall);

impl GraphqlOutput {
    pub fn reads_metadata(&self) -> bool {
        self.0.reads_metadata()
    }

    pub async fn send(&self, message: &Message) -> Attempt {
        match self.0.call(message).await {
            Ok(_) => Attempt::Delivered,
            Err(failed) => failed,
        }
    }
}
