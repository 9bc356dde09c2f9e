//! The one retry stack every output is wrapped in.
//!
//! [`RetryPolicy::decide`] is a pure function of (attempts so far, time elapsed, outcome of the
//! last attempt, a jitter draw) → what to do next. Keeping it pure means it is tested without
//! clocks or sockets, and the durable mode can persist "retry at T" instead of sleeping.
//! [`deliver`] is the in-memory loop on top of it used by direct delivery.
//!
//! Backoff: attempt n waits `initial_backoff × 2^(n-1)`, capped at `max_backoff`, with "equal
//! jitter" (a uniform draw in the upper half), so retries spread out but never collapse to zero.
//! A `Retry-After` from the destination replaces the computed wait (and may exceed
//! `max_backoff`), but a retry that would end after `max_elapsed` fails at once instead.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;
// tokio's clock, not std's: the same in production, and paused time moves it in tests.
use tokio::time::Instant;

use super::{Message, Output};
use crate::config::units::Dur;

/// `retry:` on an output, or on a pipeline step that calls out. Every field left out takes the
/// default of where it is: a direct flow's caller is waiting, so its outputs give up within
/// minutes; a durable flow has stored the message, so its outputs ride out an outage of hours.
/// A pipeline step retries in place, with a direct flow's defaults in either mode, for at most
/// 5 minutes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first one included; `1` turns retries off. Default: `5` in a
    /// direct flow and a pipeline step; unlimited for a durable flow's output (`max_elapsed`
    /// bounds it).
    #[serde(deserialize_with = "at_least_one")]
    #[schemars(with = "Option<std::num::NonZeroU32>")]
    pub max_attempts: Option<std::num::NonZeroU32>,
    /// Wait before the first retry. Default: `200ms` direct and in a step, `1s` durable.
    pub initial_backoff: Option<Dur>,
    /// Longest computed wait between attempts (a `Retry-After` may be longer). Default: `30s`
    /// direct and in a step, `5m` durable.
    pub max_backoff: Option<Dur>,
    /// No retry starts later than this after the first attempt; `forever` never gives up.
    /// Default: `2m` direct and in a step (at most `5m` there), `24h` durable.
    pub max_elapsed: Option<Elapsed>,
}

fn at_least_one<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::num::NonZeroU32>, D::Error> {
    match Option::<u32>::deserialize(d)? {
        None => Ok(None),
        Some(n) => std::num::NonZeroU32::new(n).map(Some).ok_or_else(|| {
            serde::de::Error::custom("at least 1 (the first attempt; 1 turns retries off)")
        }),
    }
}

/// How long retries may go on: a duration, or `forever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elapsed {
    Within(Dur),
    Forever,
}

impl Elapsed {
    fn duration(self) -> Duration {
        match self {
            Elapsed::Within(d) => d.0,
            Elapsed::Forever => Duration::MAX,
        }
    }
}

impl<'de> Deserialize<'de> for Elapsed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Elapsed;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration with its unit, like `30m` or `24h`, or `forever`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Elapsed, E> {
                if s.trim() == "forever" {
                    return Ok(Elapsed::Forever);
                }
                Dur::parse(s).map(Elapsed::Within).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Elapsed, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Elapsed, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Elapsed, E> {
                self.visit_str(&n.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Elapsed {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DurationOrForever".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with its unit (`30m`, `24h`), or `forever`.",
            "pattern": "^\\s*([0-9]|forever\\s*$)",
            "examples": ["2m", "24h", "forever"]
        })
    }
}

impl RetryConfig {
    /// The policy this config gives in a durable (`true`) or direct flow.
    pub fn policy(&self, durable: bool) -> RetryPolicy {
        let (attempts, initial, max, elapsed) = if durable {
            (
                u32::MAX,
                Duration::from_secs(1),
                Duration::from_secs(300),
                DAY,
            )
        } else {
            (
                5,
                Duration::from_millis(200),
                Duration::from_secs(30),
                Duration::from_secs(120),
            )
        };
        let scale = time_scale();
        RetryPolicy {
            max_attempts: self
                .max_attempts
                .map_or(attempts, std::num::NonZeroU32::get),
            initial_backoff: self.initial_backoff.map_or(initial, |d| d.0) / scale,
            max_backoff: self.max_backoff.map_or(max, |d| d.0) / scale,
            max_elapsed: self.max_elapsed.map_or(elapsed, Elapsed::duration) / scale,
        }
    }

    /// Whether any field is set.
    pub fn is_set(&self) -> bool {
        *self != RetryConfig::default()
    }

