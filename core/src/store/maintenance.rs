//! The [`Maintainer`]: the periodic work that keeps a region healthy, in one component that
//! `gismo-server` and the GISMO runner's embedded server both drive.
//!
//! A maintainer is a registered client of its own (named by the embedder: `gismo-server`,
//! `gismo-runner`) and does, in this order:
//!
//! 1. **Heartbeat** of its own client ([`keep_alive`]): if the client was declared dead anyway
//!    (this process was stopped or starved for longer than the lease and another maintainer fenced
//!    it), it registers a new client and claims the lease under that identity from then on; the
//!    old identity can no longer lead.
//! 2. **Leader lease**: claims, renews or watches the region's lease ([`LeaderLease`]). Only the
//!    holder does the rest, and it asks the lease right before each step, so a maintainer that
//!    lost the lease stops at once.
//! 3. **Reaping** dead clients, finishing the deletes they left half done and collecting orphaned
//!    heap blocks ([`Store::reap_dead`], under the region's maintenance lock).
//! 4. **Eviction under pressure**: above the high watermark, evicts down to the low one
//!    ([`EvictionPolicy::excess`]; the victims as [`EvictionPolicy`] chooses them), as its own
//!    client's operation, so that if it dies mid-eviction the next reaper finishes the job.
//! 5. **Statistics** ([`Maintainer::stats`]): the store's counters and this maintainer's role.
//!
//! Each step is a method that returns what it did, for the embedder to log (the store core does
//! no logging). [`Maintainer::tick`] runs the steps that are due at a time of the caller's
//! monotonic clock (heartbeat and lease every [`MaintainerConfig::lease_poll_ms`], reaping and
//! eviction every [`MaintainerConfig::reap_period_ms`]); [`Maintainer::spawn`] runs `tick` on a
//! thread of its own until [`MaintainerThread::stop`]. `gismo-server` schedules the steps itself
//! (each as one of its periodic tasks, with its own periods and logs).
//!
//! A maintainer that stops cleanly (drop, [`Maintainer::release`]) gives the lease up, so another
//! claims it at its next poll instead of waiting for it to run out.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::store::client::Client;
use crate::store::error::{Result, StoreError};
use crate::store::eviction::EvictionPolicy;
use crate::store::handle::{Stats, Store};
use crate::store::leader::{LeaderId, LeaderLease, LeaseEvent};
use crate::store::ReapReport;

/// The longest interval between two polls of the leader lease ([`MaintainerConfig::new`]).
pub const MAX_LEASE_POLL_MS: u64 = 100;

/// What a [`Maintainer`] does and how often.
#[derive(Clone, Debug, PartialEq)]
pub struct MaintainerConfig {
    /// The name its client carries in the client table.
    pub client_name: String,
    /// Heartbeat age after which a client that cannot be checked by pid counts as dead, and the
    /// length of the leader lease (ms).
    pub lease_ms: u64,
    /// How much longer than the lease a follower waits before taking over (ms).
    pub slack_ms: u64,
    /// How often [`Maintainer::tick`] heartbeats and polls the lease (ms).
    pub lease_poll_ms: u64,
    /// How often [`Maintainer::tick`] reaps and checks the watermarks, as leader (ms).
    pub reap_period_ms: u64,
    /// The watermarks of background eviction.
    pub eviction: EvictionPolicy,
}

impl MaintainerConfig {
    /// A lease of `lease_ms`, a slack of 100 ms, the lease polled every `lease / 3` (at least
    /// 1 ms, at most [`MAX_LEASE_POLL_MS`]), reaping every 100 ms, and eviction only for creates.
    pub fn new(client_name: &str, lease_ms: u64) -> MaintainerConfig {
        MaintainerConfig {
            client_name: client_name.to_string(),
            lease_ms,
            slack_ms: 100,
            lease_poll_ms: lease_poll_ms(lease_ms),
            reap_period_ms: 100,
            eviction: EvictionPolicy::default(),
        }
    }
}

/// How often a lease of `lease_ms` is renewed (holder) or checked (others): a third of the lease,
/// so a holder renews at least twice more before its lease could run out, and at most
/// [`MAX_LEASE_POLL_MS`], so a released lease is taken over promptly even when leases are long.
pub fn lease_poll_ms(lease_ms: u64) -> u64 {
    (lease_ms / 3).clamp(1, MAX_LEASE_POLL_MS)
}

