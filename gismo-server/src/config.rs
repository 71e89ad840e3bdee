//! The server's settings once parsed and checked, handed to the service and its tasks.

use std::time::Duration;

use crate::cli::Args;
use crate::failure::Failure;

/// Settings of the periodic tasks.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Heartbeat age after which a client counts as dead (for the planned reaper).
    pub lease: Duration,
    /// Heap use fraction that starts eviction (for the planned evictor).
    pub high_watermark: f64,
    /// Heap use fraction eviction stops at.
    pub low_watermark: f64,
    /// How often statistics are logged.
    pub stats_interval: Duration,
}

impl ServerConfig {
    /// Checks the values of `args`.
    ///
    /// # Errors
    /// A usage failure for a zero lease or interval, or watermarks outside `0 < low < high <= 1`.
    pub fn from_args(args: &Args) -> Result<ServerConfig, Failure> {
        if args.lease_ms == 0 {
            return Err(Failure::usage("--lease-ms must be positive"));
        }
        if args.stats_interval_ms == 0 {
            return Err(Failure::usage("--stats-interval-ms must be positive"));
        }
        let (low, high) = (args.low_watermark, args.high_watermark);
        if !(low > 0.0 && low < high && high <= 1.0) {
            return Err(Failure::usage(format!(
                "watermarks must satisfy 0 < low < high <= 1 (got low {low}, high {high})"
            )));
        }
        Ok(ServerConfig {
            lease: Duration::from_millis(args.lease_ms),
            high_watermark: high,
            low_watermark: low,
            stats_interval: Duration::from_millis(args.stats_interval_ms),
        })
    }
}
