//! `fallback`: tries its outputs in order until one accepts the message. One attempt tries
//! each once; the fallback's own `retry` (the usual defaults) decides about the next attempt,
//! and an output inside it may not set a `retry` of its own. When none accepts, the attempt is
//! retryable if any refusal was, and names every output's reason.
//!
//! ```yaml
//! output:
//!   fallback:
//!     outputs:
//!       - http_client: { url: "https://primary.example.com/orders" }
//!       - http_client: { url: "https://standby.example.com/orders" }
//!     retry: { max_attempts: 3 }
//! ```

use super::{Output, StrategyConfig, accepted, combine, send_boxed};
use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

// `outputs` and `retry`, as every strategy has them (no `///`: a described newtype would be a
// schema definition of its own).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Config(pub StrategyConfig);

impl super::Spec for Config {
    type Built = Fallback;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.0.retry)
    }

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Fallback, Vec<BuildError>> {
        Ok(Fallback {
            outputs: self.0.build_list(shared, resources)?,
        })
    }
}

pub struct Fallback {
    outputs: Vec<(String, Output)>,
}

impl Fallback {
    pub(super) fn inner(&self) -> Vec<super::Inner<'_>> {
        super::Inner::list("in order, until one accepts", &self.outputs)
    }
}

impl crate::core::Output for Fallback {
    fn reads_metadata(&self) -> bool {
        self.outputs
            .iter()
            .any(|(_, o)| crate::core::Output::reads_metadata(o))
    }

    async fn send(&self, message: &Message) -> Attempt {
        let mut failures = Vec::new();
        for (id, output) in &self.outputs {
            let outcome = send_boxed(output, message).await;
            if accepted(&outcome) {
                if !failures.is_empty() {
                    tracing::warn!(component = id, id = %message.id, "delivered to a fallback output");
                }
                return outcome;
            }
            failures.push((id.as_str(), outcome));
        }
        combine(failures)
    }
}
