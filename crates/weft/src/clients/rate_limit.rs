//! Rate limits shared by name (`resources.rate_limits.NAME`): every HTTP component that names a
//! limit draws from the same budget, so two flows calling one API keep to its quota together.
//!
//! A limit allows `requests` per `per`, with bursts of up to `burst` (default: `requests`) after
//! a quiet spell. A request over the limit waits for its turn rather than failing: the limiter
//! (governor's GCRA) hands out evenly spaced slots.
//!
//! With `per_target: true` every target (scheme, host and port) gets a budget of its own: one
//! limit written once for many hosts, e.g. the endpoints a webhook gateway sends to, so a slow
//! customer's quota never holds back another's.
//!
//! ```yaml
//! resources:
//!   rate_limits:
//!     crm: { requests: 10, per: 1s, burst: 5 }
//!     endpoints: { requests: 5, per: 1s, per_target: true }
//! ```

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
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
    /// A budget of its own for every target (scheme, host and port) rather than one for all.
    #[serde(default)]
    pub per_target: bool,
}

/// Targets remembered by a per-target limit before the idle ones are forgotten.
const MAX_TARGETS: usize = 10_000;

fn default_per() -> Dur {
    Dur(Duration::from_secs(1))
}

/// A built limit; clones share the budget.
#[derive(Clone)]
pub struct RateLimit(Arc<Limiter>);

enum Limiter {
    Shared(DefaultDirectRateLimiter),
    PerTarget(DefaultKeyedRateLimiter<String>),
}

impl Config {
    pub fn build(&self) -> Result<RateLimit, Vec<BuildError>> {
        let quota = self.quota()?;
        Ok(RateLimit(Arc::new(if self.per_target {
            Limiter::PerTarget(RateLimiter::keyed(quota))
        } else {
            Limiter::Shared(RateLimiter::direct(quota))
        })))
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
    /// Waits for the next slot (of `target`'s budget, for a per-target limit).
    pub async fn wait(&self, target: &str) {
        match &*self.0 {
            Limiter::Shared(limiter) => limiter.until_ready().await,
            Limiter::PerTarget(limiter) => {
                if limiter.len() >= MAX_TARGETS {
                    // Targets whose budget is whole again hold nothing worth keeping.
                    limiter.retain_recent();
                }
                limiter.until_key_ready(&target.to_string()).await;
            }
        }
    }

    /// Whether each target has a budget of its own.
    pub fn per_target(&self) -> bool {
        matches!(&*self.0, Limiter::PerTarget(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_per_target_limit_keeps_one_budget_per_target() {
        let config = |per_target| Config {
            requests: 1,
            per: Dur(Duration::from_secs(3600)),
            burst: None,
            per_target,
        };
        let limit = config(true).build().unwrap();
        let quick = |target: &'static str| {
            let limit = limit.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(50), limit.wait(target))
                    .await
                    .is_ok()
            }
        };
        assert!(quick("https://a.test").await);
        assert!(quick("https://b.test").await, "b has a budget of its own");
        assert!(!quick("https://a.test").await, "a's budget is spent");
        let shared = config(false).build().unwrap();
        shared.wait("https://a.test").await;
        let second = tokio::time::timeout(Duration::from_millis(50), shared.wait("https://b.test"));
        assert!(second.await.is_err(), "one budget for every target");
    }
}
