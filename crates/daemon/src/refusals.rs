//! Refusals of callers without a role or an identity, recorded so that
//! they can never crowd the audit log: a caller with no role (a local user
//! in no role, a client certificate no role lists, an unidentified peer)
//! or none to account for it (a peer of the WBEM port, which identifies
//! nobody) can call as often as it likes, each call refused and, without
//! this, audited.
//!
//! - They go to their own chain (`audit_chain::Chain::Refusals`), whose
//!   retention is applied apart: they never push a record of an operation
//!   (or of a caller with a role) out of the log.
//! - Per caller (uid, or certificate) and window of
//!   [`REFUSAL_WINDOW_SECS`]: the first [`REFUSALS_RECORDED_PER_WINDOW`] are
//!   recorded in full, the rest counted in one summary record (operation
//!   `refusals.counted`, `arguments` `count=N`), written `running` and
//!   updated every [`REFUSAL_FLUSH_INTERVAL_MS`] while the window lasts,
//!   then completed (and chained) when it ends.
//! - At most [`MAX_REFUSING_CALLERS`] callers have windows of their own;
//!   past that, callers share one (uid and certificate left empty).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::audit::{self, Outcome, Record};
use crate::caller::Caller;
use crate::limits::{MAX_REFUSING_CALLERS, REFUSALS_RECORDED_PER_WINDOW, REFUSAL_WINDOW_SECS};

/// The operation of a summary record.
pub(crate) const COUNTED_OPERATION: &str = "refusals.counted";

/// Who a window counts for: a uid, a certificate, or (both empty) everyone
/// past [`MAX_REFUSING_CALLERS`] and unidentified peers.
pub(crate) type CallerKey = (Option<u32>, Option<[u8; 32]>);

/// One caller's current window.
#[derive(Debug)]
struct Window {
    started: Instant,
    /// Refusals recorded in full.
    recorded: u32,
    /// Refusals only counted.
    counted: u64,
    /// `counted` as last written to the summary record.
    written: u64,
    /// The summary record, once written.
    summary: Option<i64>,
    /// The summary record, as it will be written.
    record: Record,
}

/// The windows of every caller refused lately.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    windows: Mutex<HashMap<CallerKey, Window>>,
}

/// Whether a refusal is recorded in full.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Record,
    Count,
}

impl Refusals {
    pub(crate) fn admit(&self, caller: Caller, now: Instant) -> Admit {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut key: CallerKey = (caller.uid, caller.certificate);
        if !windows.contains_key(&key) && windows.len() >= MAX_REFUSING_CALLERS {
            key = (None, None);
        }
        let window = windows.entry(key).or_insert_with(|| {
            let mut record = audit::record(
                Caller {
                    uid: key.0,
                    gid: None,
                    pid: None,
                    certificate: key.1,
                },
                COUNTED_OPERATION,
            );
            record.error = Some(
                "refused: no role; refusals past the first of each window are counted, not recorded one by one"
                    .into(),
            );
            Window {
                started: now,
                recorded: 0,
                counted: 0,
                written: 0,
                summary: None,
                record,
            }
        });
        if window.recorded < REFUSALS_RECORDED_PER_WINDOW {
            window.recorded += 1;
            Admit::Record
        } else {
            window.counted += 1;
            Admit::Count
        }
    }

    /// The summary records to write now: those whose count changed, and
    /// those of windows that ended (completed, and their window dropped).
    pub(crate) fn due(&self, now: Instant) -> Vec<(Record, Option<i64>, CallerKey)> {
        let window_len = Duration::from_secs(REFUSAL_WINDOW_SECS);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        windows.retain(|key, w| {
            let ended = now.duration_since(w.started) >= window_len;
            if w.counted != w.written || (ended && w.counted > 0) {
                let mut record = w.record.clone();
                record.arguments = format!("count={}", w.counted);
                record.duration_ms = now.duration_since(w.started).as_millis() as u64;
                record.outcome = if ended {
                    Outcome::Refused
                } else {
                    Outcome::Running
                };
                w.written = w.counted;
                due.push((record, w.summary, *key));
            }
            !ended
        });
        due
    }

    pub(crate) fn written(&self, key: CallerKey, id: i64) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = windows.get_mut(&key) {
            w.summary = Some(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusals_of_a_window_are_recorded_and_the_rest_counted_per_caller() {
        let refusals = Refusals::default();
        let now = Instant::now();
        let eve = Caller {
            uid: Some(5000),
            ..Caller::default()
        };
        for _ in 0..REFUSALS_RECORDED_PER_WINDOW {
            assert_eq!(refusals.admit(eve, now), Admit::Record);
        }
        for _ in 0..5 {
            assert_eq!(refusals.admit(eve, now), Admit::Count);
        }
        let other = Caller {
            uid: Some(5001),
            ..Caller::default()
        };
        assert_eq!(refusals.admit(other, now), Admit::Record, "its own window");
        let due = refusals.due(now);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].0.arguments.as_str(), due[0].0.outcome),
            ("count=5", Outcome::Running)
        );
        assert!(refusals.due(now).is_empty(), "nothing new");
        let later = now + Duration::from_secs(REFUSAL_WINDOW_SECS);
        let due = refusals.due(later);
        assert_eq!(due.len(), 1, "only the window with a count is summarized");
        assert_eq!(due[0].0.outcome, Outcome::Refused);
        assert_eq!(refusals.admit(eve, later), Admit::Record, "a new window");
    }

    #[test]
    fn callers_past_the_bound_share_one_window() {
        let refusals = Refusals::default();
        let now = Instant::now();
        for uid in 0..MAX_REFUSING_CALLERS as u32 + 50 {
            let caller = Caller {
                uid: Some(10_000 + uid),
                ..Caller::default()
            };
            refusals.admit(caller, now);
        }
        let windows = refusals.windows.lock().unwrap();
        assert_eq!(windows.len(), MAX_REFUSING_CALLERS + 1);
        let shared = &windows[&(None, None)];
        assert_eq!(u64::from(shared.recorded) + shared.counted, 50);
    }
}
