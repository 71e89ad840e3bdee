//! Keeps the server's own client entry alive, leader or not ([`Maintainer::heartbeat`]): on other
//! hosts a client whose heartbeat is older than the lease is reaped, and the lease names the
//! holder by this entry.
//!
//! If the entry was declared dead anyway (this server was stopped or starved for longer than the
//! lease, and another server's reaper fenced it), the maintainer registers a new client and claims
//! the lease under that identity from then on; the old one can no longer lead.
//!
//! [`Maintainer::heartbeat`]: gismo_core::store::maintenance::Maintainer::heartbeat

use std::time::Duration;

use gismo_core::store::maintenance::Heartbeat as Beat;
use gismo_core::store::Store;
use log::warn;

use super::{Leadership, PeriodicTask};

pub struct Heartbeat {
    period: Duration,
    leadership: Leadership,
}

impl Heartbeat {
    pub fn new(period: Duration, leadership: Leadership) -> Heartbeat {
        Heartbeat { period, leadership }
    }
}

impl PeriodicTask for Heartbeat {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, _store: &Store) -> Result<(), String> {
        let mut m = self.leadership.borrow_mut();
        let me = m.me();
        match m.heartbeat() {
            Ok(Beat::Alive) => Ok(()),
            Ok(Beat::Reregistered { old, new }) => {
                warn!(
                    "this server's client {} (epoch {}) was declared dead; registered again as \
                     {new}",
                    old.client, old.epoch
                );
                Ok(())
            }
            Err(e) => Err(format!(
                "client {} (epoch {}) was declared dead; registering again: {e}",
                me.client, me.epoch
            )),
        }
    }
}
