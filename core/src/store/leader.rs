//! The leader lease: of the servers (one per host) attached to a region, exactly one at a time
//! runs the region-wide maintenance (the reaper and the evictor).
//!
//! # The words
//!
//! Two words of the [`ControlBlock`](crate::store::control::ControlBlock):
//!
//! * `leader` = `epoch:32 | client index + 1:32` — the holder, named by the server's own
//!   registered client (its client-table index and that entry's epoch); 0 = nobody.
//! * `leader_lease_until_ms` — wall-clock ms until which the holder means to lead. Followers
//!   never compare it with their clock: it is a **renewal counter** (every renewal writes a new
//!   value) that they watch for changes; the wall-clock value is for `gismoctl stat`.
//!
//! # The protocol
//!
//! Every server calls [`LeaderLease::poll`] every *poll interval* (`gismo-server` uses
//! `min(lease / 3, 100 ms)`).
//!
//! * **Claim.** A non-holder reads the holder word `h`. It may claim when `h == 0` (released),
//!   when `h`'s client entry no longer holds that epoch as `ACTIVE` (the holder was reaped), or
//!   when it has seen neither `h` nor `lease_until` change for more than `lease + slack` of its
//!   own clock (a monotonic one: [`clock::monotonic_ms`](crate::clock::monotonic_ms)). A
//!   follower that just started watches a whole lease before it may take over. It claims with one compare-and-swap `h → mine`: of several
//!   servers racing for the same `h` exactly one CAS succeeds, so two servers never both win.
//!   The winner then stores `lease_until = now + lease`.
//! * **Renew.** The holder re-reads the word; if it still names the holder it stores a new
//!   `lease_until` (every poll, so at least every `lease / 3` in `gismo-server`) and notes, on
//!   its own clock, that it may lead until `now + lease`.
//! * **Fencing.** If the holder finds another value in the word, it stops acting as leader at once
//!   ([`LeaseEvent::Lost`]). It also stops when its own view of the lease ran out (`now >
//!   renewal + lease` on its own clock) without a renewal — a paused process never acts on a
//!   stale lease, because a successor, which saw that renewal no earlier than it was written,
//!   waits `slack` longer than that before claiming.
//! * **Release.** A server that stops cleanly CASes `mine → 0`, so another claims at its next poll
//!   instead of waiting for the lease to run out.
//!
//! # The bound
//!
//! A leader that dies at `t` renewed last at some `t_r <= t`. A follower polling every `poll`
//! sees that renewal by `t_r + poll` and claims at its first poll more than `lease + slack`
//! later, so **another server leads no later than `t + lease + slack + 2 × poll`** (after a clean
//! release: no later than `t + poll`; a follower that only starts watching then needs a whole
//! `lease + slack` of watching first). No agreement between hosts' wall clocks is needed, only
//! that their clocks run at the same rate to within `slack / lease`.
//!
//! # What the lease does not guarantee
//!
//! The two words are not updated together: a holder's renewal racing a takeover can write its
//! `lease_until` after the successor's claim. That only lengthens the successor's lease (the old
//! holder sees the new word at its next poll and steps down). Between a holder's last check and its
//! action there is a window, so the lease alone does not make maintenance exclusive: reaping and
//! orphan collection also take the maintenance lock (`Store::begin_maintenance`), a reap CASes
//! from exactly the client word it judged dead, and finishing a delete is claimed by a CAS. A
//! leader paused past its lease between such a check and its action remains a limit (see
//! `docs/store.md`, "Crash consistency").
//!
//! # Where the decision lives
//!
//! [`LeaseState`] is the protocol: one server's view, deciding over the two words
//! ([`LeaseWords`]) and a clock reading passed in, and told by a closure whether a holder's client
//! entry is still active. [`LeaderLease`] binds it to a `Store`'s control block and client table.
//! The loom models (`core/tests/loom.rs`) run [`LeaseState`] over words on the heap.

use crate::sync::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::Arc;

#[cfg(not(loom))]
use crate::store::clients::status;
#[cfg(not(loom))]
use crate::store::handle::Store;

/// A lease holder: a server's client-table index and that entry's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderId {
    pub client: usize,
    pub epoch: u32,
}