    /// The longest retries may go on, when set.
    pub fn max_elapsed(&self) -> Option<Duration> {
        self.max_elapsed.map(Elapsed::duration)
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// What the destination answered, kept with a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// The start of the response body.
    pub excerpt: String,
}

/// What a failure means to a caller waiting for the answer: its own message was wrong, the
/// system weft called failed, or that system cannot be reached now (worth retrying later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    /// The message itself: a failed `assert`, a program error on its data, a schema it does
    /// not fit.
    #[default]
    Invalid,
    /// A system weft called answered a failure that retrying did not mend.
    Upstream,
    /// A system weft called could not be reached, answered that it is unavailable (429, 502,
    /// 503, 504), or its circuit is open; `retry_after` when it said how long.
    Unavailable { retry_after: Option<Duration> },
}

impl Fault {
    /// What giving up after `last` means.
    pub fn of(last: &Attempt) -> Fault {
        match last {
            Attempt::Retryable {
                response: None,
                retry_after,
                ..
            } => Fault::Unavailable {
                retry_after: *retry_after,
            },
            Attempt::Retryable {
                response: Some(answer),
                retry_after,
                ..
            } if matches!(answer.status, 429 | 502 | 503 | 504) => Fault::Unavailable {
                retry_after: *retry_after,
            },
            _ => Fault::Upstream,
        }
    }
}

/// Why a call or a delivery was given up: the reason (for logs and dead letters) and the kind
/// of failure (for the caller's status).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct GaveUp {
    pub reason: String,
    pub fault: Fault,
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Worth trying again, e.g. a 503 or a refused connection.
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
        response: Option<Answer>,
    },
    /// Will not get better by trying again, e.g. a 400.
    Fatal {
        reason: String,
        response: Option<Answer>,
    },
    /// The destination does not want it, and that is fine (a configured `drop` status).
    Drop {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Done,
    RetryIn(Duration),
    Fail(String),
    Drop(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_elapsed: Duration,
}

/// How many times faster than configured every retry wait and deadline runs: 1, except under
/// `weft test`, which runs the same attempts in a thousandth of the time.
static TIME_SCALE: AtomicU32 = AtomicU32::new(1);

/// Sets [`TIME_SCALE`] for retry policies built from now on (process-wide: `weft test` only).
pub fn set_time_scale(scale: u32) {
    TIME_SCALE.store(scale.max(1), Ordering::Relaxed);
}

pub(crate) fn time_scale() -> u32 {
    TIME_SCALE.load(Ordering::Relaxed)
}

impl RetryPolicy {
    /// `attempts` counts attempts made so far (≥ 1); `jitter` is a uniform draw in [0, 1).
    pub fn decide(
        &self,
        attempts: u32,
        elapsed: Duration,
        outcome: &Attempt,
        jitter: f64,
    ) -> Decision {
        let (reason, retry_after) = match outcome {
            Attempt::Delivered => return Decision::Done,
            Attempt::Fatal { reason, .. } => return Decision::Fail(reason.clone()),
            Attempt::Drop { reason } => return Decision::Drop(reason.clone()),
            Attempt::Retryable {
                reason,
                retry_after,
                ..
            } => (reason, retry_after),
        };
        if attempts >= self.max_attempts {
            return Decision::Fail(format!("{reason} (gave up after {attempts} attempts)"));
        }
        let wait = match retry_after {
            Some(wait) => *wait / time_scale(),
            None => {
                let exp = 2u32.saturating_pow(attempts.saturating_sub(1).min(31));
                let base = self
                    .initial_backoff
                    .saturating_mul(exp)
                    .min(self.max_backoff);
                base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
            }
        };
        if elapsed.saturating_add(wait) > self.max_elapsed {
            return Decision::Fail(format!(
                "{reason} (the next retry, in {wait:?}, would pass max_elapsed {:?})",
                self.max_elapsed
            ));
        }
        Decision::RetryIn(wait)
    }
}

/// How a message left one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Accepted,
    Dropped,
}

/// Runs `call` until it answers or the policy says stop (a pipeline step calling an API in
/// place). `Err` carries the final reason.
pub async fn in_place<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Attempt>>,
{
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = match call().await {
            Ok(answer) => return Ok(answer),
            Err(outcome) => outcome,
        };
        match policy.decide(attempts, start.elapsed(), &outcome, fastrand::f64()) {
            Decision::RetryIn(wait) => tokio::time::sleep(wait).await,
            Decision::Fail(reason) | Decision::Drop(reason) => {
                return Err(GaveUp {
                    reason,
                    fault: Fault::of(&outcome),
                });
            }
            Decision::Done => {
                return Err(GaveUp {
                    reason: "the call reported no answer".into(),
                    fault: Fault::Upstream,
                });
            }
        }
    }
}

