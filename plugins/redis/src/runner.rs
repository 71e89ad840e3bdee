//! [`RedisRunner`]: the node's [`ObjectStoreRunner`] for a Redis store.
//!
//! Redis is the store, so the runner has no store to run: `start` checks that Redis answers and
//! installs the raylet's callbacks in the process's [`Node`] for the runner's `(url, prefix)`;
//! every client of that node then reports its seals (`add_object`) and the deletes it completes
//! (`delete_object`) there, and a write Redis refuses for lack of memory (`maxmemory`) calls
//! `object_store_full`. There is no spilling (`spill_objects` is never called): Redis's own
//! `maxmemory-policy` decides what happens when it is full.
//!
//! The memory figures come from `INFO memory`: the total is `maxmemory`, or the machine's memory
//! when Redis has no limit. Their signatures cannot fail, so when Redis does not answer they return
//! the last figures read (0 before any).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::interface::{ObjectStoreRunner, RunnerCallbacks, Status, StatusCode};
use crate::node::{MemoryInfo, Node};
use crate::schema::STATE_SEALED;
use crate::settings::RedisSettings;
use crate::settings::REDIS_KEYS;
use crate::store::ObjectId;
use crate::RedisStoreError;

/// Keys `start` accepts besides [`REDIS_KEYS`]: raylet settings that do not apply to Redis.
pub const RUNNER_IGNORED_KEYS: &[&str] = &["object_spilling_threshold"];

pub struct RedisRunner {
    node: Arc<Node>,
    /// Identifies this runner's callbacks in the node.
    token: u64,
    started: Mutex<bool>,
    last_memory: Mutex<MemoryInfo>,
}

impl RedisRunner {
    /// A runner for `settings`; connects nothing until `start`.
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for a URL the client library refuses.
    pub fn new(settings: &RedisSettings) -> Result<RedisRunner, RedisStoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(RedisRunner {
            node: Node::get(settings)?,
            token: NEXT.fetch_add(1, Ordering::Relaxed),
            started: Mutex::new(false),
            last_memory: Mutex::new(MemoryInfo::default()),
        })
    }

    /// A runner from the plugin configuration.
    ///
    /// # Errors
    /// `Invalid` for a value that does not parse.
    pub fn from_config(params: &BTreeMap<String, String>) -> Result<RedisRunner, Status> {
        Ok(RedisRunner::new(&RedisSettings::from_params(params)?)?)
    }

    fn memory(&self) -> MemoryInfo {
        let mut last = self.last_memory.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(m) = self.node.memory_info() {
            *last = m;
        }
        *last
    }

    /// `start`'s params may repeat the runner's url and prefix, not name another store.
    fn check_params(&self, params: &BTreeMap<String, String>) -> Result<(), Status> {
        for (k, v) in params {
            let own = match k.as_str() {
                "url" => Some(&self.node.settings.url),
                "prefix" => Some(&self.node.settings.prefix),
                k if REDIS_KEYS.contains(&k) || RUNNER_IGNORED_KEYS.contains(&k) => None,
                k => {
                    return Err(Status::invalid(format!(
                        "redis runner: unknown start parameter {k:?}"
                    )))
                }
            };
            if own.is_some_and(|own| own != v) {
                return Err(Status::invalid(format!(
                    "redis runner: start {k}={v:?} differs from the runner's {own:?}"
                )));
            }
        }
        Ok(())
    }
}

impl ObjectStoreRunner for RedisRunner {
    fn start(
        &self,
        params: &BTreeMap<String, String>,
        callbacks: RunnerCallbacks,
    ) -> Result<(), Status> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if *started {
            return Err(Status::invalid("runner already started"));
        }
        self.check_params(params)?;
        let pong: String = self
            .node
            .pool
            .run(|c| redis::cmd("PING").query(c))
            .map_err(Status::from)?;
        if pong != "PONG" {
            return Err(Status::new(
                StatusCode::IOError,
                format!("redis at {}: PING answered {pong:?}", self.node.pool.url()),
            ));
        }
        self.node
            .install_callbacks(self.token, callbacks)
            .map_err(|()| {
                Status::invalid(format!(
                    "another redis runner is started for {} prefix {:?} in this process",
                    self.node.pool.url(),
                    self.node.settings.prefix
                ))
            })?;
        *started = true;
        Ok(())
    }

    fn stop(&self) {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::replace(&mut *started, false) {
            self.node.remove_callbacks(self.token);
        }
    }

    /// Sealed and referenced exactly once (the raylet's pin), counting every process's
    /// references (`refs` in the object's hash).
    fn is_object_spillable(&self, id: &ObjectId) -> bool {
        let key = self.node.keys.object(id);
        let r: Result<(Option<String>, Option<i64>), _> = self.node.pool.run(|c| {
            redis::cmd("HMGET")
                .arg(&key)
                .arg("state")
                .arg("refs")
                .query(c)
        });
        matches!(r, Ok((Some(s), Some(1))) if s == STATE_SEALED)
    }

    fn consumed_bytes(&self) -> i64 {
        self.node.counters.created_bytes.load(Ordering::Relaxed) as i64
    }

    fn fallback_allocated(&self) -> i64 {
        0
    }

    fn available_memory(&self) -> i64 {
        let m = self.memory();
        m.capacity().saturating_sub(m.used_memory) as i64
    }

    fn total_memory_size(&self) -> i64 {
        self.memory().capacity() as i64
    }

    fn max_memory_size(&self) -> i64 {
        self.total_memory_size()
    }
}

impl Drop for RedisRunner {
    fn drop(&mut self) {
        self.stop();
    }
}
