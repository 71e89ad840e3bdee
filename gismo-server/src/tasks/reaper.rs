//! Leader only: reclaims what dead clients held ([`Maintainer::reap`]: reaping, unfinished
//! deletes and orphan collection) and logs each reap.
//!
//! [`Maintainer::reap`]: gismo_core::store::maintenance::Maintainer::reap

use std::time::Duration;

use gismo_core::store::maintenance::Reap;
use gismo_core::store::Store;
use gismo_platform::units::ByteSize;
use log::{info, warn};

use super::{now_ms, Leadership, PeriodicTask};

/// Consecutive periods the maintenance lock may be busy (another client reaping) before the
/// reaper warns: a holder that keeps it that long may be stuck (it loses the lock once it stops
/// showing it is alive, `gismo_core::store::MAINTENANCE_LEASE`), and nothing is reaped meanwhile.
const BUSY_WARN_AFTER: u32 = 10;

pub struct Reaper {
    leadership: Leadership,
    period: Duration,
    /// Consecutive periods the maintenance lock was busy.
    busy: u32,
}

impl Reaper {
    pub fn new(leadership: Leadership, period: Duration) -> Reaper {
        Reaper {
            leadership,
            period,
            busy: 0,
        }
    }
}

/// Counts one more consecutive busy period in `busy` (the lock held by client `holder`); the
/// warning to log, every [`BUSY_WARN_AFTER`] of them.
fn note_busy(busy: &mut u32, holder: usize) -> Option<String> {
    *busy = busy.saturating_add(1);
    busy.is_multiple_of(BUSY_WARN_AFTER).then(|| {
        format!(
            "the maintenance lock has been held by client {holder} for {busy} consecutive reaper \
             periods: dead clients are reaped only by it meanwhile"
        )
    })
}

impl PeriodicTask for Reaper {
    fn name(&self) -> &'static str {
        "reaper"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, _store: &Store) -> Result<(), String> {
        let reports = match self.leadership.borrow_mut().reap(now_ms()) {
            Ok(Reap::NotLeader) => return Ok(()),
            Ok(Reap::Reaped(r)) => r,
            // Another client (a Python `reap_dead`) is reaping right now: it does the work. Said
            // out loud when it lasts.
            Ok(Reap::Busy { holder }) => {
                if let Some(w) = note_busy(&mut self.busy, holder) {
                    warn!("{w}");
                }
                return Ok(());
            }
            // Taken for dead mid-pass (paused too long): the new maintainer finishes.
            Ok(Reap::Lost) => {
                warn!("lost the maintenance lock during a reap pass; its new holder finishes it");
                self.busy = 0;
                return Ok(());
            }
            Err(e) => {
                self.busy = 0;
                return Err(format!("reap: {e}"));
            }
        };
        self.busy = 0;
        for r in reports {
            info!(
                "reaped client {} (pid {}): aborted {} objects, released {} slots, freed {} \
                 in flight, dropped {} references, deleted {} pending objects, collected {} \
                 orphaned",
                r.client,
                r.pid,
                r.aborted_objects,
                r.released_slots,
                ByteSize(r.freed_intent_bytes),
                r.released_references,
                r.deleted_objects,
                ByteSize(r.orphan_bytes)
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_busy_for_k_periods_in_a_row_is_warned_about() {
        let mut busy = 0;
        for _ in 1..BUSY_WARN_AFTER {
            assert_eq!(note_busy(&mut busy, 3), None);
        }
        let w = note_busy(&mut busy, 3).expect("warned at the K-th busy period");
        assert!(w.contains("client 3"), "{w}");
        busy = 0;
        assert_eq!(
            note_busy(&mut busy, 3),
            None,
            "the count restarts after a pass"
        );
    }
}