/// What a heartbeat found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// The client is alive; its heartbeat was refreshed.
    Alive,
    /// The client had been declared dead (`old`); a new one (`new`) was registered in its place.
    Reregistered { old: LeaderId, new: LeaderId },
}

/// Keeps `client` alive: refreshes its heartbeat, or, if it was fenced (declared dead while this
/// process was paused past its lease), registers a new client named `name` in its place. The
/// fenced client's drop does nothing to the region: the reaper owns its entry.
///
/// # Errors
/// As [`Store::connect`] when registering again fails (`ClientTableFull`); `client` is then
/// still the fenced one, and the next call tries again.
pub fn keep_alive(client: &mut Client, name: &str) -> Result<Heartbeat> {
    match client.heartbeat() {
        Ok(()) => Ok(Heartbeat::Alive),
        Err(StoreError::Fenced { .. }) => {
            let old = client.maintainer_id();
            let fresh = client.store().connect(name)?;
            let new = fresh.maintainer_id();
            *client = fresh;
            Ok(Heartbeat::Reregistered { old, new })
        }
        Err(e) => Err(e),
    }
}

/// What one reaping step did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reap {
    /// Not the leader: nothing done.
    NotLeader,
    /// One report per client reaped (empty: nobody was dead).
    Reaped(Vec<ReapReport>),
    /// Another client (client `holder`, e.g. a Python `reap_dead`) holds the maintenance lock
    /// and reaps right now: nothing done.
    Busy { holder: usize },
    /// This maintainer was taken for dead mid-pass and lost the maintenance lock; its new holder
    /// finishes the pass.
    Lost,
}

/// What one eviction step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evict {
    /// Not the leader: nothing done.
    NotLeader,
    /// Heap use is not above the high watermark.
    Below,
    /// Heap use was `used` of `heap`, above the high watermark: `freed` of the `target` bytes
    /// wanted were freed (less when the rest is referenced or unsealed); `used_after` is left.
    Evicted {
        used: u64,
        heap: u64,
        target: u64,
        freed: u64,
        used_after: u64,
    },
}

/// The store's statistics and this maintainer's role.
#[derive(Clone, Debug)]
pub struct StatsReport {
    pub stats: Stats,
    pub leader: bool,
}

/// What one [`Maintainer::tick`] did: `None` for a step that was not due.
#[derive(Debug, Default)]
pub struct Tick {
    pub heartbeat: Option<Result<Heartbeat>>,
    pub lease: Option<LeaseEvent>,
    pub reap: Option<Result<Reap>>,
    pub evict: Option<Result<Evict>>,
}

/// The periodic maintenance of one region by one process (see the module docs).
pub struct Maintainer {
    store: Arc<Store>,
    client: Client,
    lease: LeaderLease,
    config: MaintainerConfig,
    /// When [`Maintainer::tick`] next heartbeats and polls the lease (None: at once).
    next_poll_ms: Option<u64>,
    /// When [`Maintainer::tick`] next reaps and evicts (None: at once).
    next_reap_ms: Option<u64>,
}

