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
use crate::core::mapping::{empty_object, insert};
use crate::core::{Message, StepError};
use crate::outputs::soap::SoapOutput;

/// The `soap` output's settings, `result` included.
pub type Config = crate::outputs::soap::Config;

pub struct Soap(super::ApiStep<SoapOutput>);

pub fn build(
    config: &Config,
    client: &HttpClient,
    resources: &Resources,
) -> Result<Soap, Vec<BuildError>> {
    super::ApiStep::build(
        config.build(client, resources),
        &config.retry,
        config.result.as_deref(),
    )
    .map(Soap)
}

impl Soap {
    pub fn reads_metadata(&self) -> bool {
        self.0.call.reads_metadata() || self.0.result_reads_metadata()
    }

    pub async fn process(&self, message: Message) -> Result<Option<Message>, StepError> {
        let body = self.0.ask(|| self.0.call.0.call(&message)).await?;
        let mut response = empty_object();
        insert(&mut response, "body", body.clone());
        self.0.merge(message, response, body)
    }
}
