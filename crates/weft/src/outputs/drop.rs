//! `drop`: accepts every message and sends it nowhere. For flows whose work is their side
//! effects (a `log` step), and for measuring a pipeline without a destination.
//!
//! ```yaml
//! output:
//!   drop: {}
//! ```

use serde::Deserialize;

use crate::clients::{Resources, Shared};
use crate::config::BuildError;
use crate::core::retry::RetryConfig;
use crate::core::{Attempt, Message};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "DropOutput")]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl super::Spec for Config {
    type Built = DropOutput;

    fn retry_config(&self) -> Option<&RetryConfig> {
        None
    }

    fn build(
        &self,
        _shared: &Shared,
        _resources: &Resources,
    ) -> Result<DropOutput, Vec<BuildError>> {
        Ok(DropOutput)
    }
}

pub struct DropOutput;

impl crate::core::Output for DropOutput {
    async fn send(&self, _message: &Message) -> Attempt {
        Attempt::Delivered
    }

    fn reads_metadata(&self) -> bool {
        false
    }
}
