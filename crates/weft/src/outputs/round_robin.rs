//! `round_robin`: each attempt goes to the next of its outputs in turn (one turn counter for all
//! messages), so load is spread and a retry (by the strategy's own `retry`; an inner output may
//! not set one) usually goes to another output than the one that refused.
//!
//! ```yaml
//! output:
//!   round_robin:
//!     outputs:
//!       - http_client: { url: "http://10.0.0.1/ingest" }
//!       - http_client: { url: "http://10.0.0.2/ingest" }
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Output, StrategyConfig, combine, send_boxed};
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
    type Built = RoundRobin;

    fn retry_config(&self) -> Option<&RetryConfig> {
        Some(&self.0.retry)
    }

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<RoundRobin, Vec<BuildError>> {
        Ok(RoundRobin {
            outputs: self.0.build_list(shared, resources)?,
            next: AtomicUsize::new(0),
        })
    }
}

pub struct RoundRobin {
    outputs: Vec<(String, Output)>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub(super) fn inner(&self) -> Vec<super::Inner<'_>> {
        super::Inner::list("in turn", &self.outputs)
    }
}

impl crate::core::Output for RoundRobin {
    fn reads_metadata(&self) -> bool {
        self.outputs
            .iter()
            .any(|(_, o)| crate::core::Output::reads_metadata(o))
    }

    async fn send(&self, message: &Message) -> Attempt {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.outputs.len();
        let (id, output) = &self.outputs[turn];
        combine(vec![(id.as_str(), send_boxed(output, message).await)])
    }
}
