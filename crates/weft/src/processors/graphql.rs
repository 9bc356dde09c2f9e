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

use crate::clients::Resources;
use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::core::mapping::{Mapping, empty_object, insert};
use crate::core::retry::{self, RetryPolicy};
use crate::core::{MappingError, Message, StepError};
use crate::outputs::graphql::GraphqlOutput;

/// The `graphql` output's settings, `result` included.
pub type Config = crate::outputs::graphql::Config;

pub struct Graphql {
    call: GraphqlOutput,
    retry: RetryPolicy,
    result: Option<Mapping>,
}

pub fn build(
    config: &Config,
    client: &HttpClient,
    resources: &Resources,
) -> Result<Graphql, Vec<BuildError>> {
    let mut errors = Vec::new();
    let call = config
        .build(client, resources)
        .map_err(|e| errors.extend(e))
        .ok();
    let result = super::compile_result(config.result.as_deref(), &mut errors);
    let retry = super::in_place_policy(&config.retry, &mut errors);
    match (call, retry) {
        (Some(call), Some(retry)) if errors.is_empty() => Ok(Graphql {
            call,
            retry,
            result,
        }),
        _ => Err(errors),
    }
}

impl Graphql {
    pub fn reads_metadata(&self) -> bool {
        self.call.reads_metadata() || self.result.as_ref().is_some_and(Mapping::reads_metadata)
    }

    pub async fn process(&self, message: Message) -> Result<Option<Message>, StepError> {
        let data = retry::in_place(&self.retry, || self.call.0.call(&message))
            .await
            .map_err(MappingError)?;
        let mut response = empty_object();
        insert(&mut response, "data", data.clone());
        super::merge_answer(self.result.as_ref(), message, response, data)
    }
}