impl LeaderId {
    /// `epoch:32 | client index + 1:32`.
    pub fn pack(self) -> u64 {
        u64::from(self.epoch) << 32 | (self.client as u64 + 1)
    }

    /// The holder in a `leader` word; `None` for 0 (no holder) or a low half of 0.
    pub fn unpack(word: u64) -> Option<LeaderId> {
        let low = word & 0xffff_ffff;
        (low != 0).then(|| LeaderId {
            client: (low - 1) as usize,
            epoch: (word >> 32) as u32,
        })
    }
}

/// The lease as the region records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The holder, if any.
    pub holder: Option<LeaderId>,
    /// Wall-clock ms until which the holder's lease runs.
    pub lease_until_ms: u64,
    /// The holder's pid, from its client entry (0 if the entry does not name it any more).
    pub pid: u32,
}

#[cfg(not(loom))]
impl Store {
    /// The current leader lease.
    pub fn leader(&self) -> LeaderInfo {
        let c = self.control();
        // Acquire: pairs with the AcqRel claim CAS; the holder's client entry is published.
        let holder = LeaderId::unpack(c.leader.load(Ordering::Acquire));
        let lease_until_ms = c.leader_lease_until_ms.load(Ordering::Relaxed);
        let pid = holder.filter(|h| self.holder_alive(*h)).map_or(0, |h| {
            self.client_entry(h.client).pid.load(Ordering::Relaxed) as u32
        });
        LeaderInfo {
            holder,
            lease_until_ms,
            pid,
        }
    }

    /// Whether `h`'s client entry is still `ACTIVE` with `h`'s epoch (a validated index: the
    /// word may come from a corrupt region).
    pub(crate) fn holder_alive(&self, h: LeaderId) -> bool {
        if h.client >= self.max_clients() {
            return false;
        }
        let w = self.client_entry(h.client).load_word();
        w.status == status::ACTIVE && w.epoch == h.epoch
    }
}

/// What one [`LeaderLease::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// This server just claimed the lease; `previous` held it before (None: nobody).
    Acquired { previous: Option<LeaderId> },
    /// This server holds the lease and renewed it.
    Renewed,
    /// This server held the lease and lost it: `to` holds it now (None: its lease ran out
    /// before it could renew, and nobody claimed it yet).
    Lost { to: Option<LeaderId> },
    /// Another server holds the lease (None: nobody, and the claim lost a race).
    Follower { holder: Option<LeaderId> },
}

/// The lease's two words, wherever they live: the region's control block, or a model's heap.
#[derive(Clone, Copy)]
pub struct LeaseWords<'a> {
    /// `leader`: `epoch:32 | client index + 1:32` of the holder, 0 = nobody.
    pub leader: &'a AtomicU64,
    /// `leader_lease_until_ms`: the renewal counter (wall-clock ms, informational).
    pub lease_until_ms: &'a AtomicU64,
}

/// One server's side of the lease: the protocol of the module docs over the words it is given.
pub struct LeaseState {
    me: LeaderId,
    lease_ms: u64,
    slack_ms: u64,
    /// While we hold the lease: until when, on the caller's clock (`now_ms` of our last renewal
    /// plus the lease).
    held_until: Option<u64>,
    /// As a follower: the `(leader, lease_until_ms)` words we last saw and when (caller's clock)
    /// they last changed. The lease is judged by "renewed since I last looked", never by
    /// comparing the holder's clock with ours.
    seen: Option<(u64, u64, u64)>,
}

impl LeaseState {
    /// The lease of the server registered as `me` (client index and that entry's epoch).
    pub fn new(me: LeaderId, lease_ms: u64, slack_ms: u64) -> LeaseState {
        LeaseState {
            me,
            lease_ms,
            slack_ms,
            held_until: None,
            seen: None,
        }
    }

    pub fn me(&self) -> LeaderId {
        self.me
    }

    /// Whether this server may act as leader at `now_ms`: it holds the word and its lease has not
    /// run out. Leader actions check this right before acting.
    pub fn is_leader(&self, words: LeaseWords<'_>, now_ms: u64) -> bool {
        let Some(until) = self.held_until else {
            return false;
        };
        // Relaxed: a hint re-checked at every poll; the actions themselves are CASes.
        now_ms <= until && words.leader.load(Ordering::Relaxed) == self.me.pack()
    }

