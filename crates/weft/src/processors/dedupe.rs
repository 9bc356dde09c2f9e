//! `dedupe`: drops a message whose key was already seen within `ttl`, so that a sender's resend
//! or a source's redelivery is delivered once.
//!
//! Keys live in the store, so they survive restarts and are shared by every flow that names the
//! same `namespace` (default: the flow's own name). The first message with a key holds it while
//! it is in flight; a retry of that same message passes again. Once it is delivered (or filtered)
//! the key is marked done and repeats are dropped for `ttl`. When it fails for good (its delivery
//! failed, or it went to the dead-letter queue) the key is given back, so the sender's resend is
//! delivered instead. A repeat that arrives while the first is still in flight waits for it (up
//! to 2 s; then HTTP 409 + `Retry-After`, or in a durable flow a wait that costs no attempt), so
//! it is never acknowledged as a duplicate of a message that then fails.
//!
//! ```yaml
//! pipeline:
//!   - dedupe:
//!       key: .event_id          # VRL; a null key fails the message
//!       ttl: 24h
//!       namespace: stripe       # optional; default: the flow's name
//! ```

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::clients::Resources;
use crate::clients::Shared;
use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::Step;
use crate::core::clock::now_ms;
use crate::core::mapping::Mapping;
use crate::core::{Claim, Context, MappingError, Message, StepError};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "DedupeProcessor")]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A VRL expression giving the key that identifies a message, e.g. `.event_id`.
    pub key: String,
    /// How long a key is remembered.
    #[serde(default = "default_ttl")]
    pub ttl: Dur,
    /// Keys are shared by every `dedupe` with the same namespace; default: the flow's name.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// How long a message waits for another one holding its key to finish before it is told to
/// come back later (HTTP 409; a durable flow retries it without counting an attempt).
const HOLDER_WAIT: Duration = Duration::from_secs(2);
const HOLDER_POLL: Duration = Duration::from_millis(50);
/// The most a key stays taken by a message in flight whose process died.
const PENDING_TTL_MS: i64 = 600_000;

fn default_ttl() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}

impl super::Spec for Config {
    type Built = Dedupe;

    fn build(&self, _shared: &Shared, _resources: &Resources) -> Result<Dedupe, Vec<BuildError>> {
        let key =
            Mapping::compile(&self.key).map_err(|d| BuildError::from_diagnostics("key", d))?;
        if self.ttl.0.is_zero() {
            return Err(vec![BuildError::new("ttl", "ttl must be above zero")]);
        }
        Ok(Dedupe {
            key,
            ttl_ms: self.ttl.0.as_millis().min(i64::MAX as u128) as i64,
            namespace: self.namespace.clone(),
        })
    }
}

pub struct Dedupe {
    pub(super) key: Mapping,
    ttl_ms: i64,
    namespace: Option<String>,
}

impl Dedupe {
    async fn apply(
        &self,
        message: Message,
        cx: &mut Context<'_>,
    ) -> Result<Option<Message>, StepError> {
        let key = self
            .key
            .key(&message.value, &message.metadata)
            .map_err(|e| MappingError(format!("dedupe key: {e}")))?;
        let store = cx
            .store
            .ok_or_else(|| MappingError("dedupe: the flow has no store".into()))?;
        // A store that cannot write now is a reason to try again later, not a failed message
        // (a durable flow reschedules it, http_server answers 503).
        let store_error = |e: weft_store::StoreError| match e {
            e @ weft_store::StoreError::Unavailable { .. } => {
                StepError::Unavailable(format!("dedupe: {e}"))
            }
            e => MappingError(format!("dedupe: {e}")).into(),
        };
        let namespace = format!("dedupe/{}", self.namespace.as_deref().unwrap_or(cx.flow));
        let pending = Claim::pending(message.id);
        let settled = Claim::settled(message.id);
        let give_up = Instant::now() + HOLDER_WAIT;
        loop {
            let now = now_ms();
            // While in flight a key lapses after PENDING_TTL (a crashed holder must not block
            // its key for the whole TTL); a retry of the same message extends it.
            let holder = store
                .kv_claim(
                    &namespace,
                    &key,
                    pending.as_bytes(),
                    now.saturating_add(self.ttl_ms.min(PENDING_TTL_MS)),
                    now,
                )
                .await
                .map_err(store_error)?;
            match holder {
                None => {
                    cx.trail.claims.push(Claim {
                        namespace,
                        key,
                        expires_at_ms: now.saturating_add(self.ttl_ms),
                        holder: message.id,
                    });
                    return Ok(Some(message));
                }
                // Handled already: a repeat, or this very message redelivered after a crash
                // between its delivery and its ack.
                Some(h) if h.starts_with(b"d:") => {
                    let own = h == settled.as_bytes();
                    tracing::debug!(flow = cx.flow, id = %message.id, key, own, "duplicate dropped");
                    return Ok(None);
                }
                // Another message with this key is in flight: its outcome decides whether this
                // one is a duplicate (it was delivered) or the one to deliver (it failed).
                Some(_) if Instant::now() < give_up => {
                    tokio::time::sleep(HOLDER_POLL).await;
                }
                Some(_) => {
                    return Err(StepError::Busy(format!(
                        "dedupe: a message with the same key ({key}) is still being delivered; retry later"
                    )));
                }
            }
        }
    }
}

impl crate::core::Processor for Dedupe {
    async fn process(&self, message: Message, cx: &mut Context<'_>) -> Result<Step, StepError> {
        Ok(self.apply(message, cx).await?.into())
    }

    fn reads_metadata(&self) -> bool {
        self.key.reads_metadata()
    }
}
