//! `soap`: calls a SOAP operation per message. The Body's content is a MiniJinja template over
//! the message (values XML-escaped); weft wraps it in a SOAP 1.1 or 1.2 envelope with the right
//! content type and action. A SOAP Fault fails the attempt with its code and reason (`Server` /
//! `Receiver` faults are retried); other answers and retries are as for `http_client`.
//!
//! ```yaml
//! output:
//!   soap:
//!     url: https://erp.example.com/services/Orders
//!     version: "1.1"                    # or "1.2"
//!     action: urn:CreateOrder
//!     body: |
//!       <CreateOrder xmlns="urn:erp"><Id>{{ id }}</Id><Total>{{ total }}</Total></CreateOrder>
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::soap::{SoapCall, soap_config};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

soap_config! {
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[schemars(rename = "SoapOutput")]
    #[serde(deny_unknown_fields)]
    pub struct Config {}
    with { retry }
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl super::Spec for Config {
    type Built = SoapOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.retry)
    }

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<SoapOutput, Vec<BuildError>> {
        let client = &shared.http;
        SoapCall::build(client, resources, self.soap()).map(SoapOutput)
    }
}

pub struct SoapOutput(SoapCall);

impl crate::core::Output for SoapOutput {
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
