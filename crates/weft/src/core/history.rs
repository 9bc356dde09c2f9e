//! A flow's last delivered messages, in memory, when `admin.ui.history` asks for them: the id
//! and when, so that "find a message" can say *delivered* instead of *never seen*. Off by
//! default; on, it costs a short lock and 24 bytes per message kept.

use std::collections::VecDeque;
use std::sync::Mutex;

use ulid::Ulid;

/// Messages a flow keeps at most, whatever the config asks.
pub const MAX_KEPT: u32 = 1_000_000;

pub struct Delivered {
    kept: usize,
    ring: Mutex<VecDeque<(Ulid, i64)>>,
}

impl Delivered {
    pub fn new(kept: u32) -> Delivered {
        let kept = kept.min(MAX_KEPT) as usize;
        Delivered {
            kept,
            // Grows as messages come: a flow that delivers little takes little.
            ring: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, id: Ulid, at_ms: i64) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == self.kept {
            ring.pop_front();
        }
        ring.push_back((id, at_ms));
    }

    /// When message `id` was delivered, if it is among those kept (the newest delivery of it).
    pub fn find(&self, id: Ulid) -> Option<i64> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter()
            .rev()
            .find(|(kept, _)| *kept == id)
            .map(|(_, at)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_ones_are_kept_and_found() {
        let delivered = Delivered::new(3);
        let ids: Vec<Ulid> = (0..5).map(|_| Ulid::new()).collect();
        for (at, id) in ids.iter().enumerate() {
            delivered.record(*id, at as i64);
        }
        assert_eq!(delivered.find(ids[0]), None);
        assert_eq!(delivered.find(ids[1]), None);
        assert_eq!(delivered.find(ids[2]), Some(2));
        assert_eq!(delivered.find(ids[4]), Some(4));
        assert_eq!(Delivered::new(u32::MAX).kept, MAX_KEPT as usize);
    }
}
