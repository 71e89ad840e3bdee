//! [`Node`]: what every client and the runner of one store share inside a process — the
//! connection pool, the seal waiter, the runner's callbacks and the node's counters.
//!
//! Nodes live in a process-wide registry keyed by `(url, prefix)`, held weakly: the first client or
//! runner of a store makes its node, later ones (any configuration with the same url and prefix)
//! share it, and it goes away with the last of them. The first configuration's pool size and
//! timeouts are the node's; `docs/redis.md` says so.
//!
//! This is how a client finds its node's runner: the runner's `start` installs its callbacks
//! here ([`Node::install_callbacks`]), and a client reports its seals and completed deletes
//! through [`Node::report_sealed`] / [`Node::report_deleted`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use crate::interface::{ObjectInfo, RunnerCallbacks};
use crate::lease::{self, Leases};
use crate::pool::Pool;
use crate::schema::{Keys, Scripts};
use crate::settings::RedisSettings;
use crate::store::ObjectId;
use crate::waiter::SealWaiter;
use crate::RedisStoreError;

/// What this process did to the store (for the runner and `get_memory_usage`).
#[derive(Default)]
pub struct Counters {
    /// Bytes (data + metadata) of every object created through this node.
    pub created_bytes: AtomicU64,
    pub sealed: AtomicU64,
    /// Deletes completed through this node (including by a last release).
    pub deleted: AtomicU64,
}

/// The runner's callbacks and the token of the runner that installed them.
struct Installed {
    runner: u64,
    callbacks: RunnerCallbacks,
}

pub struct Node {
    pub settings: RedisSettings,
    pub pool: Pool,
    pub keys: Keys,
    pub scripts: Scripts,
    pub waiter: SealWaiter,
    pub counters: Counters,
    /// This process's clients, whose liveness leases the node's thread refreshes.
    pub leases: Leases,
    callbacks: RwLock<Option<Installed>>,
}

type Registry = Mutex<HashMap<(String, String), Weak<Node>>>;

fn registry() -> &'static Registry {
    static NODES: OnceLock<Registry> = OnceLock::new();
    NODES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Node {
    /// The process's node for `settings.url` and `settings.prefix`, made if there is none.
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for a URL the client refuses. Never touches the network.
    pub fn get(settings: &RedisSettings) -> Result<Arc<Node>, RedisStoreError> {
        let key = (settings.url.clone(), settings.prefix.clone());
        let mut nodes = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(node) = nodes.get(&key).and_then(Weak::upgrade) {
            return Ok(node);
        }
        let pool = Pool::new(settings)?;
        let keys = Keys::new(&settings.prefix);
        let waiter = SealWaiter::new(
            pool.client().clone(),
            keys.sealed_channel(),
            settings.connect_timeout,
        );
        let node = Arc::new(Node {
            settings: settings.clone(),
            pool,
            keys,
            scripts: Scripts::new(),
            waiter,
            counters: Counters::default(),
            leases: Leases::default(),
            callbacks: RwLock::new(None),
        });
        lease::spawn(Arc::downgrade(&node), settings.lease);
        nodes.retain(|_, w| w.strong_count() > 0);
        nodes.insert(key, Arc::downgrade(&node));
        Ok(node)
    }

    /// Installs a runner's callbacks; `runner` is the runner's token.
    ///
    /// # Errors
    /// `Err(())` when another runner of this node is started.
    #[allow(clippy::result_unit_err)]
    pub fn install_callbacks(&self, runner: u64, callbacks: RunnerCallbacks) -> Result<(), ()> {
        let mut slot = self.callbacks.write().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(i) if i.runner != runner => Err(()),
            _ => {
                *slot = Some(Installed { runner, callbacks });
                Ok(())
            }
        }
    }

    /// Removes `runner`'s callbacks (if they are the installed ones).
    pub fn remove_callbacks(&self, runner: u64) {
        let mut slot = self.callbacks.write().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|i| i.runner == runner) {
            *slot = None;
        }
    }

    fn callbacks(&self) -> Option<RunnerCallbacks> {
        self.callbacks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|i| i.callbacks.clone())
    }

    /// A seal through this node: `add_object` on the runner (called outside any lock).
    pub fn report_sealed(&self, info: &ObjectInfo) {
        self.counters.sealed.fetch_add(1, Ordering::Relaxed);
        if let Some(cb) = self.callbacks() {
            (cb.add_object)(info);
        }
    }

    /// A delete completed through this node: `delete_object` on the runner.
    pub fn report_deleted(&self, id: &ObjectId) {
        self.counters.deleted.fetch_add(1, Ordering::Relaxed);
        if let Some(cb) = self.callbacks() {
            (cb.delete_object)(id);
        }
    }

    /// Redis refused a write for lack of memory: the raylet's `object_store_full` callback.
    pub fn report_full(&self) {
        if let Some(cb) = self.callbacks() {
            (cb.object_store_full)();
        }
    }
}

/// The `INFO memory` numbers the runner and `get_memory_usage` use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryInfo {
    pub used_memory: u64,
    /// 0: no limit configured.
    pub maxmemory: u64,
    pub total_system_memory: u64,
}

impl MemoryInfo {
    /// Parses the `field:value` lines of `INFO memory` (missing fields are 0).
    pub fn parse(info: &str) -> MemoryInfo {
        let mut m = MemoryInfo::default();
        for line in info.lines() {
            let Some((k, v)) = line.trim().split_once(':') else {
                continue;
            };
            let v = v.trim().parse::<u64>().unwrap_or(0);
            match k {
                "used_memory" => m.used_memory = v,
                "maxmemory" => m.maxmemory = v,
                "total_system_memory" => m.total_system_memory = v,
                _ => {}
            }
        }
        m
    }

    /// What the store may hold: `maxmemory`, or the machine's memory when there is no limit.
    pub fn capacity(&self) -> u64 {
        if self.maxmemory > 0 {
            self.maxmemory
        } else {
            self.total_system_memory
        }
    }
}

/// `SCAN` stops counting after this many keys (the count is a debugging aid, not an inventory).
const COUNT_LIMIT: u64 = 100_000;

impl Node {
    /// `INFO memory`.
    ///
    /// # Errors
    /// Redis unreachable or failing.
    pub fn memory_info(&self) -> Result<MemoryInfo, RedisStoreError> {
        let info: String = self
            .pool
            .run(|c| redis::cmd("INFO").arg("memory").query(c))?;
        Ok(MemoryInfo::parse(&info))
    }

    /// Object keys under the prefix, counted with `SCAN` (shown as `>=N` past the limit).
    ///
    /// # Errors
    /// Redis unreachable or failing.
    pub fn count_objects(&self) -> Result<String, RedisStoreError> {
        let pattern = self.keys.object_pattern();
        let mut cursor: u64 = 0;
        let mut count: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.pool.run(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            count += keys.len() as u64;
            if next == 0 {
                return Ok(count.to_string());
            }
            if count >= COUNT_LIMIT {
                return Ok(format!(">={count}"));
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryInfo;

    #[test]
    fn memory_info_parses_info_memory() {
        let m = MemoryInfo::parse(
            "# Memory\r\nused_memory:1024\r\nused_memory_human:1.00K\r\nmaxmemory:0\r\n\
             total_system_memory:8000\r\n",
        );
        assert_eq!(
            m,
            MemoryInfo {
                used_memory: 1024,
                maxmemory: 0,
                total_system_memory: 8000
            }
        );
        assert_eq!(m.capacity(), 8000);
        assert_eq!(MemoryInfo::parse("maxmemory:500").capacity(), 500);
    }
}
