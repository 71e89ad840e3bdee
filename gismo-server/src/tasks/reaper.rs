//! Leader only: reclaims what dead clients held ([`Store::reap_dead`]) and logs each reap.

use std::time::Duration;

use gismo_core::store::Store;
use gismo_platform::units::ByteSize;
use log::info;

use super::{now_ms, Leadership, PeriodicTask};

pub struct Reaper {
    leadership: Leadership,
    period: Duration,
    lease: Duration,
}

impl Reaper {
    pub fn new(leadership: Leadership, period: Duration, lease: Duration) -> Reaper {
        Reaper {
            leadership,
            period,
            lease,
        }
    }
}

impl PeriodicTask for Reaper {
    fn name(&self) -> &'static str {
        "reaper"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, store: &Store) -> Result<(), String> {
        if !self.leadership.borrow().is_leader(now_ms()) {
            return Ok(());
        }
        let me = self.leadership.borrow().me();
        let reports = match store.reap_dead(me, self.lease.as_millis() as u64) {
            Ok(r) => r,
            // Another client (a Python `reap_dead`) is reaping right now: it does the work.
            Err(gismo_core::store::StoreError::MaintenanceBusy { .. }) => return Ok(()),
            Err(e) => return Err(format!("reap: {e}")),
        };
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
