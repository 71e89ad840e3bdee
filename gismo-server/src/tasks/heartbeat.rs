//! Keeps the server's own client entry alive, leader or not: on other hosts a client whose
//! heartbeat is older than the lease is reaped, and the lease names the holder by this entry.
//!
//! If the entry was declared dead anyway (this server was stopped or starved for longer than the
//! lease, and another server's reaper fenced it), the server registers a new client and claims
//! the lease under that identity from then on; the old one can no longer lead.

use std::time::Duration;

use gismo_core::store::leader::LeaderId;
use gismo_core::store::{Client, Store, StoreError};
use log::warn;

use super::{Leadership, PeriodicTask};

pub struct Heartbeat {
    client: Client,
    period: Duration,
    leadership: Leadership,
}

impl Heartbeat {
    pub fn new(client: Client, period: Duration, leadership: Leadership) -> Heartbeat {
        Heartbeat {
            client,
            period,
            leadership,
        }
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
        match self.client.heartbeat() {
            Ok(()) => Ok(()),
            Err(StoreError::Fenced { epoch }) => {
                warn!(
                    "this server's client {} (epoch {epoch}) was declared dead; registering again",
                    self.client.index()
                );
                let fresh = self
                    .client
                    .store()
                    .connect(crate::SERVER_CLIENT_NAME)
                    .map_err(|e| format!("registering again: {e}"))?;
                let me = LeaderId {
                    client: fresh.index(),
                    epoch: fresh.epoch(),
                };
                self.leadership.borrow_mut().rebind(me);
                warn!("registered again as {me}");
                // The fenced client's drop does nothing to the region: the reaper owns it.
                self.client = fresh;
                Ok(())
            }
            Err(e) => Err(format!("client {}: {e}", self.client.index())),
        }
    }
}
