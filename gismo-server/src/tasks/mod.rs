//! The server's periodic work, one task per file, all behind [`PeriodicTask`].
//!
//! Today there is one task, [`stats_log::StatsLog`]. The reaper (declare clients whose lease
//! expired dead and reclaim what they held), the evictor (keep heap use between the watermarks)
//! and the leader lease (one serving server per region) are planned as further tasks; the service
//! loop runs whatever [`tasks`] returns, so adding one is a new file and a line here.

pub mod stats_log;

use std::time::Duration;

use gismo::store::Store;

use crate::config::ServerConfig;

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

/// The tasks the server runs, built from its configuration.
pub fn tasks(config: &ServerConfig) -> Vec<Box<dyn PeriodicTask>> {
    vec![Box::new(stats_log::StatsLog::new(config.stats_interval))]
}