impl std::fmt::Debug for Maintainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintainer")
            .field("me", &self.lease.me())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Maintainer {
    /// Registers the maintainer's client (named [`MaintainerConfig::client_name`]) in `store`.
    /// It claims the lease at its first poll.
    ///
    /// # Errors
    /// As [`Store::connect`] (`ClientTableFull`).
    pub fn new(store: &Arc<Store>, config: MaintainerConfig) -> Result<Maintainer> {
        let client = store.connect(&config.client_name)?;
        let lease = LeaderLease::new(
            Arc::clone(store),
            client.maintainer_id(),
            config.lease_ms,
            config.slack_ms,
        );
        Ok(Maintainer {
            store: Arc::clone(store),
            client,
            lease,
            config,
            next_poll_ms: None,
            next_reap_ms: None,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &MaintainerConfig {
        &self.config
    }

    /// The identity this maintainer claims the lease under (its client's index and epoch).
    pub fn me(&self) -> LeaderId {
        self.lease.me()
    }

    /// Whether this maintainer may act as leader at `now_ms` (its monotonic clock).
    pub fn is_leader(&self, now_ms: u64) -> bool {
        self.lease.is_leader(now_ms)
    }

    /// Step 1: keeps this maintainer's client alive ([`keep_alive`]); after registering again it
    /// claims the lease under the new identity, giving up any lease held under the old one.
    ///
    /// # Errors
    /// As [`keep_alive`].
    pub fn heartbeat(&mut self) -> Result<Heartbeat> {
        let beat = keep_alive(&mut self.client, &self.config.client_name)?;
        if let Heartbeat::Reregistered { new, .. } = beat {
            self.lease.rebind(new);
        }
        Ok(beat)
    }

    /// Step 2: renews, claims or watches the leader lease at `now_ms` (monotonic).
    pub fn poll_lease(&mut self, now_ms: u64) -> LeaseEvent {
        self.lease.poll(now_ms)
    }

    /// Step 3, as leader: reaps dead clients, finishes the deletes they left and collects
    /// orphaned blocks ([`Store::reap_dead`]).
    ///
    /// # Errors
    /// As [`Store::reap_dead`], except the maintenance lock being busy or lost ([`Reap::Busy`],
    /// [`Reap::Lost`]).
    pub fn reap(&mut self, now_ms: u64) -> Result<Reap> {
        if !self.lease.is_leader(now_ms) {
            return Ok(Reap::NotLeader);
        }
        match self.client.reap_dead(self.config.lease_ms) {
            Ok(reports) => Ok(Reap::Reaped(reports)),
            Err(StoreError::MaintenanceBusy { holder }) => Ok(Reap::Busy { holder }),
            Err(StoreError::MaintenanceLost) => Ok(Reap::Lost),
            Err(e) => Err(e),
        }
    }

    /// Step 4, as leader: evicts down to the low watermark when heap use is above the high one.
    ///
    /// # Errors
    /// As [`Client::evict`].
    pub fn evict(&mut self, now_ms: u64) -> Result<Evict> {
        if !self.lease.is_leader(now_ms) {
            return Ok(Evict::NotLeader);
        }
        let (used, heap) = (self.store.used_bytes(), self.store.heap_bytes());
        let Some(target) = self.config.eviction.excess(used, heap) else {
            return Ok(Evict::Below);
        };
        let freed = self.client.evict(target)?;
        Ok(Evict::Evicted {
            used,
            heap,
            target,
            freed,
            used_after: self.store.used_bytes(),
        })
    }

    /// Step 5: the store's statistics and this maintainer's role at `now_ms`.
    pub fn stats(&self, now_ms: u64) -> StatsReport {
        StatsReport {
            stats: self.store.stats(),
            leader: self.lease.is_leader(now_ms),
        }
    }

    /// Runs the steps due at `now_ms` (monotonic): heartbeat and lease every
    /// [`MaintainerConfig::lease_poll_ms`], then, as leader, reaping and eviction every
    /// [`MaintainerConfig::reap_period_ms`]. The first tick runs every step.
    pub fn tick(&mut self, now_ms: u64) -> Tick {
        let mut tick = Tick::default();
        if self.next_poll_ms.is_none_or(|t| now_ms >= t) {
            self.next_poll_ms = Some(now_ms.saturating_add(self.config.lease_poll_ms));
            tick.heartbeat = Some(self.heartbeat());
            tick.lease = Some(self.poll_lease(now_ms));
        }
        if self.lease.is_leader(now_ms) && self.next_reap_ms.is_none_or(|t| now_ms >= t) {
            self.next_reap_ms = Some(now_ms.saturating_add(self.config.reap_period_ms));
            tick.reap = Some(self.reap(now_ms));
            tick.evict = Some(self.evict(now_ms));
        }
        tick
    }

    /// When the next step of [`Maintainer::tick`] is due, as seen at `now_ms`.
    fn next_due_ms(&self, now_ms: u64) -> u64 {
        let poll = self.next_poll_ms.unwrap_or(now_ms);
        if self.lease.is_leader(now_ms) {
            poll.min(self.next_reap_ms.unwrap_or(now_ms))
        } else {
            poll
        }
    }

    /// Gives the leader lease up (if held), so another maintainer claims it at its next poll.
    /// Returns whether this maintainer was leader at `now_ms`.
    pub fn release(&mut self, now_ms: u64) -> bool {
        let was = self.lease.is_leader(now_ms);
        self.lease.release();
        was
    }

    /// Runs [`Maintainer::tick`] on a thread of its own (named `name`), on this process's
    /// monotonic clock, handing each tick's outcome to `on_tick`, until
    /// [`MaintainerThread::stop`] (or its drop), which releases the lease.
    ///
    /// # Errors
    /// The OS error when the thread cannot be spawned.
    pub fn spawn(
        mut self,
        name: &str,
        mut on_tick: impl FnMut(&Tick) + Send + 'static,
    ) -> std::io::Result<MaintainerThread> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                loop {
                    let now = crate::clock::monotonic_ms();
                    on_tick(&self.tick(now));
                    let now = crate::clock::monotonic_ms();
                    let nap = self.next_due_ms(now).saturating_sub(now);
                    match stopped.recv_timeout(Duration::from_millis(nap.max(1))) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        // Asked to stop, or the handle is gone.
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                self.release(crate::clock::monotonic_ms());
                self
            })?;
        Ok(MaintainerThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        self.lease.release();
    }
}

/// A [`Maintainer`] running on its own thread ([`Maintainer::spawn`]).
#[derive(Debug)]
pub struct MaintainerThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Maintainer>>,
}

impl MaintainerThread {
    /// Stops the thread after its current tick, waits for it, and returns the maintainer (its
    /// lease released; its client still registered until it is dropped). `None` if the thread
    /// panicked.
    pub fn stop(mut self) -> Option<Maintainer> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Option<Maintainer> {
        if let Some(stop) = self.stop.take() {
            // A thread that already ended has dropped the receiver: nothing to tell it.
            let _ = stop.send(());
        }
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for MaintainerThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Region, RegionOptions, RegionSpec};
    use crate::store::{CreateInfo, ObjectId};

    fn store(dir: &tempfile::TempDir, bytes: u64) -> Arc<Store> {
        let spec = RegionSpec::File(dir.path().join("region"));
        let region = Region::create(&spec, bytes, &RegionOptions::default()).unwrap();
        Store::format(region, &Default::default()).unwrap()
    }

    #[test]
    fn the_lease_poll_is_a_third_of_the_lease_at_most_100_ms() {
        assert_eq!(lease_poll_ms(300), 100);
        assert_eq!(lease_poll_ms(90), 30);
        assert_eq!(lease_poll_ms(5000), MAX_LEASE_POLL_MS);
        assert_eq!(lease_poll_ms(1), 1);
    }

    #[test]
    fn the_first_tick_claims_the_lease_and_acts_as_leader() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 32 << 20);
        let mut m = Maintainer::new(&s, MaintainerConfig::new("m", 300)).unwrap();
        let t = m.tick(1_000);
        assert!(matches!(t.heartbeat, Some(Ok(Heartbeat::Alive))), "{t:?}");
        assert_eq!(t.lease, Some(LeaseEvent::Acquired { previous: None }));
        assert!(matches!(t.reap, Some(Ok(Reap::Reaped(ref r))) if r.is_empty()));
        assert!(matches!(t.evict, Some(Ok(Evict::Below))), "{t:?}");
        assert_eq!(s.leader().holder, Some(m.me()));
        // Nothing is due again before its period.
        let t = m.tick(1_010);
        assert!(t.heartbeat.is_none() && t.lease.is_none());
        assert!(t.reap.is_none() && t.evict.is_none());
        let t = m.tick(1_100);
        assert_eq!(t.lease, Some(LeaseEvent::Renewed));
        assert!(t.reap.is_some());
        assert!(m.release(1_100));
        assert_eq!(s.leader().holder, None);
    }

    #[test]
    fn a_follower_does_not_reap_or_evict() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 32 << 20);
        let mut a = Maintainer::new(&s, MaintainerConfig::new("a", 300)).unwrap();
        let mut b = Maintainer::new(&s, MaintainerConfig::new("b", 300)).unwrap();
        a.tick(1_000);
        let t = b.tick(1_000);
        assert!(
            matches!(t.lease, Some(LeaseEvent::Follower { .. })),
            "{t:?}"
        );
        assert!(t.reap.is_none() && t.evict.is_none());
        assert!(matches!(b.reap(1_000), Ok(Reap::NotLeader)));
        assert!(matches!(b.evict(1_000), Ok(Evict::NotLeader)));
        // A clean stop of the leader hands the lease over at the follower's next poll.
        drop(a);
        assert_eq!(
            b.tick(1_100).lease,
            Some(LeaseEvent::Acquired { previous: None })
        );
    }

    #[test]
    fn above_the_high_watermark_the_leader_evicts_to_the_low_one_and_spares_references() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 32 << 20);
        let mut config = MaintainerConfig::new("m", 300);
        config.eviction = EvictionPolicy::with_watermarks(0.5, 0.25).unwrap();
        let mut m = Maintainer::new(&s, config).unwrap();
        let c = s.connect("writer").unwrap();
        let size = 1 << 20;
        let pinned_id = ObjectId::from_u64(1);
        let mut pinned = None;
        let mut n = 0u64;
        while s.used_bytes() <= s.heap_bytes() * 6 / 10 {
            n += 1;
            c.create(&ObjectId::from_u64(n), size, b"", &CreateInfo::default())
                .unwrap()
                .seal()
                .unwrap();
            if n == 1 {
                // The oldest object is in use: it must survive every eviction.
                pinned = c.get(&pinned_id, Some(Duration::ZERO)).unwrap();
                assert!(pinned.is_some());
            }
        }
        let pinned_id = ObjectId::from_u64(1);
        // Eviction order as the policy defines it: (last access, slot index).
        let order = |o: &crate::store::ObjectSummary| (o.last_access_ms, o.index);
        let before = s.list();
        assert_eq!(m.poll_lease(1_000), LeaseEvent::Acquired { previous: None });
        let Ok(Evict::Evicted {
            target,
            freed,
            used_after,
            heap,
            ..
        }) = m.evict(1_000)
        else {
            panic!("expected an eviction");
        };
        assert!(freed >= target, "freed {freed} of {target}");
        assert!(used_after <= heap / 4, "used {used_after} of {heap}");
        assert!(
            c.contains(&pinned_id).unwrap(),
            "the pinned object was evicted"
        );
        let (evicted, kept): (Vec<_>, Vec<_>) = before
            .iter()
            .filter(|o| o.id != pinned_id)
            .partition(|o| !c.contains(&o.id).unwrap());
        assert!(!evicted.is_empty() && !kept.is_empty(), "{n} objects");
        let newest_evicted = evicted.iter().map(|o| order(o)).max().unwrap();
        let oldest_kept = kept.iter().map(|o| order(o)).min().unwrap();
        assert!(
            newest_evicted < oldest_kept,
            "not least recently used first: evicted up to {newest_evicted:?}, kept from \
             {oldest_kept:?}"
        );
        assert!(matches!(m.evict(1_001), Ok(Evict::Below)));
        // Asked for everything: all but the pinned object go.
        c.evict(u64::MAX).unwrap();
        assert_eq!(
            s.list().iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![pinned_id]
        );
        drop(pinned);
        c.evict(u64::MAX).unwrap();
        assert!(s.list().is_empty(), "released, it is evictable");
    }

    #[test]
    fn a_fenced_maintainer_registers_again_and_gives_up_the_old_identity() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 32 << 20);
        let mut m = Maintainer::new(&s, MaintainerConfig::new("m", 300)).unwrap();
        m.tick(1_000);
        let old = m.me();
        // Another maintainer declares it dead (as after a pause past the lease).
        let other = s.connect("other").unwrap();
        let judged = s.client_entry(old.client).load_word();
        let guard = s.begin_maintenance(other.maintainer_id(), 60_000).unwrap();
        s.reap_client(&guard, old.client, judged).unwrap().unwrap();
        drop(guard);
        let beat = m.heartbeat().unwrap();
        let Heartbeat::Reregistered { old: was, new } = beat else {
            panic!("expected a new registration, got {beat:?}");
        };
        assert_eq!(was, old);
        assert_eq!(m.me(), new);
        assert_ne!(new, old);
        assert_eq!(
            m.poll_lease(1_001),
            LeaseEvent::Acquired { previous: None },
            "claims under the new identity"
        );
        assert_eq!(s.leader().holder, Some(new));
    }

    #[test]
    fn the_thread_runner_leads_until_stopped_then_releases_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir, 32 << 20);
        let m = Maintainer::new(&s, MaintainerConfig::new("m", 300)).unwrap();
        let me = m.me();
        let (tx, rx) = mpsc::channel();
        let thread = m
            .spawn("maintainer-test", move |t| {
                if let Some(e) = t.lease {
                    let _ = tx.send(e);
                }
            })
            .unwrap();
        let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(first, LeaseEvent::Acquired { previous: None });
        assert_eq!(s.leader().holder, Some(me));
        let m = thread.stop().expect("the thread ended cleanly");
        assert_eq!(s.leader().holder, None);
        drop(m);
    }
}
