//! The unit that moves through a flow.
//!
//! A message is parsed once, at its input (the input has to reject malformed JSON with a 400
//! anyway), into a structured [`Value`]; processors work on that value in place and outputs
//! serialize it once per delivery. (A durable flow's `http_server` only checks a JSON body and
//! stores it as sent; it is parsed once, when a delivery worker takes it from the store.)
//! Metadata is a second value: HTTP method, path, query and headers from `http_server`,
//! readable in VRL as `%http`.

use bytes::Bytes;
use ulid::Ulid;

use super::mapping::{Value, empty_object};

#[derive(Debug, Clone)]
pub struct Message {
    /// Stable for the message's whole life; returned to `http_server` callers as `id`.
    pub id: Ulid,
    pub value: Value,
    pub metadata: Value,
    /// The W3C `traceparent` the message came with (an `http_server` request's header).
    pub traceparent: Option<std::sync::Arc<str>>,
    /// Which part of which message this is, when a `split` made it: what `aggregate` with
    /// `correlate: split` gathers by. (`%split` says the same to programs, and is built only
    /// when something in the flow reads metadata.)
    pub part: Option<Part>,
}

/// A part of a split message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub parent: Ulid,
    pub index: usize,
    pub count: usize,
}

impl Message {
    pub fn new(value: Value) -> Message {
        Message {
            id: Ulid::new(),
            value,
            metadata: empty_object(),
            traceparent: None,
            part: None,
        }
    }

    /// The body an output sends: a string value as its raw bytes, anything else as JSON.
    pub fn body(&self) -> Bytes {
        match &self.value {
            Value::Bytes(b) => b.clone(),
            Value::String(s) => s.as_bytes().clone(),
            other => super::body::to_json(other),
        }
    }

    /// The message as JSON, a string value included (as a JSON string).
    pub fn json(&self) -> Bytes {
        super::body::to_json(&self.value)
    }

    /// Whether [`Message::body`] is JSON.
    pub fn is_json(&self) -> bool {
        !matches!(self.value, Value::Bytes(_) | Value::String(_))
    }
}
