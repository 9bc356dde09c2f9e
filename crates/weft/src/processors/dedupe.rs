//! `dedupe`: drops a message whose key was already seen within `ttl`, so that a sender's resend
//! or a source's redelivery is delivered once.
//!
//! Keys live in the store, so they survive restarts and are shared by every flow that names the
//! same `namespace` (default: the flow's own name). The first message with a key holds it (its id
//! is the value); a retry of that same message passes again. When the message fails for good
//! (its delivery failed, or it went to the dead-letter queue) the flow gives the key back, so the
//! sender's resend is delivered instead of being dropped as a duplicate.
//!
//! ```yaml
//! pipeline:
//!   - dedupe:
//!       key: .event_id          # VRL; a null key fails the message
//!       ttl: 24h
//!       namespace: stripe       # optional; default: the flow's name
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::config::BuildError;
use crate::config::units::Dur;
use crate::core::durable::now_ms;
use crate::core::mapping::Mapping;
use crate::core::{Claim, Context, MappingError, Message};

#[derive(Debug, Deserialize)]
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

fn default_ttl() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}

impl Config {
    pub fn build(&self) -> Result<Dedupe, Vec<BuildError>> {
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
    pub async fn process(
        &self,
        message: Message,
        cx: &mut Context<'_>,
    ) -> Result<Option<Message>, MappingError> {
        let key = self
            .key
            .key(&message.value, &message.metadata)
            .map_err(|e| MappingError(format!("dedupe key: {e}")))?;
        let store = cx
            .store
            .ok_or_else(|| MappingError("dedupe: the flow has no store".into()))?;
        let store_error = |e: weft_store::StoreError| MappingError(format!("dedupe: {e}"));
        let namespace = format!("dedupe/{}", self.namespace.as_deref().unwrap_or(cx.flow));
        let holder = message.id.to_string();
        let now = now_ms();
        let expires = now.saturating_add(self.ttl_ms);
        let taken = store
            .kv_put_if_absent(&namespace, &key, holder.as_bytes(), Some(expires), now)
            .await
            .map_err(store_error)?;
        let ours = taken
            || store
                .kv_get(&namespace, &key, now)
                .await
                .map_err(store_error)?
                .is_some_and(|h| h == holder.as_bytes());
        if ours {
            cx.claims.push(Claim { namespace, key });
            Ok(Some(message))
        } else {
            tracing::debug!(flow = cx.flow, id = %message.id, key, "duplicate dropped");
            Ok(None)
        }
    }
}
