//! Keeps the server's own client entry alive, leader or not: on other hosts a client whose
//! heartbeat is older than the lease is reaped, and the lease names the holder by this entry.

use std::time::Duration;

use gismo::store::{Client, Store};

use super::PeriodicTask;

pub struct Heartbeat {
    client: Client,
    period: Duration,
}

impl Heartbeat {
    pub fn new(client: Client, period: Duration) -> Heartbeat {
        Heartbeat { client, period }
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
        self.client
            .heartbeat()
            .map_err(|e| format!("client {}: {e}", self.client.index()))
    }
}
