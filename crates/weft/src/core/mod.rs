//! The engine core: messages, the flow runtime, retries, mapping and telemetry.
//!
//! Nothing in here knows a connector. Components plug in through the [`Processor`] and [`Output`]
//! traits (inputs only call [`flow::Flow`]); the registries in `inputs`, `processors` and
//! `outputs` are the only places that list them.

pub mod durable;
pub mod flow;
pub mod mapping;
pub mod message;
pub mod metrics;
pub mod retry;
pub mod template;

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

/// A store key held by one message (its id is the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub key: String,
}

/// A pipeline step: keeps, rewrites or drops one message.
pub trait Processor: Send + Sync + 'static {
    /// `Ok(None)` drops the message on purpose (a filter said no); `Err` fails it.
    fn process(
        &self,
        message: Message,
        cx: &mut Context<'_>,
    ) -> impl Future<Output = Result<Option<Message>, MappingError>> + Send;

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
