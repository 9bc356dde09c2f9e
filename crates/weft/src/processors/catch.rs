//! `try` and `catch`: error handling inside a pipeline.
//!
//! When a step fails, the message is marked failed and the steps after it are skipped, up to
//! the next `catch`. A `catch` runs its processors only on a failed message, with the failure
//! in `%error` (`component`, `reason`), and the message is no longer failed unless a step inside
//! fails again; on a message that did not fail, a `catch` does nothing. A message still failed
//! at the end of the pipeline fails as usual (HTTP 422, logged, or retried and dead-lettered).
//! `try` groups processors: the first failure inside stops the group, and the message leaves
//! it failed (so a whole pipeline behaves as one `try`).
//!
//! ```yaml
//! pipeline:
//!   - try:
//!       - http: { url: "https://crm.example.com/customers/{{ .customer_id }}" }
//!       - map: .customer = %response.body
//!   - catch:
//!       - map: |
//!           .error = %error.reason
//!           .needs_review = true
//! ```

use serde::Deserialize;

use super::{Processor, ProcessorConfig, build_steps};
use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::core::flow::{ProcessorSlot, run_nested};
use crate::core::{Context, Message, Step, StepError};

/// The processors of the block, in order.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ProcessorBlock")]
pub struct Config(pub Vec<ProcessorConfig>);

pub struct Block {
    steps: Vec<ProcessorSlot<Processor>>,
}

impl Config {
    pub fn build(&self, shared: &Shared, resources: &Resources) -> Result<Block, Vec<BuildError>> {
        Ok(Block {
            steps: build_steps(&self.0, "", shared, resources)?,
        })
    }
}

impl Block {
    pub fn steps(&self) -> &[ProcessorSlot<Processor>] {
        &self.steps
    }

    pub fn reads_metadata(&self) -> bool {
        self.steps
            .iter()
            .any(|s| crate::core::Processor::reads_metadata(&s.processor))
    }

    pub async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(Step::from_messages(
            run_nested(&self.steps, message, cx).await?,
        ))
    }
}