    /// Renews, claims or checks the lease at time `now_ms` of this process's clock (monotonic:
    /// [`crate::clock::monotonic_ms`]; only differences of our own readings are used).
    /// `holder_alive(h)` says whether `h`'s client entry is still `ACTIVE` at `h`'s epoch.
    pub fn poll(
        &mut self,
        words: LeaseWords<'_>,
        now_ms: u64,
        holder_alive: impl FnOnce(LeaderId) -> bool,
    ) -> LeaseEvent {
        let mine = self.me.pack();
        // Acquire: pairs with the AcqRel claim CAS of whoever wrote it.
        let cur = words.leader.load(Ordering::Acquire);
        if let Some(until) = self.held_until {
            if cur != mine {
                self.held_until = None;
                return LeaseEvent::Lost {
                    to: LeaderId::unpack(cur),
                };
            }
            if now_ms > until {
                // We were not scheduled for a whole lease: a successor may be about to claim.
                // Step down; claim again like anyone else below (the word still names us).
                self.held_until = None;
                return LeaseEvent::Lost { to: None };
            }
            self.publish_renewal(words);
            self.held_until = Some(now_ms + self.lease_ms);
            return LeaseEvent::Renewed;
        }
        let holder = LeaderId::unpack(cur);
        let until = words.lease_until_ms.load(Ordering::Relaxed);
        let quiet = match self.seen {
            Some((w, u, since)) if w == cur && u == until => now_ms.saturating_sub(since),
            _ => {
                self.seen = Some((cur, until, now_ms));
                0
            }
        };
        let claimable = match holder {
            None => true,
            // Our own word while we do not hold it: our lease ran out unrenewed; reclaim.
            Some(h) if h == self.me => true,
            // Not renewed for a lease plus the slack, as we watched it: the holder stopped acting
            // a slack before that (its own clock), so no two leaders act at once as long as the
            // clocks run at the same rate (no agreement on their values is needed).
            Some(h) => !holder_alive(h) || quiet > self.lease_ms.saturating_add(self.slack_ms),
        };
        if !claimable {
            return LeaseEvent::Follower { holder };
        }
        // AcqRel: pairs with the previous holder's Release CAS in `release` (or its AcqRel
        // claim, when we take an expired lease over): exactly one of the racing claimers of
        // `cur` wins; Acquire orders our reads of the region after the previous holder's last
        // writes it published.
        match words
            .leader
            .compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.publish_renewal(words);
                self.held_until = Some(now_ms + self.lease_ms);
                self.seen = None;
                LeaseEvent::Acquired {
                    previous: holder.filter(|h| *h != self.me),
                }
            }
            Err(now_holder) => LeaseEvent::Follower {
                holder: LeaderId::unpack(now_holder),
            },
        }
    }

    /// Writes a new `lease_until_ms`: wall-clock ms (informational, `gismoctl stat` shows it),
    /// and always a new value, since followers judge the lease by its changes.
    fn publish_renewal(&self, words: LeaseWords<'_>) {
        let prev = words.lease_until_ms.load(Ordering::Relaxed);
        let until =
            (crate::clock::unix_ms().saturating_add(self.lease_ms)).max(prev.wrapping_add(1));
        words.lease_until_ms.store(until, Ordering::Relaxed);
    }

    /// Changes the identity this server claims under (after its client was fenced and registered
    /// again), giving up any lease held under the old one.
    pub fn rebind(&mut self, words: LeaseWords<'_>, me: LeaderId) {
        self.release(words);
        self.me = me;
    }

    /// Gives the lease up (if held) so another server claims it at its next poll.
    pub fn release(&mut self, words: LeaseWords<'_>) {
        self.held_until = None;
        // Release: pairs with the next holder's AcqRel claim CAS in `poll`: our last leader
        // actions happen before its.
        if words
            .leader
            .compare_exchange(self.me.pack(), 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            words.lease_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// One server's side of the lease, over a [`Store`]'s control block ([`LeaseState`] bound to it).
#[cfg(not(loom))]
pub struct LeaderLease {
    store: Arc<Store>,
    state: LeaseState,
}

#[cfg(not(loom))]
impl LeaderLease {
    /// The lease of the server registered as client `client` (index and epoch of its entry).
    pub fn new(store: Arc<Store>, me: LeaderId, lease_ms: u64, slack_ms: u64) -> LeaderLease {
        LeaderLease {
            store,
            state: LeaseState::new(me, lease_ms, slack_ms),
        }
    }

    fn words(store: &Store) -> LeaseWords<'_> {
        let c = store.control();
        LeaseWords {
            leader: &c.leader,
            lease_until_ms: &c.leader_lease_until_ms,
        }
    }

    pub fn me(&self) -> LeaderId {
        self.state.me()
    }

    /// See [`LeaseState::is_leader`].
    pub fn is_leader(&self, now_ms: u64) -> bool {
        self.state.is_leader(Self::words(&self.store), now_ms)
    }

    /// See [`LeaseState::poll`]; a holder is alive while [`Store::holder_alive`] says so.
    pub fn poll(&mut self, now_ms: u64) -> LeaseEvent {
        let store = &self.store;
        self.state
            .poll(Self::words(store), now_ms, |h| store.holder_alive(h))
    }

    /// See [`LeaseState::rebind`].
    pub fn rebind(&mut self, me: LeaderId) {
        self.state.rebind(Self::words(&self.store), me);
    }

    /// See [`LeaseState::release`].
    pub fn release(&mut self) {
        self.state.release(Self::words(&self.store));
    }
}

impl std::fmt::Display for LeaderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client {} (epoch {})", self.client, self.epoch)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::region::{Region, RegionOptions, RegionSpec};

    /// Two attachments of one file region, each with a registered client.
    fn two_servers(
        dir: &tempfile::TempDir,
    ) -> (
        Arc<Store>,
        crate::store::Client,
        Arc<Store>,
        crate::store::Client,
    ) {
        let spec = RegionSpec::File(dir.path().join("region"));
        let region = Region::create(&spec, 32 << 20, &RegionOptions::default()).unwrap();
        let a = Store::format(region, &Default::default()).unwrap();
        let b = Store::attach(Region::open(&spec, &RegionOptions::default()).unwrap()).unwrap();
        let ca = a.connect("server-a").unwrap();
        let cb = b.connect("server-b").unwrap();
        (a, ca, b, cb)
    }

    fn lease(store: &Arc<Store>, c: &crate::store::Client) -> LeaderLease {
        let me = LeaderId {
            client: c.index(),
            epoch: c.epoch(),
        };
        LeaderLease::new(Arc::clone(store), me, 300, 50)
    }

    #[test]
    fn word_layout() {
        let id = LeaderId {
            client: 0,
            epoch: 7,
        };
        assert_eq!(id.pack(), 7 << 32 | 1);
        assert_eq!(LeaderId::unpack(id.pack()), Some(id));
        assert_eq!(LeaderId::unpack(0), None);
    }

    #[test]
    fn one_claims_the_other_follows_then_takes_over_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ca, b, cb) = two_servers(&dir);
        let (mut la, mut lb) = (lease(&a, &ca), lease(&b, &cb));
        let t = 1_000_000;
        assert_eq!(la.poll(t), LeaseEvent::Acquired { previous: None });
        assert_eq!(
            lb.poll(t),
            LeaseEvent::Follower {
                holder: Some(la.me())
            }
        );
        assert!(la.is_leader(t) && !lb.is_leader(t));
        assert_eq!(a.leader().holder, Some(la.me()));
        assert_eq!(b.leader().pid, std::process::id());
        // Renewals keep the follower out.
        for step in 1..10 {
            assert_eq!(la.poll(t + step * 100), LeaseEvent::Renewed);
            assert!(matches!(
                lb.poll(t + step * 100),
                LeaseEvent::Follower { .. }
            ));
        }
        // A wedges: lease until t+900+300; B claims only after lease + slack.
        let until = t + 900 + 300;
        let e = lb.poll(until + 50);
        assert!(matches!(e, LeaseEvent::Follower { .. }), "{e:?}");
        assert_eq!(
            lb.poll(until + 51),
            LeaseEvent::Acquired {
                previous: Some(la.me())
            }
        );
        // A wakes up and is fenced at once.
        assert!(!la.is_leader(until + 52));
        assert_eq!(la.poll(until + 52), LeaseEvent::Lost { to: Some(lb.me()) });
        assert!(matches!(la.poll(until + 53), LeaseEvent::Follower { .. }));
        assert!(lb.is_leader(until + 53));
    }

    /// The lease is judged by its renewals as the follower watched them, not by the holder's
    /// clock: a follower that starts watching long after the written `lease_until` (or whose
    /// clock is far ahead) still waits a full lease plus the slack without a renewal.
    #[test]
    fn a_fresh_follower_watches_a_whole_lease_before_taking_over() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ca, b, cb) = two_servers(&dir);
        let (mut la, mut lb) = (lease(&a, &ca), lease(&b, &cb));
        assert_eq!(la.poll(0), LeaseEvent::Acquired { previous: None });
        // B's clock reads a day later: by wall-clock comparison A's lease ran out long ago.
        let day = 86_400_000;
        assert!(matches!(lb.poll(day), LeaseEvent::Follower { .. }));
        assert!(matches!(lb.poll(day + 350), LeaseEvent::Follower { .. }));
        // A renewal it sees restarts its watch.
        assert_eq!(la.poll(200), LeaseEvent::Renewed);
        assert!(matches!(lb.poll(day + 351), LeaseEvent::Follower { .. }));
        assert!(matches!(
            lb.poll(day + 351 + 350),
            LeaseEvent::Follower { .. }
        ));
        assert_eq!(
            lb.poll(day + 351 + 351),
            LeaseEvent::Acquired {
                previous: Some(la.me())
            }
        );
    }

    #[test]
    fn release_hands_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ca, b, cb) = two_servers(&dir);
        let (mut la, mut lb) = (lease(&a, &ca), lease(&b, &cb));
        let t = 5_000;
        la.poll(t);
        la.release();
        assert_eq!(a.leader().holder, None);
        assert_eq!(lb.poll(t + 1), LeaseEvent::Acquired { previous: None });
    }

    #[test]
    fn a_reaped_holder_is_replaced_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ca, b, cb) = two_servers(&dir);
        let (mut la, mut lb) = (lease(&a, &ca), lease(&b, &cb));
        let t = 5_000;
        la.poll(t);
        let judged = b.client_entry(ca.index()).load_word();
        let m = b.begin_maintenance(cb.maintainer_id(), 60_000).unwrap();
        b.reap_client(&m, ca.index(), judged).unwrap().unwrap();
        drop(m);
        assert_eq!(
            lb.poll(t + 1),
            LeaseEvent::Acquired {
                previous: Some(la.me())
            }
        );
        assert_eq!(b.leader().pid, std::process::id());
    }

    #[test]
    fn a_holder_not_scheduled_for_a_whole_lease_steps_down() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ca, _b, _cb) = two_servers(&dir);
        let mut la = lease(&a, &ca);
        la.poll(1_000);
        assert!(!la.is_leader(1_301));
        assert_eq!(la.poll(1_301), LeaseEvent::Lost { to: None });
        // Nobody else claimed: it reclaims its own word.
        assert_eq!(la.poll(1_302), LeaseEvent::Acquired { previous: None });
    }

    #[test]
    fn rebinding_gives_up_the_old_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ca, _b, _cb) = two_servers(&dir);
        let mut la = lease(&a, &ca);
        la.poll(1_000);
        let new = LeaderId {
            client: 5,
            epoch: 9,
        };
        la.rebind(new);
        assert_eq!(a.leader().holder, None);
        assert_eq!(la.poll(1_001), LeaseEvent::Acquired { previous: None });
        assert_eq!(a.leader().holder, Some(new));
    }

    #[test]
    fn racing_claims_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let spec = RegionSpec::File(dir.path().join("region"));
        let region = Region::create(&spec, 32 << 20, &RegionOptions::default()).unwrap();
        let first = Store::format(region, &Default::default()).unwrap();
        drop(first);
        for _round in 0..20 {
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let spec = spec.clone();
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        let s =
                            Store::attach(Region::open(&spec, &RegionOptions::default()).unwrap())
                                .unwrap();
                        let c = s.connect("racer").unwrap();
                        let mut l = lease(&s, &c);
                        barrier.wait();
                        let won = matches!(l.poll(1_000), LeaseEvent::Acquired { .. });
                        barrier.wait();
                        l.release();
                        c.disconnect();
                        won
                    })
                })
                .collect();
            let winners = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|&w| w)
                .count();
            assert_eq!(winners, 1);
        }
    }
}
