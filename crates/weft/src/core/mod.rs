//! The engine core: messages, the flow runtime, retries, mapping and telemetry.
//!
//! Nothing in here knows a connector. Components plug in through the [`Processor`] and [`Output`]
//! traits (inputs only call [`flow::Flow`]); the registries in `inputs`, `processors` and
//! `outputs` are the only places that list them.

pub mod body;
pub mod durable;
pub mod flow;
pub mod mapping;
pub mod message;
pub mod metrics;
pub mod retry;
pub mod schedule;
pub mod template;
pub mod xml;

use std::future::Future;

use weft_store::Store;

pub use mapping::{MappingError, Value};
pub use message::Message;
pub use retry::Attempt;

/// What a pipeline step may use besides the message itself.
pub struct Context<'a> {
    pub flow: &'a str,
    /// The store, when the flow has one (it has when any of its components needs it).
    pub store: Option<&'a Store>,
    /// Keys taken in the store for this message; the flow gives them back if the message fails,
    /// so that its resend is not mistaken for a duplicate.
    pub claims: &'a mut Vec<Claim>,
}

/// A store key held by one message while it is in flight (value `p:<id>`); the flow settles it
/// (`d:<id>`, kept until `expires_at_ms`) once the message is handled, or releases it when the
/// message fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub key: String,
    pub expires_at_ms: i64,
}

impl Claim {
    /// The value of a key held by message `id` while it is in flight.
    pub fn pending(id: impl std::fmt::Display) -> String {
        format!("p:{id}")
    }

    /// The value of a key whose message `id` was handled.
    pub fn settled(id: impl std::fmt::Display) -> String {
        format!("d:{id}")
    }
}

/// Why a pipeline step did not pass a message on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// The message failed (a mapping error, a bad key): it will fail again the same way.
    #[error(transparent)]
    Failed(#[from] MappingError),
    /// Not now: another message holds what this one needs; try again shortly.
    #[error("{0}")]
    Busy(String),
}

/// A pipeline step: keeps, rewrites or drops one message.
pub trait Processor: Send + Sync + 'static {
    /// `Ok(None)` drops the message on purpose (a filter said no); `Err` fails it.
    fn process(
        &self,
        message: Message,
        cx: &mut Context<'_>,
    ) -> impl Future<Output = Result<Option<Message>, StepError>> + Send;

    /// Whether any program of this step reads message metadata (`%…`).
    fn reads_metadata(&self) -> bool;
}

/// A destination. One call is one delivery attempt; the retry stack in [`retry`] decides what
/// happens next, so an output never sleeps or loops on its own.
pub trait Output: Send + Sync + 'static {
    fn send(&self, message: &Message) -> impl Future<Output = Attempt> + Send;

    /// Whether any template of this output reads message metadata (`%…`).
    fn reads_metadata(&self) -> bool;
}
