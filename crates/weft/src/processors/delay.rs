//! `delay`: holds each message for a fixed time (`delay: 2s`), or until the time a VRL
//! expression gives (`delay: { until: .send_at }`: a timestamp or RFC 3339 text; a time in the
//! past does not wait). The wait is capped by `max` (default and at most 5 minutes: a durable
//! delivery worker holds the message's lease meanwhile). A waiting message holds its place in
//! the flow's `concurrency`.
//!
//! ```yaml
//! pipeline:
//!   - delay: 500ms
//!   - delay: { until: .not_before, max: 1m }
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Context;
use crate::core::Step;
use crate::core::mapping::{Mapping, to_text};
use crate::core::{MappingError, Message, StepError, Value};

/// `delay: DURATION` (a fixed wait), or the settings as a mapping.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "DelayProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A fixed wait.
    #[serde(default, rename = "for")]
    pub fixed: Option<Dur>,
    /// A VRL expression giving the time to wait for.
    #[serde(default)]
    pub until: Option<String>,
    /// The longest wait for `until`.
    #[serde(default = "default_max")]
    pub max: Dur,
}

impl Config {
    pub fn deserialize_short<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Box<Config>, D::Error> {
        crate::config::de::scalar_or_map(d, |text| {
            Ok(Config {
                fixed: Some(Dur::parse(&text)?),
                until: None,
                max: default_max(),
            })
        })
        .map(Box::new)
    }
}

const MAX_WAIT: Duration = Duration::from_secs(300);

fn default_max() -> Dur {
    Dur(MAX_WAIT)
}

impl super::Spec for Config {
    type Built = Delay;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Delay, Vec<BuildError>> {
        let too_long = |field: &str| {
            Err(vec![BuildError::new(
                field,
                format!("a delay is at most {MAX_WAIT:?}"),
            )])
        };
        if self.fixed.is_some() && self.max != default_max() {
            return Err(vec![BuildError::new(
                "max",
                "`max` caps `until`; a `for` wait is fixed",
            )]);
        }
        match (&self.fixed, &self.until) {
            (Some(d), None) if d.0 > MAX_WAIT => too_long("for"),
            (Some(d), None) => Ok(Delay::Fixed(d.0)),
            (None, Some(_)) if self.max.0 > MAX_WAIT => too_long("max"),
            (None, Some(until)) => Ok(Delay::Until(
                Box::new(
                    Mapping::compile(until)
                        .map_err(|d| BuildError::from_diagnostics("until", d))?,
                ),
                self.max.0,
            )),
            _ => Err(vec![BuildError::new(
                "",
                "give a duration (`delay: 2s`), `for`, or `until`",
            )]),
        }
    }
}

pub enum Delay {
    Fixed(Duration),
    Until(Box<Mapping>, Duration),
}

impl Delay {
    async fn apply(&self, message: Message) -> Result<Option<Message>, StepError> {
        let wait = match self {
            Delay::Fixed(d) => *d,
            Delay::Until(until, max) => {
                let at = match until.eval(&message.value, &message.metadata)? {
                    Value::Timestamp(t) => t,
                    v @ (Value::Bytes(_) | Value::String(_) | Value::Integer(_)) => {
                        parse_time(&to_text(&v))?
                    }
                    other => {
                        return Err(MappingError(format!(
                            "delay `until` must give a time, got {}",
                            to_text(&other)
                        ))
                        .into());
                    }
                };
                (at - chrono::Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(*max)
            }
        };
        tokio::time::sleep(wait).await;
        Ok(Some(message))
    }
}

impl crate::core::Processor for Delay {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        matches!(self, Delay::Until(m, _) if m.reads_metadata())
    }
}

/// RFC 3339 text, or whole seconds since the epoch.
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, MappingError> {
    if let Ok(secs) = text.parse::<i64>() {
        return chrono::DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| MappingError(format!("delay `until`: {secs} is not a time")));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            MappingError(format!(
                "delay `until`: `{text}` is not an RFC 3339 time ({e})"
            ))
        })
}
