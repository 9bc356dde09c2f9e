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
use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::{Attempt, Message};

impl StrategyConfig {
    pub fn build_fallback(
        &self,
        shared: &Shared,
        resources: &Resources,
    ) -> Result<Fallback, Vec<BuildError>> {
        Ok(Fallback {
            outputs: self.build_list(shared, resources)?,
        })
    }
}

pub struct Fallback {
    outputs: Vec<(String, Output)>,
}

impl Fallback {
    pub fn reads_metadata(&self) -> bool {
        self.outputs
            .iter()
            .any(|(_, o)| crate::core::Output::reads_metadata(o))
    }

    pub async fn send(&self, message: &Message) -> Attempt {
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
