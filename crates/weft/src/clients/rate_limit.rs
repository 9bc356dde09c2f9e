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
//! On a cluster each node keeps to its share: with `n` nodes alive, `requests / n` per `per`
//! and a burst of `burst / n` (at least one), so the nodes together keep to the limit. The
//! share follows the membership ([`set_nodes`]); a node that joins or leaves changes it within
//! a lease time.
//!
//! ```yaml
//! resources:
//!   rate_limits:
//!     crm: { requests: 10, per: 1s, burst: 5 }
//!     endpoints: { requests: 5, per: 1s, per_target: true }
//! ```

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
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

/// The nodes alive in this node's cluster (1 outside one): each keeps to its share of a limit.
static NODES: AtomicU32 = AtomicU32::new(1);

/// How many nodes share every limit now (the cluster's membership says).
pub fn set_nodes(nodes: u32) {
    NODES.store(nodes.max(1), Ordering::Relaxed);
}

/// A built limit; clones share the budget.
#[derive(Clone)]
pub struct RateLimit(Arc<Budget>);

struct Budget {
    share: Share,
    /// The limiter for a number of nodes, made again when that number changes.
    current: RwLock<(u32, Arc<Limiter>)>,
}

/// A limit, to be shared among nodes.
struct Share {
    requests: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
    per_target: bool,
}

enum Limiter {
    Shared(DefaultDirectRateLimiter),
    PerTarget(DefaultKeyedRateLimiter<String>),
}

impl Config {
    pub fn build(&self) -> Result<RateLimit, Vec<BuildError>> {
        self.quota()?;
        let requests = NonZeroU32::new(self.requests).expect("checked by quota");
        let share = Share {
            requests,
            per: self.per.0,
            burst: self.burst.and_then(NonZeroU32::new).unwrap_or(requests),
            per_target: self.per_target,
        };
        let nodes = NODES.load(Ordering::Relaxed);
        let current = RwLock::new((nodes, Arc::new(share.limiter(nodes))));
        Ok(RateLimit(Arc::new(Budget { share, current })))
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

impl Share {
    /// The limiter of one node's share among `nodes`.
    fn limiter(&self, nodes: u32) -> Limiter {
        let interval = self.per.saturating_mul(nodes) / self.requests.get();
        let burst = NonZeroU32::new(self.burst.get() / nodes).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        if self.per_target {
            Limiter::PerTarget(RateLimiter::keyed(quota))
        } else {
            Limiter::Shared(RateLimiter::direct(quota))
        }
    }
}

impl Budget {
    /// The limiter for `nodes` alive ([`NODES`] when waiting).
    fn now(&self, nodes: u32) -> Arc<Limiter> {
        {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            if current.0 == nodes {
                return current.1.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.0 != nodes {
            *current = (nodes, Arc::new(self.share.limiter(nodes)));
        }
        current.1.clone()
    }
}

impl RateLimit {
    /// Waits for the next slot (of `target`'s budget, for a per-target limit).
    pub async fn wait(&self, target: &str) {
        match &*self.0.now(NODES.load(Ordering::Relaxed)) {
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
        self.0.share.per_target
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

    #[test]
    fn a_node_of_a_cluster_keeps_to_its_share() {
        let limit = Config {
            requests: 10,
            per: Dur(Duration::from_secs(1)),
            burst: Some(4),
            per_target: false,
        }
        .build()
        .unwrap();
        // Ten a second, a burst of four: alone, four at once; one of two nodes, two; one of
        // twenty, one (never none), and one every two seconds.
        for (nodes, burst) in [(1, 4), (2, 2), (20, 1), (1, 4)] {
            let limiter = limit.0.share.limiter(nodes);
            let Limiter::Shared(limiter) = &limiter else {
                unreachable!()
            };
            let granted = (0..10).filter(|_| limiter.check().is_ok()).count();
            assert_eq!(granted, burst, "{nodes} nodes");
        }
        // The limiter follows the membership, and is kept while it does not change.
        let two = limit.0.now(2);
        assert!(Arc::ptr_eq(&two, &limit.0.now(2)));
        let Limiter::Shared(now) = &*two else {
            unreachable!()
        };
        assert_eq!((0..10).filter(|_| now.check().is_ok()).count(), 2);
        let Limiter::Shared(now) = &*limit.0.now(1) else {
            unreachable!()
        };
        assert_eq!((0..10).filter(|_| now.check().is_ok()).count(), 4);
    }
}
