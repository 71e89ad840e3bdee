//! Logs the store's statistics at debug level.

use std::time::Duration;

use gismo::store::directory::state;
use gismo::store::Store;
use gismo::units::ByteSize;

use super::PeriodicTask;
use log::{debug, log_enabled, Level};

pub struct StatsLog {
    period: Duration,
}

impl StatsLog {
    pub fn new(period: Duration) -> StatsLog {
        StatsLog { period }
    }
}

impl PeriodicTask for StatsLog {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, store: &Store) -> Result<(), String> {
        if !log_enabled!(Level::Debug) {
            return Ok(());
        }
        let s = store.stats();
        let n = |st: u8| s.objects_by_state[usize::from(st)];
        debug!(
            "stats: used {} of {} ({} allocations); objects sealed {} creating {} deleting {}; \
             clients {}/{}; created {} sealed {} deleted {} evicted {} aborted {}",
            ByteSize(s.used_bytes),
            ByteSize(s.heap_bytes),
            s.allocations,
            n(state::SEALED),
            n(state::CREATING) + n(state::PENDING),
            n(state::DELETING),
            s.clients_active,
            s.max_clients,
            s.objects_created,
            s.objects_sealed,
            s.objects_deleted,
            s.objects_evicted,
            s.objects_aborted
        );
        Ok(())
    }
}
