//! Liveness leases, and reaping what dead clients held.
//!
//! Every client's references and creations are mirrored in Redis by the lifecycle scripts
//! (`<prefix>held:<client>`, see [`schema`](super::schema)), and every script that adds to them
//! also refreshes the client's lease (`<prefix>live:<client>`, a key with a TTL of `lease_ms`).
//! Each node runs one thread that refreshes the leases of its process's clients every third of
//! the lease and, once per lease, reaps: a `held` hash whose client has no live key belongs to a
//! process that died (or hung past its lease), and the `reap` script gives its references back,
//! completes the deletes they held up and aborts its creations — the redis plugin's
//! counterpart of GISMO's reaper. Any node may reap any dead client; the script is atomic, so
//! two nodes reaping at once do the work once.

use std::collections::HashSet;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::store::ObjectId;
use crate::RedisStoreError;

/// The clients of this process whose leases a node keeps alive.
#[derive(Default)]
pub struct Leases {
    clients: Mutex<HashSet<String>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, client: &str) {
        self.lock().insert(client.to_string());
    }

    pub fn unregister(&self, client: &str) {
        self.lock().remove(client);
    }

    fn snapshot(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn contains(&self, client: &str) -> bool {
        self.lock().contains(client)
    }
}

/// Starts the node's lease thread; it ends when the node is dropped.
pub fn spawn(node: Weak<Node>, lease: Duration) {
    let period = (lease / 3).max(Duration::from_millis(10));
    let _ = std::thread::Builder::new()
        .name("gismo-redis-lease".into())
        .spawn(move || {
            let mut last_reap = Instant::now();
            loop {
                std::thread::sleep(period);
                let Some(node) = node.upgrade() else {
                    return;
                };
                // Redis unreachable: nothing to refresh or reap now; the next round retries.
                let _ = node.refresh_leases();
                if last_reap.elapsed() >= lease {
                    last_reap = Instant::now();
                    let _ = node.reap_dead();
                }
            }
        });
}

impl Node {
    /// The lease in milliseconds (the scripts' TTL argument).
    pub fn lease_ms(&self) -> u64 {
        self.settings.lease.as_millis().max(1) as u64
    }

    /// Refreshes the lease of every client of this process.
    ///
    /// # Errors
    /// Redis unreachable or failing.
    pub fn refresh_leases(&self) -> Result<(), RedisStoreError> {
        let clients = self.leases.snapshot();
        if clients.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for c in &clients {
            pipe.cmd("SET")
                .arg(self.keys.live(c))
                .arg(1)
                .arg("PX")
                .arg(self.lease_ms())
                .ignore();
        }
        self.pool.run(|c| pipe.query::<()>(c))
    }

    /// Reaps every dead client (a `held` hash without a live key): gives back its references
    /// (reporting the deletes that completes), aborts its creations. Returns how many clients'
    /// hashes were reaped.
    ///
    /// # Errors
    /// Redis unreachable or failing.
    pub fn reap_dead(&self) -> Result<usize, RedisStoreError> {
        let pattern = self.keys.held_pattern();
        let mut cursor: u64 = 0;
        let mut held: Vec<String> = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self.pool.run(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            held.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut reaped = 0;
        for key in held {
            let Some(client) = self.keys.held_client(&key) else {
                continue;
            };
            if self.leases.contains(client) {
                continue;
            }
            let mut call = self.scripts.reap.prepare_invoke();
            call.key(&key)
                .key(self.keys.live(client))
                .arg(self.keys.object_prefix())
                .arg(client);
            let deleted: Vec<String> = self.pool.run(|c| call.invoke(c))?;
            // The script removes the hash of a dead client and leaves a live one's.
            let still_held = self
                .pool
                .run(|c| redis::cmd("EXISTS").arg(&key).query::<bool>(c))?;
            if !still_held {
                reaped += 1;
            }
            for hex in deleted {
                if let Ok(id) = hex.parse::<ObjectId>() {
                    self.report_deleted(&id);
                }
            }
        }
        Ok(reaped)
    }
}
