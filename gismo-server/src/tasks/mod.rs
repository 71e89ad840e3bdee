//! The server's periodic work, one task per file, all behind [`PeriodicTask`].
//!
//! The work itself is the store core's [`Maintainer`] (`gismo_core::store::maintenance`, shared
//! with the GISMO runner's embedded server); each task runs one of its steps at its own period
//! and logs what it did. Every server runs [`lease::LeaseTask`] (claims, renews or watches the
//! region's leader lease), [`heartbeat::Heartbeat`] (keeps its own client entry alive) and
//! [`stats_log::StatsLog`]. Only the lease holder acts on the region: [`reaper::Reaper`] reclaims
//! what dead clients held and [`evictor::Evictor`] keeps heap use between the watermarks. The
//! maintainer asks the lease right before each of those steps, so a server that lost the lease
//! stops at once.

pub mod evictor;
pub mod heartbeat;
pub mod lease;
pub mod reaper;
pub mod stats_log;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use gismo_core::store::maintenance::Maintainer;
use gismo_core::store::Store;

use crate::config::ServerConfig;

/// The maintainer (its client and the lease), shared by the tasks of the (single-threaded)
/// service loop.
pub type Leadership = Rc<RefCell<Maintainer>>;

/// One unit of periodic work on the store.
pub trait PeriodicTask {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// How long to wait between two runs.
    fn period(&self) -> Duration;

    /// Runs once. An error is logged and the task runs again at its next period.
    ///
    /// # Errors
    /// Whatever went wrong, as one line for the log.
    fn run(&mut self, store: &Store) -> Result<(), String>;
}

/// The tasks the server runs, built from its configuration; the lease task first, so the
/// leader-only tasks of the same tick see its verdict.
pub fn tasks(config: &ServerConfig, leadership: &Leadership) -> Vec<Box<dyn PeriodicTask>> {
    vec![
        Box::new(lease::LeaseTask::new(
            Rc::clone(leadership),
            config.lease_poll(),
        )),
        Box::new(heartbeat::Heartbeat::new(
            config.lease_poll(),
            Rc::clone(leadership),
        )),
        Box::new(reaper::Reaper::new(
            Rc::clone(leadership),
            config.reap_interval,
        )),
        Box::new(evictor::Evictor::new(
            Rc::clone(leadership),
            config.reap_interval,
        )),
        Box::new(stats_log::StatsLog::new(
            config.stats_interval,
            Rc::clone(leadership),
        )),
    ]
}

/// This process's monotonic ms now (what the leader lease measures).
pub fn now_ms() -> u64 {
    // The leader lease is judged on our own monotonic clock (never against another host's).
    gismo_platform::clock::monotonic_ms()
}
