//! The server's settings once parsed and checked, handed to the service and its tasks.

use std::time::Duration;

use gismo_core::store::eviction::EvictionPolicy;
use gismo_core::store::maintenance::MaintainerConfig;

use crate::cli::Args;
use crate::failure::Failure;

/// The longest interval between two polls of the leader lease.
pub const MAX_LEASE_POLL: Duration = Duration::from_millis(100);

/// Settings of the periodic tasks.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Heartbeat age after which a client on another host counts as dead, and the length of
    /// the leader lease.
    pub lease: Duration,
    /// How much longer than the lease a follower waits before taking over (cross-host clock
    /// skew allowance).
    pub leader_slack: Duration,
    /// How often the leader reaps and checks the watermarks.
    pub reap_interval: Duration,
    /// The eviction watermarks: heap use fractions that start eviction and that it stops at.
    pub eviction: EvictionPolicy,
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
        if args.reap_interval_ms == 0 {
            return Err(Failure::usage("--reap-interval-ms must be positive"));
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
        let eviction = EvictionPolicy::with_watermarks(high, low)
            .map_err(|e| Failure::usage(e.to_string()))?;
        Ok(ServerConfig {
            lease: Duration::from_millis(args.lease_ms),
            eviction,
            stats_interval: Duration::from_millis(args.stats_interval_ms),
            leader_slack: Duration::from_millis(args.leader_slack_ms),
            reap_interval: Duration::from_millis(args.reap_interval_ms),
        })
    }

    /// How often the lease is renewed (holder) or checked (others): a third of the lease, so a
    /// holder renews at least twice more before its lease could run out, and at most
    /// [`MAX_LEASE_POLL`], so a released lease is taken over promptly even when leases are long.
    ///
    /// Takeover bound: a successor leads within `lease + leader_slack + lease_poll()` of the
    /// holder's death (within `lease_poll()` of a clean stop, which releases the lease).
    pub fn lease_poll(&self) -> Duration {
        (self.lease / 3).clamp(Duration::from_millis(1), MAX_LEASE_POLL)
    }

    /// The store core's maintainer settings for a server whose client is named `client_name`
    /// (the tasks run its steps at the periods above).
    pub fn maintainer(&self, client_name: &str) -> MaintainerConfig {
        let mut m = MaintainerConfig::new(client_name, self.lease.as_millis() as u64);
        m.slack_ms = self.leader_slack.as_millis() as u64;
        m.lease_poll_ms = self.lease_poll().as_millis() as u64;
        m.reap_period_ms = self.reap_interval.as_millis() as u64;
        m.eviction = self.eviction;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> ServerConfig {
        let args = Args::parse_from(std::iter::once("gismo-server").chain(args.iter().copied()));
        ServerConfig::from_args(&args).expect("valid")
    }

    #[test]
    fn the_lease_poll_is_a_third_of_the_lease_at_most_100_ms() {
        assert_eq!(
            config(&["--lease-ms", "300"]).lease_poll(),
            Duration::from_millis(100)
        );
        assert_eq!(
            config(&["--lease-ms", "90"]).lease_poll(),
            Duration::from_millis(30)
        );
        assert_eq!(config(&[]).lease_poll(), MAX_LEASE_POLL);
        assert_eq!(
            config(&["--lease-ms", "1"]).lease_poll(),
            Duration::from_millis(1)
        );
    }
}
