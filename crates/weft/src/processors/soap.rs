//! `soap`: calls a SOAP operation mid-pipeline — the `soap` output's settings — and merges the
//! answer's Body (as a value, see `core::xml`) into the message with VRL (`%response.body`); by
//! default the Body becomes the message. Faults fail the message (`Server` / `Receiver` faults
//! are retried in place first).
//!
//! ```yaml
//! pipeline:
//!   - soap:
//!       url: https://erp.example.com/services/Customers
//!       action: urn:GetCustomer
//!       body: '<GetCustomer xmlns="urn:erp"><Id>{{ customer_id }}</Id></GetCustomer>'
//!       result: .customer = %response.body.GetCustomerResponse.Customer
//! ```

use crate::clients::Resources;
use crate::clients::http::HttpClient;
use crate::config::BuildError;
use crate::core::mapping::{Mapping, empty_object, insert};
use crate::core::retry::{self, RetryPolicy};
use crate::core::{MappingError, Message, StepError};
use crate::outputs::soap::SoapOutput;

/// The `soap` output's settings, `result` included.
pub type Config = crate::outputs::soap::Config;

pub struct Soap {
    call: SoapOutput,
    retry: RetryPolicy,
    result: Option<Mapping>,
}

pub fn build(
    config: &Config,
    client: &HttpClient,
    resources: &Resources,
) -> Result<Soap, Vec<BuildError>> {
    let mut errors = Vec::new();
    let call = config
        .build(client, resources)
        .map_err(|e| errors.extend(e))
        .ok();
    let result = super::compile_result(config.result.as_deref(), &mut errors);
    let retry = super::in_place_policy(&config.retry, &mut errors);
    match (call, retry) {
        (Some(call), Some(retry)) if errors.is_empty() => Ok(Soap {
            call,
            retry,
            result,
        }),
        _ => Err(errors),
    }
}

impl Soap {
    pub fn reads_metadata(&self) -> bool {
        self.call.reads_metadata() || self.result.as_ref().is_some_and(Mapping::reads_metadata)
    }

    pub async fn process(&self, message: Message) -> Result<Option<Message>, StepError> {
        let body = retry::in_place(&self.retry, || self.call.0.call(&message))
            .await
            .map_err(MappingError)?;
        let mut response = empty_object();
        insert(&mut response, "body", body.clone());
        super::merge_answer(self.result.as_ref(), message, response, body)
    }
}
