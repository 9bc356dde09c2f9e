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

use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::soap::{SoapCall, soap_config};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Context;
use crate::core::Step;
use crate::core::mapping::{empty_object, insert};
use crate::core::{Message, StepError};

soap_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "SoapProcessor")]
    #[serde(deny_unknown_fields)]
    pub struct Config {}
    with { retry, result }
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

pub struct Soap(super::ApiStep<SoapCall>);

impl super::Spec for Config {
    type Built = Soap;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Soap, Vec<BuildError>> {
        let client = &shared.http;
        super::ApiStep::build(
            SoapCall::build(client, resources, self.soap()),
            &self.retry,
            self.result.as_deref(),
        )
        .map(Soap)
    }
}

impl Soap {
    async fn apply(&self, message: Message) -> Result<Option<Message>, StepError> {
        let body = self.0.ask(|| self.0.call.call(&message)).await?;
        let mut response = empty_object();
        insert(&mut response, "body", body.clone());
        self.0.merge(message, response, body)
    }
}

impl crate::core::Processor for Soap {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.0.call.reads_metadata() || self.0.result_reads_metadata()
    }
}
