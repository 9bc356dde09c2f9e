//! `throttle`: holds messages back to a rate, per key: at most `requests` per `per` for each
//! value of `key` (one budget for all without `key`), with bursts of up to `burst` after a quiet
//! spell. A message over the rate waits for its turn (governor's GCRA hands out evenly spaced
//! slots); nothing is dropped. Waiting messages hold their place in the flow's `concurrency`,
//! so a slow rate slows the input down rather than piling messages up.
//!
//! ```yaml
//! pipeline:
//!   - throttle: { requests: 5, per: 1s, key: .customer_id }
//! ```

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, RateLimiter};
use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::clients::rate_limit;
use crate::config::BuildError;
use crate::core::Context;
use crate::core::Step;
use crate::core::mapping::Mapping;
use crate::core::{Message, StepError};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ThrottleProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(flatten)]
    pub rate: rate_limit::Config,
    /// A VRL expression: each of its values has its own budget. Default: one for all.
    #[serde(default)]
    pub key: Option<String>,
}

impl super::Spec for Config {
    type Built = Throttle;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Throttle, Vec<BuildError>> {
        if self.rate.per_target {
            return Err(vec![BuildError::new(
                "per_target",
                "a throttle has no target: give each budget's `key` instead",
            )]);
        }
        let quota = self.rate.quota()?;
        let key = self
            .key
            .as_deref()
            .map(Mapping::compile)
            .transpose()
            .map_err(|d| BuildError::from_diagnostics("key", d))?;
        Ok(Throttle {
            key,
            limiter: RateLimiter::keyed(quota),
            seen: AtomicU64::new(0),
        })
    }
}

pub struct Throttle {
    pub(super) key: Option<Mapping>,
    limiter: DefaultKeyedRateLimiter<u64>,
    seen: AtomicU64,
}

/// Every this many messages, budgets of keys that are full again are forgotten.
const SWEEP_EVERY: u64 = 4096;

impl Throttle {
    async fn apply(&self, message: Message) -> Result<Option<Message>, StepError> {
        let key = match &self.key {
            Some(k) => {
                // Keys are kept as hashes: a budget per key costs a few bytes, whatever the key.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                k.key(&message.value, &message.metadata)?.hash(&mut h);
                h.finish()
            }
            None => 0,
        };
        if self.seen.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.until_key_ready(&key).await;
        Ok(Some(message))
    }
}

impl crate::core::Processor for Throttle {
    async fn process(&self, message: Message, _cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.key.as_ref().is_some_and(Mapping::reads_metadata)
    }
}
