//! Each flow's recent rates, for the dashboard's sparklines and `GET /api/v1/flows/{flow}/rates`:
//! the flows' counters sampled once a second into a ring of the last five minutes, in process
//! (no Prometheus needed). A flow that a reload restarted starts from zero again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use utoipa::ToSchema;

use super::api::Flows;
use crate::core::flow::Counters;

/// Seconds kept: five minutes of one sample a second.
pub const KEPT: usize = 300;

/// Per-second samples of every flow, newest last.
#[derive(Clone, Default)]
pub struct Rates {
    inner: Arc<Mutex<HashMap<String, Ring>>>,
}

struct Ring {
    /// The flow this ring follows: a restarted flow is another one.
    started_at: SystemTime,
    last: Counters,
    /// (received, delivered, failed) in each second.
    seconds: VecDeque<[u32; 3]>,
}

/// A flow's rates, one value per second, oldest first.
#[derive(Serialize, ToSchema)]
pub struct FlowRates {
    /// Seconds between two values.
    pub interval_seconds: u32,
    /// Messages taken in, in each second.
    pub received: Vec<u32>,
    /// Messages every output accepted.
    pub delivered: Vec<u32>,
    /// Messages that failed for good (dead-lettered, in a durable flow).
    pub failed: Vec<u32>,
}

impl Rates {
    /// Takes one sample of every flow; forgets flows that are gone.
    pub fn sample(&self, flows: &Flows) {
        let flows = flows.read().expect("registry lock");
        let mut rings = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        rings.retain(|name, _| flows.contains_key(name));
        for (name, flow) in flows.iter() {
            let now = flow.counters();
            let ring = rings.entry(name.clone()).or_insert_with(|| Ring {
                started_at: flow.started_at,
                last: now,
                seconds: VecDeque::with_capacity(KEPT),
            });
            if ring.started_at != flow.started_at {
                ring.started_at = flow.started_at;
                ring.last = Counters::default();
            }
            let step =
                |now: u64, before: u64| now.saturating_sub(before).min(u32::MAX as u64) as u32;
            let second = [
                step(now.received, ring.last.received),
                step(now.delivered, ring.last.delivered),
                step(now.failed, ring.last.failed),
            ];
            if ring.seconds.len() == KEPT {
                ring.seconds.pop_front();
            }
            ring.seconds.push_back(second);
            ring.last = now;
        }
    }

    /// The last `seconds` of `flow` (fewer just after it started); `None` for a flow not
    /// sampled yet.
    pub fn of(&self, flow: &str, seconds: usize) -> Option<FlowRates> {
        let rings = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ring = rings.get(flow)?;
        let skip = ring.seconds.len().saturating_sub(seconds);
        let column = |i: usize| ring.seconds.iter().skip(skip).map(|s| s[i]).collect();
        Some(FlowRates {
            interval_seconds: 1,
            received: column(0),
            delivered: column(1),
            failed: column(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_five_minutes_and_counts_per_second() {
        let rates = Rates::default();
        let mut rings = rates.inner.lock().unwrap();
        rings.insert(
            "f".into(),
            Ring {
                started_at: SystemTime::UNIX_EPOCH,
                last: Counters::default(),
                seconds: (0..KEPT as u32).map(|n| [n, 0, 0]).collect(),
            },
        );
        drop(rings);
        let last = rates.of("f", 3).unwrap();
        assert_eq!(last.received, vec![297, 298, 299]);
        assert_eq!(rates.of("f", 10_000).unwrap().received.len(), KEPT);
        assert!(rates.of("g", 3).is_none());
    }
}
