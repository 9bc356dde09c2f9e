//! Rate limits shared by name (`resources.rate_limits.NAME`): every HTTP component that names a
//! limit draws from the same budget, so two flows calling one API keep to its quota together.
//!
//! A limit allows `requests` per `per`, with bursts of up to `burst` (default: `requests`) after
//! a quiet spell. A request over the limit waits for its turn rather than failing: the limiter
//! (governor's GCRA) hands out evenly spaced slots.
//!
//! ```yaml
//! resources:
//!   rate_limits:
//!     crm: { requests: 10, per: 1s, burst: 5 }
//! ```

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::config::BuildError;
use crate::config::units::Dur;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "RateLimit")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Requests allowed per `per`.
    pub requests: u32,
    /// The period, e.g. `1s` or `1m`.
    #[serde(default = "default_per")]
    pub per: Dur,
    /// Requests allowed at once after a quiet spell; default `requests`.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_per() -> Dur {
    Dur(Duration::from_secs(1))
}

/// A built limit; clones share the budget.
#[derive(Clone)]
pub struct RateLimit(Arc<DefaultDirectRateLimiter>);

impl Config {
    pub fn build(&self) -> Result<RateLimit, Vec<BuildError>> {
        Ok(RateLimit(Arc::new(RateLimiter::direct(self.quota()?))))
    }

    /// The quota this config describes (shared with `throttle`).
    pub fn quota(&self) -> Result<Quota, Vec<BuildError>> {
        let Some(requests) = NonZeroU32::new(self.requests) else {
            return Err(vec![BuildError::new(
                "requests",
                "requests must be above zero",
            )]);
        };
        let burst = match self.burst.map(NonZeroU32::new) {
            None => requests,
            Some(Some(b)) => b,
            Some(None) => return Err(vec![BuildError::new("burst", "burst must be above zero")]),
        };
        let interval = self.per.0 / requests.get();
        let Some(quota) = Quota::with_period(interval) else {
            return Err(vec![BuildError::new("per", "per must be above zero")]);
        };
        Ok(quota.allow_burst(burst))
    }
}

impl RateLimit {
    /// Waits for the next slot.
    pub async fn wait(&self) {
        self.0.until_ready().await;
    }
}
