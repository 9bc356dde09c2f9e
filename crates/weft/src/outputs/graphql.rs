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

use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::graphql::{GraphqlCall, graphql_config};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

graphql_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "GraphqlOutput")]
    #[serde(deny_unknown_fields)]
    pub struct Config {}
    with { retry }
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl super::Spec for Config {
    type Built = GraphqlOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(
        &self,
        shared: &Shared,
        resources: &Resources,
    ) -> Result<GraphqlOutput, Vec<BuildError>> {
        let client = &shared.http;
        GraphqlCall::build(client, resources, self.graphql()).map(GraphqlOutput)
    }
}

pub struct GraphqlOutput(GraphqlCall);

impl crate::core::Output for GraphqlOutput {
    async fn send(&self, message: &Message) -> Attempt {
        match self.0.call(message).await {
            Ok(_) => Attempt::Delivered,
            Err(failed) => failed,
        }
    }

    fn reads_metadata(&self) -> bool {
        self.0.reads_metadata()
    }
}
