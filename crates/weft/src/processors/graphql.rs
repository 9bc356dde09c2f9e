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
use crate::clients::Shared;
use crate::clients::graphql::{GraphqlCall, graphql_config};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Context;
use crate::core::Step;
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

impl super::Spec for Config {
    type Built = Graphql;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Graphql, Vec<BuildError>> {
        let client = &shared.http;
        super::ApiStep::build(
            GraphqlCall::build(client, resources, self.graphql()),
            &self.retry,
            self.result.as_deref(),
        )
        .map(Graphql)
    }
}

impl Graphql {
    async fn apply(&self, message: Message) -> Result<Option<Message>, StepError> {
        let data = self.0.ask(|| self.0.call.call(&message)).await?;
        let mut response = empty_object();
        insert(&mut response, "data", data.clone());
        self.0.merge(message, response, data)
    }
}

impl crate::core::Processor for Graphql {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.0.call.reads_metadata() || self.0.result_reads_metadata()
    }
}
