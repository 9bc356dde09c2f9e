//! A flow's most recent failures, in memory, for the admin API and the dashboard: when, which
//! message, where and why. Direct flows have no dead letters; this is where their failures stay
//! readable after the log line scrolled by. Bounded: the last [`KEPT`], each reason cut at
//! [`REASON_MAX`] bytes.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use ulid::Ulid;

/// Failures kept per flow.
pub const KEPT: usize = 50;
/// Longest reason kept, in bytes.
pub const REASON_MAX: usize = 1024;

/// One failure of a message, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecentFailure {
    /// When it failed (RFC 3339).
    pub at: String,
    /// The message's id; none when the input could not make a message of what it read.
    pub message_id: Option<String>,
    /// `input`, `pipeline` or `output`.
    pub stage: String,
    /// Why, as the log says it (at most 1 KiB).
    pub reason: String,
}

#[derive(Default)]
pub struct Failures {
    ring: Mutex<VecDeque<RecentFailure>>,
}

impl Failures {
    pub fn record(&self, message: Option<Ulid>, stage: &str, mut reason: String) {
        if reason.len() > REASON_MAX {
            let mut cut = REASON_MAX;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        let failure = RecentFailure {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            message_id: message.map(|id| id.to_string()),
            stage: stage.to_string(),
            reason,
        };
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(failure);
    }

    /// The last `limit` failures, newest first.
    pub fn recent(&self, limit: usize) -> Vec<RecentFailure> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_come_first_the_oldest_go_and_long_reasons_are_cut() {
        let failures = Failures::default();
        for n in 0..KEPT + 5 {
            failures.record(None, "output", format!("failure {n}"));
        }
        let recent = failures.recent(KEPT + 10);
        assert_eq!(recent.len(), KEPT);
        assert_eq!(recent[0].reason, format!("failure {}", KEPT + 4));
        assert_eq!(recent[KEPT - 1].reason, "failure 5");
        failures.record(Some(Ulid::nil()), "pipeline", "é".repeat(REASON_MAX));
        let last = &failures.recent(1)[0];
        assert!(last.reason.len() <= REASON_MAX + '…'.len_utf8());
        assert!(last.reason.ends_with('…'));
        assert_eq!(
            last.message_id.as_deref(),
            Some("00000000000000000000000000")
        );
    }
}