/// Runs attempts on the slot's output until its policy says stop, and times the whole (the
/// clock read the policy needs anyway). `Err` carries the final reason.
pub async fn deliver<O: Output>(
    slot: &super::flow::OutputSlot<O>,
    message: &Message,
) -> Result<Delivered, GaveUp> {
    let (output, policy, metrics, component) = (&slot.output, &slot.retry, &slot.metrics, &slot.id);
    let start = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let outcome = output.send(message).await;
        let elapsed = start.elapsed();
        let decision = policy.decide(attempts, elapsed, &outcome, fastrand::f64());
        if !matches!(decision, Decision::RetryIn(_)) {
            slot.timings.record(elapsed);
        }
        match decision {
            Decision::Done => {
                metrics.sent.increment(1);
                return Ok(Delivered::Accepted);
            }
            Decision::Drop(reason) => {
                metrics.dropped.increment(1);
                tracing::debug!(component, id = %message.id, reason, "destination declined the message; dropped as configured");
                return Ok(Delivered::Dropped);
            }
            Decision::Fail(reason) => {
                metrics.failed.increment(1);
                return Err(GaveUp {
                    reason,
                    fault: Fault::of(&outcome),
                });
            }
            Decision::RetryIn(wait) => {
                metrics.retried.increment(1);
                if let Attempt::Retryable { reason, .. } = &outcome {
                    tracing::warn!(component, id = %message.id, attempt = attempts, ?wait, error = %reason, "delivery failed; retrying");
                }
                // Boxed: a timer held inline would size every delivery's future.
                Box::pin(tokio::time::sleep(wait)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            max_elapsed: Duration::from_secs(10),
        }
    }

    fn retryable(after: Option<u64>) -> Attempt {
        Attempt::Retryable {
            reason: "503".into(),
            retry_after: after.map(Duration::from_secs),
            response: None,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = policy();
        let zero = Duration::ZERO;
        assert_eq!(
            p.decide(1, zero, &retryable(None), 0.0),
            Decision::RetryIn(Duration::from_millis(50))
        );
        assert_eq!(
            p.decide(1, zero, &retryable(None), 1.0),
            Decision::RetryIn(Duration::from_millis(100))
        );
        assert_eq!(
            p.decide(2, zero, &retryable(None), 1.0),
            Decision::RetryIn(Duration::from_millis(200))
        );
        assert_eq!(
            p.decide(3, zero, &retryable(None), 1.0),
            Decision::RetryIn(Duration::from_millis(300))
        );
    }

    #[test]
    fn attempts_and_elapsed_are_limits() {
        let p = policy();
        assert!(matches!(
            p.decide(4, Duration::ZERO, &retryable(None), 0.5),
            Decision::Fail(_)
        ));
        assert!(matches!(
            p.decide(1, Duration::from_millis(9_990), &retryable(None), 0.5),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn retry_after_overrides_max_backoff_but_not_max_elapsed() {
        let p = policy();
        assert_eq!(
            p.decide(1, Duration::ZERO, &retryable(Some(5)), 0.5),
            Decision::RetryIn(Duration::from_secs(5))
        );
        assert!(matches!(
            p.decide(1, Duration::from_secs(6), &retryable(Some(5)), 0.5),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn a_huge_retry_after_fails_instead_of_overflowing() {
        let huge = Attempt::Retryable {
            reason: "429".into(),
            retry_after: Some(Duration::from_secs(u64::MAX)),
            response: None,
        };
        assert!(matches!(
            policy().decide(1, Duration::from_secs(2), &huge, 0.5),
            Decision::Fail(_)
        ));
    }

    #[test]
    fn terminal_outcomes_pass_through() {
        let p = policy();
        assert_eq!(
            p.decide(1, Duration::ZERO, &Attempt::Delivered, 0.5),
            Decision::Done
        );
        assert!(matches!(
            p.decide(
                1,
                Duration::ZERO,
                &Attempt::Fatal {
                    reason: "400".into(),
                    response: None
                },
                0.5
            ),
            Decision::Fail(_)
        ));
        assert!(matches!(
            p.decide(
                1,
                Duration::ZERO,
                &Attempt::Drop {
                    reason: "409".into()
                },
                0.5
            ),
            Decision::Drop(_)
        ));
    }
}
