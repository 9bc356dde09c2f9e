//! Circuit breakers shared by name (`resources.circuit_breakers.NAME`), one circuit per target
//! (scheme, host and port) inside each: after `failures` consecutive failures (no answer, a 5xx,
//! 408 or 429) a target's circuit opens and requests to it fail at once for `open_for` — the
//! delivery is retried after that, instead of hammering a target that is down. Then one request
//! goes through as a probe (half-open): its success closes the circuit, its failure opens it
//! again. `weft_circuit_state{breaker, target}` is 0 closed, 1 open, 2 half-open.
//!
//! ```yaml
//! resources:
//!   circuit_breakers:
//!     crm: { failures: 5, open_for: 30s }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::BuildError;
use crate::config::units::Dur;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "CircuitBreaker")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Consecutive failures that open a target's circuit.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long an open circuit refuses before it lets a probe through.
    #[serde(default = "default_open_for")]
    pub open_for: Dur,
}

fn default_failures() -> u32 {
    5
}
fn default_open_for() -> Dur {
    Dur(Duration::from_secs(30))
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since then; everything else waits for its outcome (or, should the
    /// probe never report, for `open_for` before the next probe).
    HalfOpen {
        since: Instant,
    },
}

impl State {
    fn gauge(self) -> f64 {
        match self {
            State::Closed { .. } => 0.0,
            State::Open { .. } => 1.0,
            State::HalfOpen { .. } => 2.0,
        }
    }
}

/// A built breaker; clones share its circuits.
#[derive(Clone)]
pub struct Breaker(Arc<Inner>);

struct Inner {
    name: String,
    failures: u32,
    open_for: Duration,
    circuits: Mutex<HashMap<String, State>>,
}

/// How long a request waits when a probe is already out.
const PROBE_WAIT: Duration = Duration::from_secs(1);

impl Config {
    pub fn build(&self, name: &str) -> Result<Breaker, Vec<BuildError>> {
        if self.failures == 0 {
            return Err(vec![BuildError::new(
                "failures",
                "failures must be above zero",
            )]);
        }
        if self.open_for.0.is_zero() {
            return Err(vec![BuildError::new(
                "open_for",
                "open_for must be above zero",
            )]);
        }
        Ok(Breaker(Arc::new(Inner {
            name: name.to_string(),
            failures: self.failures,
            open_for: self.open_for.0,
            circuits: Mutex::new(HashMap::new()),
        })))
    }
}

impl Breaker {
    fn set(&self, target: &str, circuits: &mut HashMap<String, State>, state: State) {
        let before = circuits.insert(target.to_string(), state);
        if before.is_none_or(|b| b.gauge() != state.gauge()) {
            let target = crate::config::secret::redact_url(target);
            let target = target.as_str();
            metrics::gauge!("weft_circuit_state", "breaker" => self.0.name.clone(), "target" => target.to_string())
                .set(state.gauge());
            if state.gauge() != 0.0 || before.is_some() {
                tracing::warn!(breaker = %self.0.name, target, state = ?state, "circuit changed");
            }
        }
    }

    /// Whether a request to `target` may go now; `Err(wait)` while its circuit is open.
    pub fn admit(&self, target: &str) -> Result<(), Duration> {
        let mut circuits = self.0.circuits.lock().expect("never poisoned");
        match circuits.get(target).copied() {
            None | Some(State::Closed { .. }) => Ok(()),
            Some(State::Open { until }) => {
                let now = Instant::now();
                if now >= until {
                    self.set(target, &mut circuits, State::HalfOpen { since: now });
                    Ok(())
                } else {
                    Err(until - now)
                }
            }
            Some(State::HalfOpen { since }) if since.elapsed() >= self.0.open_for => {
                self.set(
                    target,
                    &mut circuits,
                    State::HalfOpen {
                        since: Instant::now(),
                    },
                );
                Ok(())
            }
            Some(State::HalfOpen { .. }) => Err(PROBE_WAIT),
        }
    }

    /// What the request admitted by [`Breaker::admit`] came to.
    pub fn record(&self, target: &str, failed: bool) {
        let mut circuits = self.0.circuits.lock().expect("never poisoned");
        let state = circuits
            .get(target)
            .copied()
            .unwrap_or(State::Closed { failures: 0 });
        let next = match (state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.0.failures => State::Closed {
                failures: failures + 1,
            },
            // The threshold reached, or a failed probe: open (again).
            (State::Closed { .. } | State::HalfOpen { .. }, true) => State::Open {
                until: Instant::now() + self.0.open_for,
            },
            // A request admitted before the circuit opened: it stays open as it is.
            (open @ State::Open { .. }, true) => open,
        };
        self.set(target, &mut circuits, next);
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_probe() {
        let b = Config {
            failures: 2,
            open_for: Dur(Duration::from_millis(20)),
        }
        .build("t")
        .unwrap();
        b.record("x", true);
        b.record("x", false);
        b.record("x", true);
        assert!(b.admit("x").is_ok(), "failures must be consecutive");
        b.record("x", true);
        assert!(b.admit("x").is_err());
        assert!(b.admit("y").is_ok(), "per target");
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.admit("x").is_ok(), "the probe");
        assert!(b.admit("x").is_err(), "one probe at a time");
        b.record("x", true);
        assert!(b.admit("x").is_err(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.admit("x").is_ok());
        b.record("x", false);
        assert!(b.admit("x").is_ok());
        assert!(b.admit("x").is_ok());
    }
}
