//! Milliseconds since the Unix epoch, as the store keeps them (enqueue times, retry schedules,
//! expiries). The durable dispatcher reads them through a [`Clock`], so a test can move the
//! store's time itself instead of waiting for it: SQLite answers on a thread of its own, so
//! tokio's paused time would run ahead of it rather than with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The wall clock, or one a test sets and moves.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// A clock that stands at `at_ms` until [`Clock::advance`] moves it.
    pub fn manual(at_ms: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(at_ms))))
    }

    /// Moves a manual clock on (a wall clock moves by itself).
    pub fn advance(&self, by: Duration) {
        if let Some(at) = &self.0 {
            at.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            None => now_ms(),
            Some(at) => at.load(Ordering::SeqCst),
        }
    }
}
