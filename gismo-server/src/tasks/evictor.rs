//! Leader only: when heap use passes the high watermark, evicts least-recently-used sealed,
//! unreferenced objects until it is back at the low watermark ([`Maintainer::evict`], with the
//! store core's one [`EvictionPolicy`]), and logs what it freed.
//!
//! [`Maintainer::evict`]: gismo_core::store::maintenance::Maintainer::evict
//! [`EvictionPolicy`]: gismo_core::store::eviction::EvictionPolicy

use std::time::Duration;

use gismo_core::store::maintenance::Evict;
use gismo_core::store::Store;
use gismo_platform::units::ByteSize;
use log::{info, log, warn, Level};

use super::{now_ms, Leadership, PeriodicTask};

pub struct Evictor {
    leadership: Leadership,
    period: Duration,
    /// Set after an eviction fell short (the rest is referenced): warn once, not every period.
    fell_short: bool,
}

impl Evictor {
    pub fn new(leadership: Leadership, period: Duration) -> Evictor {
        Evictor {
            leadership,
            period,
            fell_short: false,
        }
    }
}

impl PeriodicTask for Evictor {
    fn name(&self) -> &'static str {
        "evictor"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, _store: &Store) -> Result<(), String> {
        // The server's own client is the evicter: if this server dies mid-eviction, the reaper
        // finishes what it started.
        let outcome = self
            .leadership
            .borrow_mut()
            .evict(now_ms())
            .map_err(|e| format!("evict: {e}"))?;
        let Evict::Evicted {
            used,
            heap,
            target,
            freed,
            used_after,
        } = outcome
        else {
            if outcome == Evict::Below {
                self.fell_short = false;
            }
            return Ok(());
        };
        let level = if self.fell_short {
            Level::Debug
        } else {
            Level::Info
        };
        log!(
            level,
            "evicting: used {} of {} is above the high watermark; freeing {}",
            ByteSize(used),
            ByteSize(heap),
            ByteSize(target)
        );
        if freed < target {
            if self.fell_short {
                return Ok(());
            }
            self.fell_short = true;
            warn!(
                "evicted {} of {} wanted (the rest is referenced or unsealed); used now {}",
                ByteSize(freed),
                ByteSize(target),
                ByteSize(used_after)
            );
        } else {
            self.fell_short = false;
            info!(
                "evicted {}; used now {}",
                ByteSize(freed),
                ByteSize(used_after)
            );
        }
        Ok(())
    }
}
