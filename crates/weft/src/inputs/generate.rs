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

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;

use super::Feed;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Message;
use crate::core::mapping::{Mapping, Outcome, empty_object};

#[derive(Debug, Deserialize)]
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

enum Schedule {
    Every(Duration),
    Cron(Box<Cron>),
}

pub struct Generate {
    mapping: Mapping,
    schedule: Schedule,
    count: Option<u64>,
}

impl Config {
    pub fn build(&self) -> Result<Generate, Vec<BuildError>> {
        let mut errors = Vec::new();
        let mapping = Mapping::compile(&self.mapping)
            .map_err(|d| errors.extend(BuildError::from_diagnostics("mapping", d)))
            .ok();
        let schedule = match (&self.interval, &self.cron) {
            (Some(_), Some(_)) => {
                errors.push(BuildError::new(
                    "cron",
                    "give either `interval` or `cron`, not both",
                ));
                None
            }
            (_, Some(expr)) => CronParser::builder()
                .seconds(Seconds::Optional)
                .build()
                .parse(expr)
                .map(|c| Schedule::Cron(Box::new(c)))
                .map_err(|e| {
                    errors.push(BuildError::new(
                        "cron",
                        format!("invalid cron `{expr}`: {e}"),
                    ))
                })
                .ok(),
            (Some(Dur(d)), None) if d.is_zero() => {
                errors.push(BuildError::new(
                    "interval",
                    "interval must be more than zero",
                ));
                None
            }
            (interval, None) => Some(Schedule::Every(
                interval.map_or(Duration::from_secs(1), |d| d.0),
            )),
        };
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

impl Generate {
    pub async fn run(&self, feed: Feed) {
        let mut made = 0u64;
        let mut ticker = match &self.schedule {
            Schedule::Every(d) => {
                let mut t = tokio::time::interval(*d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Some(t)
            }
            Schedule::Cron(_) => None,
        };
        // The last cron occurrence fired: the next one is searched after it, so a wall clock that
        // steps back cannot fire the same occurrence twice.
        let mut last_fired = chrono::Utc::now();
        while self.count.is_none_or(|n| made < n) {
            let wait = async {
                match (&mut ticker, &self.schedule) {
                    (Some(t), _) => {
                        t.tick().await;
                    }
                    (None, Schedule::Cron(cron)) => {
                        let now = chrono::Utc::now();
                        match cron.find_next_occurrence(&last_fired.max(now), false) {
                            Ok(next) => {
                                tokio::time::sleep((next - now).to_std().unwrap_or_default()).await;
                                last_fired = next;
                            }
                            Err(_) => std::future::pending().await,
                        }
                    }
                    (None, Schedule::Every(_)) => unreachable!("an interval always has a ticker"),
                }
            };
            tokio::select! {
                biased;
                _ = feed.shutdown.cancelled() => return,
                _ = wait => {}
            }
            made += 1;
            let mut value = empty_object();
            let mut metadata = empty_object();
            match self.mapping.run(&mut value, &mut metadata) {
                Ok(Outcome::Done(_)) => {
                    let mut message = Message::new(value);
                    message.metadata = metadata;
                    if !feed.push(message).await {
                        return;
                    }
                }
                Ok(Outcome::Aborted) => {}
                Err(error) => {
                    feed.flow.count_rejected();
                    tracing::error!(flow = %feed.flow.name, component = "input.generate", %error, "mapping failed; no message made");
                }
            }
        }
    }
}
