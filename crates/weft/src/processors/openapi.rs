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

use crate::clients::Resources;
use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::core::mapping::{Mapping, empty_object, insert};
use crate::core::retry::{self, RetryPolicy};
use crate::core::{MappingError, Message, StepError, Value};
use crate::outputs::openapi::OpenApiOutput;

/// The `openapi` output's settings, `result` included.
pub type Config = crate::outputs::openapi::Config;

pub struct OpenApi {
    call: OpenApiOutput,
    retry: RetryPolicy,
    result: Option<Mapping>,
}

pub fn build(
    config: &Config,
    client: &HttpClient,
    resources: &Resources,
) -> Result<OpenApi, Vec<BuildError>> {
    let mut errors = Vec::new();
    let call = config
        .build(client, resources)
        .map_err(|e| errors.extend(e))
        .ok();
    let result = super::compile_result(config.result.as_deref(), &mut errors);
    let retry = super::in_place_policy(&config.retry, &mut errors);
    match (call, retry) {
        (Some(call), Some(retry)) if errors.is_empty() => Ok(OpenApi {
            call,
            retry,
            result,
        }),
        _ => Err(errors),
    }
}

impl OpenApi {
    pub fn reads_metadata(&self) -> bool {
        self.call.reads_metadata() || self.result.as_ref().is_some_and(Mapping::reads_metadata)
    }

    pub async fn process(&self, message: Message) -> Result<Option<Message>, StepError> {
        let (status, body) = retry::in_place(&self.retry, || self.call.call(&message))
            .await
            .map_err(MappingError)?;
        let mut response = empty_object();
        insert(&mut response, "status", Value::Integer(i64::from(status)));
        insert(&mut response, "body", body.clone());
        super::merge_answer(self.result.as_ref(), message, response, body)
    }
}
