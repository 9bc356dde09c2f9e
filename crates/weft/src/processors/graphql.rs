//! `graphql`: queries a GraphQL API mid-pipeline — the `graphql` output's settings — and merges
//! the answer's `data` into the message with VRL (`%response.data`); by default `data` becomes
//! the message. A 200 with `errors` fails the message (unless they say "not now"); answers that
//! can be retried are retried in place, as in `http`.
//!
//! ```yaml
//! pipeline:
//!   - graphql:
//!       url: https://api.example.com/graphql
//!       query: 'query($id: ID!) { customer(id: $id) { name tier } }'
//!       variables: '{ "id": .customer_id }'
//!       result: .customer = %response.data.customer
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::graphql::{GraphqlCall, graphql_config};
use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::mapping::{empty_object, insert};
use crate::core::{Message, StepError};

graphql_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "GraphqlProcessor")]
    #[serde(deny_unknown_fields)]
    pub struct Config {}
    with { retry, result }
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

pub struct Graphql(super::ApiStep<GraphqlCall>);

pub fn build(
    config: &Config,
    client: &HttpClient,
    resources: &Resources,
) -> Result<Graphql, Vec<BuildError>> {
    super::ApiStep::build(
        GraphqlCall::build(client, resources, config.graphql()),
        &config.retry,
        config.result.as_deref(),
    )
    .map(Graphql)
}

impl Graphql {
    pub fn reads_metadata(&self) -> bool {
        self.0.call.reads_metadata() || self.0.result_reads_metadata()
    }

    pub async fn process(&self, message: Message) -> Result<Option<Message>, StepError> {
        let data = self.0.ask(|| self.0.call.call(&message)).await?;
        let mut response = empty_object();
        insert(&mut response, "data", data.clone());
        self.0.merge(message, response, data)
    }
}
