//! `soap`: calls a SOAP operation mid-pipeline and merges the answer's Body (as a value, see
//! `core::xml`) into the message with VRL (`%response.body`); by default the Body becomes the
//! message. Faults fail the message (`Server` / `Receiver` faults are retried in place first).
//!
//! ```yaml
//! pipeline:
//!   - soap:
//!       url: https://erp.example.com/services/Customers
//!       action: urn:GetCustomer
//!       body: '<GetCustomer xmlns="urn:erp"><Id>{{ customer_id }}</Id></GetCustomer>'
//!       result: .customer = %response.body.GetCustomerResponse.Customer
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::http::HttpClient;
use crate::clients::soap::{SoapCall, SoapParts, SoapVersion};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::mapping::{Mapping, empty_object, insert};
use crate::core::retry::{self, RetryConfig, RetryPolicy};
use crate::core::{MappingError, Message, StepError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    #[serde(default)]
    pub version: SoapVersion,
    #[serde(default)]
    pub action: Option<String>,
    /// MiniJinja template of the Body's content.
    pub body: String,
    /// VRL program merging `%response.body` into the message.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<String>,
    #[serde(default)]
    pub circuit_breaker: Option<String>,
    /// How to connect: CA file, client certificate (mTLS), lowest TLS version, timeouts, pool.
    #[serde(default)]
    pub client: crate::clients::http::ClientConfig,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

pub struct Soap {
    call: SoapCall,
    retry: RetryPolicy,
    result: Option<Mapping>,
}

impl Config {
    pub fn build(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<Soap, Vec<BuildError>> {
        let mut errors = Vec::new();
        let call = SoapCall::build(
            client,
            resources,
            SoapParts {
                url: &self.url,
                version: self.version,
                action: self.action.as_deref(),
                body: &self.body,
                headers: &self.headers,
                timeout: self.timeout.0,
                auth: self.auth.as_deref(),
                rate_limit: self.rate_limit.as_deref(),
                circuit_breaker: self.circuit_breaker.as_deref(),
                client: &self.client,
            },
        )
        .map_err(|e| errors.extend(e))
        .ok();
        let result = super::compile_result(self.result.as_deref(), &mut errors);
        let retry = super::in_place_policy(&self.retry, &mut errors);
        match (call, retry) {
            (Some(call), Some(retry)) if errors.is_empty() => Ok(Soap {
                call,
                retry,
                result,
            }),
            _ => Err(errors),
        }
    }
}

impl Soap {
    pub fn reads_metadata(&self) -> bool {
        self.call.reads_metadata() || self.result.as_ref().is_some_and(Mapping::reads_metadata)
    }

    pub async fn process(&self, message: Message) -> Result<Option<Message>, StepError> {
        let body = retry::in_place(&self.retry, || self.call.call(&message))
            .await
            .map_err(MappingError)?;
        let mut response = empty_object();
        insert(&mut response, "body", body.clone());
        super::merge_answer(self.result.as_ref(), message, response, body)
    }
}
