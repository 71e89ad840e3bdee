//! Leader only: when heap use passes the high watermark, evicts least-recently-used sealed,
//! unreferenced objects ([`Store::evict`]) until it is back at the low watermark.

use std::time::Duration;

use gismo_core::store::Store;
use gismo_platform::units::ByteSize;
use log::{info, log, warn, Level};

use super::{now_ms, Leadership, PeriodicTask};

pub struct Evictor {
    leadership: Leadership,
    period: Duration,
    high: f64,
    low: f64,
    /// Set after an eviction fell short (the rest is referenced): warn once, not every period.
    fell_short: bool,
}

impl Evictor {
    pub fn new(leadership: Leadership, period: Duration, high: f64, low: f64) -> Evictor {
        Evictor {
            leadership,
            period,
            high,
            low,
            fell_short: false,
        }
    }
}

/// Bytes to free so that `used` comes down to `low * heap`, when `used` is above `high * heap`.
pub fn excess(used: u64, heap: u64, high: f64, low: f64) -> Option<u64> {
    let high_bytes = (heap as f64 * high) as u64;
    let low_bytes = (heap as f64 * low) as u64;
    (used > high_bytes).then(|| used - low_bytes)
}

impl PeriodicTask for Evictor {
    fn name(&self) -> &'static str {
        "evictor"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, store: &Store) -> Result<(), String> {
        if !self.leadership.borrow().is_leader(now_ms()) {
            return Ok(());
        }
        let s = store.stats();
        let Some(target) = excess(s.used_bytes, s.heap_bytes, self.high, self.low) else {
            self.fell_short = false;
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
            ByteSize(s.used_bytes),
            ByteSize(s.heap_bytes),
            ByteSize(target)
        );
        // The server's own client is the evicter: if this server dies mid-eviction, the reaper
        // finishes what it started. Under that client's operation guard, like every free, so a
        // concurrent orphan collector never takes a block being freed for a leak.
        let me = self.leadership.borrow().me();
        let freed = store
            .evict_as(me, target)
            .map_err(|e| format!("evict: {e}"))?;
        let after = store.stats().used_bytes;
        if freed < target {
            if self.fell_short {
                return Ok(());
            }
            self.fell_short = true;
            warn!(
                "evicted {} of {} wanted (the rest is referenced or unsealed); used now {}",
                ByteSize(freed),
                ByteSize(target),
                ByteSize(after)
            );
        } else {
            self.fell_short = false;
            info!("evicted {}; used now {}", ByteSize(freed), ByteSize(after));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::excess;

    #[test]
    fn evicts_down_to_the_low_watermark_only_above_the_high_one() {
        assert_eq!(excess(89, 100, 0.9, 0.8), None);
        assert_eq!(excess(90, 100, 0.9, 0.8), None);
        assert_eq!(excess(95, 100, 0.9, 0.8), Some(15));
        assert_eq!(excess(0, 0, 0.9, 0.8), None);
    }
}
