//! Logs the store's statistics (and this server's role), every `--stats-interval-ms`.

use std::time::Duration;

use gismo_core::store::directory::state;
use gismo_core::store::Store;
use gismo_platform::units::ByteSize;

use super::{now_ms, Leadership, PeriodicTask};
use log::info;

pub struct StatsLog {
    period: Duration,
    leadership: Leadership,
}

impl StatsLog {
    pub fn new(period: Duration, leadership: Leadership) -> StatsLog {
        StatsLog { period, leadership }
    }
}

impl PeriodicTask for StatsLog {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn period(&self) -> Duration {
        self.period
    }

    fn run(&mut self, _store: &Store) -> Result<(), String> {
        let report = self.leadership.borrow().stats(now_ms());
        let s = report.stats;
        let n = |st: u8| s.objects_by_state[usize::from(st)];
        let role = if report.leader { "leader" } else { "follower" };
        info!(
            "stats ({role}): used {} of {} ({} allocations); objects sealed {} creating {} deleting {}; \
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
