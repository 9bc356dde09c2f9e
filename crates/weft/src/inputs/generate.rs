//! `generate`: makes a message with a VRL program, every `interval` or on a `cron` schedule,
//! forever or `count` times. The program starts from an empty object; what `.` holds at the end
//! is the message.
//!
//! ```yaml
//! input:
//!   generate:
//!     mapping: |
//!       .id = uuid_v4()
//!       .at = now()
//!     interval: 5s          # or cron: "0 */5 * * * *" (seconds field optional)
//!     count: 10             # omit to run until shutdown
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::Feed;
use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Message;
use crate::core::mapping::{Mapping, Outcome, empty_object};
use crate::core::schedule::Schedule;
use crate::core::{Output, Processor};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "GenerateInput")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// VRL program that builds each message.
    pub mapping: String,
    /// Time between messages; the first is made at once. Default 1s when no `cron` is given.
    #[serde(default)]
    pub interval: Option<Dur>,
    /// A cron schedule instead of `interval` (5 fields, or 6 with seconds first), in UTC.
    #[serde(default)]
    pub cron: Option<String>,
    /// How many messages to make; omit for no end.
    #[serde(default)]
    pub count: Option<u64>,
}

pub struct Generate {
    mapping: Mapping,
    schedule: Schedule,
    count: Option<u64>,
}

impl super::Spec for Config {
    type Built = Generate;

    fn build(self, _shared: &Shared, _resources: &Resources) -> Result<Generate, Vec<BuildError>> {
        let mut errors = Vec::new();
        let mapping = Mapping::compile(&self.mapping)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("mapping", d)))
            .ok();
        let schedule = Schedule::from_config(
            self.interval.as_ref(),
            self.cron.as_deref(),
            Duration::from_secs(1),
        )
        .map_err(|e| errors.extend(e))
        .ok();
        match (mapping, schedule) {
            (Some(mapping), Some(schedule)) if errors.is_empty() => Ok(Generate {
                mapping,
                schedule,
                count: self.count,
            }),
            _ => Err(errors),
        }
    }
}

impl super::Source for Generate {
    fn uses_store(&self) -> bool {
        false
    }

    async fn run<P: Processor, O: Output>(&self, feed: Feed<P, O>) -> std::io::Result<()> {
        let mut made = 0u64;
        let mut ticker = self.schedule.ticker();
        while self.count.is_none_or(|n| made < n) {
            tokio::select! {
                biased;
                _ = feed.shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            made += 1;
            let mut value = empty_object();
            let mut metadata = empty_object();
            match self.mapping.run(&mut value, &mut metadata) {
                Ok(Outcome::Done(_)) => {
                    let mut message = Message::new(value);
                    message.metadata = metadata;
                    if !feed.push(message).await {
                        return Ok(());
                    }
                }
                Ok(Outcome::Aborted) => {}
                Err(error) => {
                    feed.flow.count_rejected(&error);
                    tracing::error!(flow = %feed.flow.name, component = "input.generate", %error, "mapping failed; no message made");
                }
            }
        }
        Ok(())
    }
}
