//! Claims, renews or watches the region's leader lease ([`Maintainer::poll_lease`]), and logs
//! every change of role.
//!
//! [`Maintainer::poll_lease`]: gismo_core::store::maintenance::Maintainer::poll_lease

use std::time::Duration;

use gismo_core::store::leader::LeaseEvent;
use gismo_core::store::Store;
use log::{debug, info, warn};

use super::{now_ms, Leadership, PeriodicTask};

pub struct LeaseTask {
    leadership: Leadership,
    period: Duration,
    /// The last holder reported while following (to log changes once).
    last_holder: Option<Option<gismo_core::store::leader::LeaderId>>,
}

impl LeaseTask {
    pub fn new(leadership: Leadership, period: Duration) -> LeaseTask {
        LeaseTask {
            leadership,
            period,
            last_holder: None,
        }
    }
}

impl PeriodicTask for LeaseTask {
    fn name(&self) -> &'static str {
        "lease"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, store: &Store) -> Result<(), String> {
        let mut lease = self.leadership.borrow_mut();
        match lease.poll_lease(now_ms()) {
            LeaseEvent::Acquired { previous } => {
                self.last_holder = None;
                let info = store.leader();
                match previous {
                    Some(p) => info!(
                        "became leader as {} (took over from {p}; lease until {} ms)",
                        lease.me(),
                        info.lease_until_ms
                    ),
                    None => info!(
                        "became leader as {} (lease until {} ms)",
                        lease.me(),
                        info.lease_until_ms
                    ),
                }
            }
            LeaseEvent::Renewed => {}
            LeaseEvent::Lost { to } => match to {
                Some(h) => warn!("lost leadership to {h}: stopped acting as leader"),
                None => warn!("lease ran out before it was renewed: stopped acting as leader"),
            },
            LeaseEvent::Follower { holder } => {
                if self.last_holder != Some(holder) {
                    self.last_holder = Some(holder);
                    match holder {
                        Some(h) => info!("following leader {h} (pid {})", store.leader().pid),
                        None => debug!("no leader yet"),
                    }
                }
            }
        }
        Ok(())
    }
}
