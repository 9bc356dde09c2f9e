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

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::http::HttpClient;
use crate::clients::soap::{SoapCall, SoapParts, SoapVersion};
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SoapCall")]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    /// `"1.1"` (default) or `"1.2"`.
    #[serde(default)]
    pub version: SoapVersion,
    /// The operation's action (SOAPAction).
    #[serde(default)]
    pub action: Option<String>,
    /// MiniJinja template of the Body's content.
    pub body: String,
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
    /// Processor only: VRL program merging the answer (`%response`) into the message.
    #[serde(default)]
    pub result: Option<String>,
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

impl Config {
    /// As an output: `result` has nothing to merge into.
    pub fn build_output(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<SoapOutput, Vec<BuildError>> {
        super::no_result(&self.result)?;
        self.build(client, resources)
    }

    pub fn parts(&self) -> SoapParts<'_> {
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
        }
    }

    pub fn build(
        &self,
        client: &HttpClient,
        resources: &Resources,
    ) -> Result<SoapOutput, Vec<BuildError>> {
        Ok(SoapOutput(SoapCall::build(
            client,
            resources,
            self.parts(),
        )?))
    }
}

pub struct SoapOutput(pub SoapCall);

impl SoapOutput {
    pub fn reads_metadata(&self) -> bool {
        self.0.reads_metadata()
    }

    pub async fn send(&self, message: &Message) -> Attempt {
        match self.0.call(message).await {
            Ok(_) => Attempt::Delivered,
            Err(failed) => failed,
        }
    }
}
