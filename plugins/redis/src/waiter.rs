//! Waking a `get` that waits for an object not yet sealed — without polling Redis.
//!
//! # Protocol
//!
//! Every seal publishes the object's hex id on `<prefix>sealed` inside its Lua script, so the
//! message and the sealed hash appear together. One subscriber thread per node (started by the
//! first waiting `get`) holds a `SUBSCRIBE` connection and keeps an **event counter**, bumped (with
//! a `notify_all`) whenever a message names an id some `get` watches, and whenever a subscription
//! is (re)established — messages published while no subscription existed are lost, so every
//! watcher must look again.
//!
//! A waiting `get`:
//! 1. registers its missing ids ([`SealWaiter::watch`]);
//! 2. reads the counter, then re-reads Redis for the missing ids;
//! 3. sleeps until the counter moves past what it read in step 2, its deadline, or the
//!    `wait_recheck_ms` safety interval (for writers outside Ray that do not publish), and goes
//!    back to step 2.
//!
//! No lost wakeup: a seal that lands after the re-read of step 2 publishes after it; the
//! subscriber either already had its subscription (the message bumps the counter, which the
//! waiter compares against the value it read *before* the re-read) or re-subscribes later (which
//! bumps the counter too). The counter only moves under the state mutex the waiter sleeps on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::ObjectId;

/// How often the subscriber thread wakes from a blocking read to see whether it should stop.
const POLL_STOP: Duration = Duration::from_millis(200);
/// Reconnect back-off bounds while the server is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

#[derive(Default)]
struct State {
    /// Watched id → number of watches on it.
    watched: HashMap<ObjectId, usize>,
    /// Bumped for a message on a watched id and for every (re)subscription.
    events: u64,
    /// Whether the subscriber thread has been started.
    started: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self, id: Option<&ObjectId>) {
        let mut st = self.lock();
        if id.is_none_or(|id| st.watched.contains_key(id)) {
            st.events = st.events.wrapping_add(1);
            self.changed.notify_all();
        }
    }
}

/// The seal subscription of one node.
pub struct SealWaiter {
    shared: Arc<Shared>,
    client: redis::Client,
    channel: String,
    connect_timeout: Duration,
}

/// A registration of some ids; dropping it unregisters them.
pub struct Watch<'a> {
    waiter: &'a SealWaiter,
    ids: Vec<ObjectId>,
}

impl SealWaiter {
    pub fn new(client: redis::Client, channel: String, connect_timeout: Duration) -> SealWaiter {
        SealWaiter {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                stop: AtomicBool::new(false),
            }),
            client,
            channel,
            connect_timeout,
        }
    }

    /// Registers `ids` and makes sure the subscriber runs.
    pub fn watch(&self, ids: &[ObjectId]) -> Watch<'_> {
        let start = {
            let mut st = self.shared.lock();
            for id in ids {
                *st.watched.entry(*id).or_insert(0) += 1;
            }
            !std::mem::replace(&mut st.started, true)
        };
        if start {
            let shared = self.shared.clone();
            let client = self.client.clone();
            let channel = self.channel.clone();
            let timeout = self.connect_timeout;
            let spawned = std::thread::Builder::new()
                .name("gismo-redis-sub".into())
                .spawn(move || subscriber(shared, client, channel, timeout));
            if spawned.is_err() {
                // Without a subscriber, waits fall back to the re-check interval.
                self.shared.lock().started = false;
            }
        }
        Watch {
            waiter: self,
            ids: ids.to_vec(),
        }
    }
}

impl Drop for SealWaiter {
    fn drop(&mut self) {
        // The thread sees the flag within POLL_STOP (or its back-off) and exits on its own.
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }
}

impl Watch<'_> {
    /// The event counter; read it *before* re-reading Redis.
    pub fn events(&self) -> u64 {
        self.waiter.shared.lock().events
    }

    /// Sleeps until the counter differs from `seen` or `until` passes.
    pub fn wait(&self, seen: u64, until: Instant) {
        let shared = &self.waiter.shared;
        let mut st = shared.lock();
        while st.events == seen {
            let now = Instant::now();
            if now >= until {
                return;
            }
            st = shared
                .changed
                .wait_timeout(st, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut st = self.waiter.shared.lock();
        for id in &self.ids {
            if let Some(n) = st.watched.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    st.watched.remove(id);
                }
            }
        }
    }
}

/// Sleeps `d` in slices, returning early (true) when asked to stop.
fn sleep_unless_stopped(shared: &Shared, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(POLL_STOP));
    }
}

/// The subscriber thread: (re)subscribes with back-off, bumps the counter on watched ids.
fn subscriber(shared: Arc<Shared>, client: redis::Client, channel: String, timeout: Duration) {
    let mut backoff = BACKOFF_MIN;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut conn = match client.get_connection_with_timeout(timeout) {
            Ok(c) => c,
            Err(_) => {
                if sleep_unless_stopped(&shared, backoff) {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut pubsub = conn.as_pubsub();
        if pubsub.set_read_timeout(Some(timeout)).is_err() || pubsub.subscribe(&channel).is_err() {
            if sleep_unless_stopped(&shared, backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        }
        backoff = BACKOFF_MIN;
        // Subscribed: anything published before now may have been missed; everyone re-reads.
        shared.bump(None);
        if pubsub.set_read_timeout(Some(POLL_STOP)).is_err() {
            continue;
        }
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    let id = std::str::from_utf8(msg.get_payload_bytes())
                        .ok()
                        .and_then(|s| s.parse::<ObjectId>().ok());
                    if let Some(id) = id {
                        shared.bump(Some(&id));
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(_) => break,
            }
        }
    }
}
