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

// `try` and `catch` take the same block. (No `///` on these: a described newtype would be a
// schema definition of its own.)
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct TryConfig(pub Config);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct CatchConfig(pub Config);

pub struct Block {
    steps: Vec<ProcessorSlot<Processor>>,
}

impl Config {
    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Block, Vec<BuildError>> {
        Ok(Block {
            steps: build_steps(&self.0, "", shared, resources)?,
        })
    }
}

impl Block {
    async fn run(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(Step::from_messages(
            run_nested(&self.steps, message, cx).await?,
        ))
    }
}

/// `try`: its steps, stopping at the first failure.
pub struct Try(Block);

/// `catch`: its steps, on a failed message only.
pub struct Catch(Block);

impl super::Spec for TryConfig {
    type Built = Try;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Try, Vec<BuildError>> {
        self.0.build(shared, resources).map(Try)
    }

    fn nested(built: &Try) -> Vec<super::Nested<'_>> {
        vec![super::Nested::new("try", &built.0.steps)]
    }
}

impl super::Spec for CatchConfig {
    type Built = Catch;

    fn build(&self, shared: &Shared, resources: &Resources) -> Result<Catch, Vec<BuildError>> {
        self.0.build(shared, resources).map(Catch)
    }

    fn nested(built: &Catch) -> Vec<super::Nested<'_>> {
        vec![super::Nested::new("on failure", &built.0.steps)]
    }
}

impl crate::core::Processor for Try {
    async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        self.0.run(message, cx).await
    }

    fn reads_metadata(&self) -> bool {
        self.0
            .steps
            .iter()
            .any(|s| crate::core::Processor::reads_metadata(&s.processor))
    }
}

impl crate::core::Processor for Catch {
    async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        self.0.run(message, cx).await
    }

    // Its programs read `%error`, which the flow sets: metadata must exist.
    fn reads_metadata(&self) -> bool {
        true
    }

    fn catches(&self) -> bool {
        true
    }
}
