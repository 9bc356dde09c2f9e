//! `openapi`: calls an OpenAPI operation mid-pipeline — the same settings as the `openapi`
//! output (document, `operationId`, parameters and body validated first, security mapped to
//! auth profiles, `validate_response`) — and merges the answer into the message with VRL
//! (`%response.status`, `%response.body`); by default the answer's body becomes the message.
//! Answers that can be retried are retried in place, as in `http`.
//!
//! ```yaml
//! pipeline:
//!   - openapi:
//!       spec: ./crm.openapi.yaml
//!       operation: getContact
//!       parameters: '{ "id": .contact_id }'
//!       validate_response: true
//!       result: .contact = %response.body
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::openapi::call::{OpenApiCall, openapi_config};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Context;
use crate::core::Step;
use crate::core::mapping::{empty_object, insert};
use crate::core::{Message, StepError, Value};

openapi_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "OpenapiProcessor")]
    #[serde(deny_unknown_fields)]
    pub struct Config {}
    with { retry, result }
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

pub struct OpenApi(super::ApiStep<OpenApiCall>);

impl super::Spec for Config {
    type Built = OpenApi;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<OpenApi, Vec<BuildError>> {
        let client = &shared.http;
        super::ApiStep::build(
            OpenApiCall::build(client, resources, self.openapi()),
            &self.retry,
            self.result.as_deref(),
        )
        .map(OpenApi)
    }
}

impl OpenApi {
    async fn apply(&self, message: Message) -> Result<Option<Message>, StepError> {
        let (status, body) = self.0.ask(|| self.0.call.call(&message)).await?;
        let mut response = empty_object();
        insert(&mut response, "status", Value::Integer(i64::from(status)));
        insert(&mut response, "body", body.clone());
        self.0.merge(message, response, body)
    }
}

impl crate::core::Processor for OpenApi {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.0.call.reads_metadata() || self.0.result_reads_metadata()
    }
}
