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

pub use mapping::{MappingError, Value};
pub use message::Message;
pub use retry::Attempt;

/// A pipeline step: keeps, rewrites or drops one message.
pub trait Processor: Send + Sync + 'static {
    /// `Ok(None)` drops the message on purpose (a filter said no); `Err` fails it.
    fn process(&self, message: Message) -> Result<Option<Message>, MappingError>;

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
