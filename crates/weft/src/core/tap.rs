//! Tapping a running flow: copies of the messages passing a stage (`input`, a step's id such as
//! `pipeline[1].map`, or `output`), sent to whoever listens (`weft tap`, the admin API's
//! server-sent events).
//!
//! A tap never slows or stops the flow: with no listener a stage costs one atomic load; a
//! listener that does not keep up misses messages (its channel is bounded and never waited on);
//! a listener that went away is forgotten at the next message.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;
use ulid::Ulid;

use super::Message;

/// One tapped message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Tapped {
    /// Where it was seen: `input`, a step's id, or `output`.
    pub stage: String,
    /// The message's id (stable through the flow).
    pub id: String,
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// When it was seen (RFC 3339).
    pub at: String,
    /// Not a copy of the message but a mark of what became of it: `failed` (`stage` is where)
    /// or `filtered` (a step dropped it on purpose). Marks go to every listener, whatever its
    /// stage and sample: they are what a watcher looks for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

struct Listener {
    /// `None`: every stage.
    stage: Option<String>,
    /// The share of messages sent, in (0, 1].
    sample: f64,
    sender: mpsc::Sender<Tapped>,
}

/// The listeners of one flow.
#[derive(Default)]
pub struct Tap {
    listeners: Mutex<Vec<Listener>>,
    active: AtomicUsize,
}

impl Tap {
    /// Listens to `stage` (every stage when `None`), keeping a `sample` share of the messages;
    /// at most `buffer` wait unread before more are missed.
    pub fn listen(
        &self,
        stage: Option<String>,
        sample: f64,
        buffer: usize,
    ) -> mpsc::Receiver<Tapped> {
        let (sender, receiver) = mpsc::channel(buffer.max(1));
        let mut listeners = self.listeners.lock().expect("tap lock");
        listeners.push(Listener {
            stage,
            sample: sample.clamp(f64::MIN_POSITIVE, 1.0),
            sender,
        });
        self.active.store(listeners.len(), Ordering::Relaxed);
        receiver
    }

    /// Whether anyone listens: what is built only to be read may then be needed.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Offers `message`, as seen at `stage`, to the listeners.
    #[inline]
    pub fn observe(&self, stage: &str, message: &Message) {
        if self.active.load(Ordering::Relaxed) > 0 {
            self.offer(stage, message);
        }
    }

    /// Tells the listeners what became of message `id`: `failed` at `stage` (with why), or
    /// `filtered`.
    #[inline]
    pub fn mark(&self, id: Ulid, stage: &str, outcome: &'static str, reason: Option<&str>) {
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut listeners = self.listeners.lock().expect("tap lock");
        listeners.retain(|l| !l.sender.is_closed());
        self.active.store(listeners.len(), Ordering::Relaxed);
        let mark = Tapped {
            stage: stage.to_string(),
            id: id.to_string(),
            value: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            at: chrono::Utc::now().to_rfc3339(),
            outcome: Some(outcome),
            reason: reason.map(str::to_string),
        };
        for listener in listeners.iter() {
            let _ = listener.sender.try_send(mark.clone());
        }
    }

    fn offer(&self, stage: &str, message: &Message) {
        let mut listeners = self.listeners.lock().expect("tap lock");
        listeners.retain(|l| !l.sender.is_closed());
        self.active.store(listeners.len(), Ordering::Relaxed);
        let mut copy: Option<Tapped> = None;
        for listener in listeners.iter() {
            if listener.stage.as_deref().is_some_and(|s| s != stage)
                || (listener.sample < 1.0 && fastrand::f64() >= listener.sample)
            {
                continue;
            }
            let copy = copy.get_or_insert_with(|| Tapped {
                stage: stage.to_string(),
                id: message.id.to_string(),
                value: serde_json::to_value(&message.value).unwrap_or_default(),
                metadata: serde_json::to_value(&message.metadata).unwrap_or_default(),
                at: chrono::Utc::now().to_rfc3339(),
                outcome: None,
                reason: None,
            });
            // Full: this listener misses it. Closed: forgotten next time.
            let _ = listener.sender.try_send(copy.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::mapping::Value;

    #[test]
    fn listeners_get_their_stage_and_never_hold_the_flow_up() {
        let tap = Tap::default();
        let message = Message::new(Value::from("hi"));
        tap.observe("input", &message); // nobody listens: nothing happens
        let mut all = tap.listen(None, 1.0, 2);
        let mut mapped = tap.listen(Some("pipeline[0].map".into()), 1.0, 10);
        for _ in 0..5 {
            tap.observe("input", &message);
            tap.observe("pipeline[0].map", &message);
        }
        // A full buffer drops, it does not wait.
        assert_eq!(all.try_recv().unwrap().stage, "input");
        assert_eq!(all.try_recv().unwrap().stage, "pipeline[0].map");
        assert!(all.try_recv().is_err());
        let mut seen = 0;
        while let Ok(t) = mapped.try_recv() {
            assert_eq!(t.stage, "pipeline[0].map");
            assert_eq!(t.value, serde_json::json!("hi"));
            seen += 1;
        }
        assert_eq!(seen, 5);

        // Marks reach every listener, whatever its stage.
        tap.mark(message.id, "output", "failed", Some("HTTP 500"));
        let mark = mapped.try_recv().unwrap();
        assert_eq!(
            (mark.outcome, mark.reason.as_deref()),
            (Some("failed"), Some("HTTP 500"))
        );
        assert_eq!(mark.stage, "output");
        drop(all);
        drop(mapped);
        tap.observe("input", &message);
        assert_eq!(tap.active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn sampling_keeps_a_share() {
        let tap = Tap::default();
        let message = Message::new(Value::from(1));
        let mut some = tap.listen(None, 0.1, 10_000);
        for _ in 0..5_000 {
            tap.observe("output", &message);
        }
        let mut n = 0;
        while some.try_recv().is_ok() {
            n += 1;
        }
        assert!((300..700).contains(&n), "{n} of 5000 at 10%");
    }
}
