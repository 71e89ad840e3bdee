//! Model checks of the lock-free state machines with `loom`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p gismo-core --test loom`
//! (`tools/test.sh` does, in its own target directory).
//!
//! Every model calls the production functions over process-local copies of the region's
//! structures (the cross-host models over several emulated hosts' views of them, whose lines move
//! only by the protocol's write-backs and evictions: `support/loom_hosts.rs`) (`Slot::new_free`, `ChunkDesc::new_unused`, `HostEntry::new_free`,
//! `EventCell::new_free`, `ClientEntry::new_free`), through the `crate::sync` facade; none re-types
//! a protocol. Bound: `LOOM_MAX_PREEMPTIONS=2` for all but the run-index model (bound 1: each of
//! its executions builds a heap of 4128 pages and its 258 chunk descriptors). Run times measured
//! one at a time on the 2-core development machine (release build); the whole run takes about
//! 25 s of model checking, the 28 models one after another (`--test-threads=1`; plus the build):
//!
//! | model | production code | threads | time |
//! |---|---|---|---|
//! | `one_id_inserted_twice_concurrently_exactly_one_wins` | `Directory::insert`, `lookup` | 2 | 0.3 s |
//! | `insert_races_delete_and_reinsert_in_the_same_home` | `insert`, `free_slot`, `lookup` | 2 | 4.0 s |
//! | `an_uncommitted_insert_is_never_visible_in_a_freed_winners_slot` | `insert`, `free_slot`, `lookup` (L1, staged with yields) | 2 | 0.3 s |
//! | `lookup_racing_insert_never_returns_another_key` | `insert`, `free_slot`, `lookup` | 2 | 9.9 s |
//! | `a_reapers_abort_and_a_resumed_creators_seal_never_both_win` | `abort_dead_owners_slot` (`Store::reap_client` step 2), `seal_word` (`Client::seal`), `Directory::insert`, a waiter's flag | 3 | 0.02 s |
//! | `a_taken_over_finisher_never_frees_twice_nor_the_next_objects_block` | `finish_slot` (`Store::finish_delete`) twice, `resume_owned_delete` (`Store::resume_deleting`), `begin_delete`, `seal_word`, `Directory::insert`, `Allocator::{alloc, free}` | 2 | 0.05 s |
//! | `a_creator_reaped_mid_create_never_leaves_a_slot_naming_a_freed_block` | `publish_allocation` (`Client::create`: `Registered::{record_intent, clear_intent}`, `Directory::insert`, `withdraw_unsealed`), `DeadEntry::{fence, take_intent}`, `abort_dead_owners_slot`, `finish_slot` (`Store::reap_client` steps 2 and 3), `Allocator::free` | 2 | 0.1 s |
//! | `a_withdrawn_slot_is_never_finished_with_its_payload` | `publish_allocation` (a creator quarantined inside its insert: `withdraw_unsealed`), the orphan pass (`resume_owned_delete`, `finish_slot`), then the reap (`DeadEntry::{fence, take_intent}`, `abort_dead_owners_slot`, `finish_slot`, steps 2, 3, 5) | 3 | 0.06 s |
//! | `get_and_delete_never_both_win` | `acquire_sealed` (`Client::try_acquire`), `begin_delete`, `after_release`, `RefTable` | 2 | 0.01 s |
//! | `deferred_delete_is_never_lost` | `begin_delete`, `after_release`, `RefTable` | 2 | 0.03 s |
//! | `a_dead_deleters_delete_is_decided_once` | `resume_owned_delete` (`Store::resume_deleting`), `after_release` | 2 | 0.03 s |
//! | `a_delete_during_an_eviction_probe_is_not_lost` | `begin_evict`, `begin_delete`, `after_release` | 2 | 0.03 s |
//! | `concurrent_small_allocations_are_distinct` | `Allocator::alloc` | 2 | 0.2 s |
//! | `free_racing_alloc_never_loses_or_duplicates_blocks` | `Allocator::alloc`, `free` | 2 | 0.05 s |
//! | `large_runs_claimed_concurrently_do_not_overlap` | `Allocator::alloc` (page runs) | 2 | 0.02 s |
//! | `event_ring_two_producers_one_consumer` | `EventRing::push`, `pop` | 3 | 1.4 s |
//! | `event_ring_overflow_is_counted_not_lost` | `EventRing::push`, `pop` (1-cell ring) | 3 | 1.3 s |
//! | `ring_claim_has_one_consumer_and_a_stale_release_is_harmless` | `claim_consumer`, `release_consumer`, `ring_consumer` | 3 | 0.1 s |
//! | `leader_lease_never_two_leaders` | `LeaseState::poll`, `is_leader`, `release` (`LeaderLease`) | 2 | 0.2 s |
//! | `page_runs_racing_in_one_word_keep_the_summary_exact` | `Allocator::alloc`, `free`, page-bitmap summary | 2 | (in the total) |
//! | `page_runs_claimed_and_freed_concurrently_leave_the_summary_exact` | `Allocator::alloc`, `free`, page-bitmap summary | 2 | (in the total) |
//! | `connect_against_a_stale_connect_reclaimer_has_one_owner` | `register`, `Claim` (`Store::connect`), `reclaim_if_stale` (`reclaim_stale_connecting`) | 2 | 0.08 s |
//! | `two_connectors_never_share_an_entry` | `register`, `Claim` (`Store::connect`) | 2 | 0.01 s |
//! | `a_client_reaped_while_paused_never_keeps_a_freed_payload` | `DeadEntry::{fence, still_dead, release_references, free}` (`Store::reap_client`), `Registered::{acquire, check_fenced, drop_ref}` (`Client`), `count_references` | 2 | 2.2 s |
//! | `two_reapers_of_one_entry_reap_it_once` | `DeadEntry` (`reap_client`), `register` | 2 | 0.01 s |
//! | `an_allocation_racing_a_free_leaves_both_index_levels_exact` | `Allocator::alloc` (index-guided best fit), `free`, summary, free-run index (leaf and root) | 2 | 2.9 s at bound 1 (49 s at 2; a Relaxed node swap and a missing re-read at either level each fail at bound 1) |
//! | `xhost_ring_two_producers_one_consumer` | `xhost::ring::Ring::send` (`claim`, `Claim::publish`), `Consumer::try_recv` | 3 | 1.9 s |
//! | `xhost_ring_full_is_refused_not_lost` | the same, 1-cell ring | 3 | 1.2 s |
//! | `xhost_ring_across_two_emulated_hosts_delivers_every_message_whole` | `Ring::send`, `Consumer::{new, try_recv}` on two emulated hosts (`support/loom_hosts.rs`: every line moves only by the ring's write-backs and evictions) | 2 | 0.02 s |
//! | `xhost_ring_across_hosts_survives_early_write_backs_and_stale_refills` | the same, plus a thread of cache events (A's cell line written back early, B's refilled stale) | 3 | 0.8 s at bound 1 (85 s at 2) |
//! | `xhost_ring_across_hosts_without_the_producers_write_backs_fails`, `…_consumers_evictions_fails` | negative controls: the same with host A's write-backs or host B's evictions off must fail | 2 | 0.01 s |
//! | `a_remote_get_and_its_hosts_delete_never_both_win` | `acquire_sealed_remote` on host B, `begin_delete` on host A (slot word and B's pin table moved only by write-backs and evictions) | 2 | 0.02 s |
//! | `a_remote_get_without_its_pins_write_back_fails`, `…_without_evicting_the_slot_word_fails`, `a_delete_without_writing_back_its_deleting_word_fails`, `a_delete_without_evicting_the_remote_pins_fails` | negative controls of the above: each missing write-back or eviction must fail | 2 | 0.01 s |
//! | `a_remote_release_never_loses_its_hosts_deferred_delete` | `release_remote` on host B against `begin_delete` (restore with `DELETE_PENDING`) on host A, then `after_release` on B's message | 2 | 0.02 s |
//! | `a_deferred_delete_without_writing_back_its_flag_is_lost` | negative control: host A's write-backs off | 2 | 0.01 s |
//! | `one_id_created_on_two_hosts_at_once_is_confirmed_on_one` | `Directory::{insert_flagged, lookup_remote, publish_entry}`, `confirm_across_hosts` on two emulated hosts (each creating in its own shard) | 2 | 0.03 s |
//! | `a_cross_host_create_without_writing_back_its_entry_fails`, `…_without_evicting_the_other_shard_fails` | negative controls of the above | 2 | 0.01 s |
//!
//! The reaper models compose `DeadEntry`'s steps in `Store::reap_client`'s order for a client that
//! holds references only; its step 2 (unsealed objects) is modelled against a resumed creator's
//! seal, steps 2 and 3 (the intent) against a creator paused anywhere in its create, and the
//! finish of a delete against a reaper that takes it over. The
//! three-party directory history of L1 (an inserter, a winner that is deleted, an observer) is
//! staged on two threads: one thread plays the winner, the deleter and the observer, with yields
//! between its stages so the history fits the bound (three free-running threads did not finish in
//! minutes even at bound 1).
#![cfg(loom)]

use gismo_core::store::allocator::{summary_words, AllocHeads, Allocator, ChunkDesc};
use gismo_core::store::clients::{count_references, status, ClientEntry, EntryWord};
use gismo_core::store::directory::{
    abort_dead_owners_slot, acquire_sealed, acquire_sealed_remote, after_release, begin_delete,
    begin_evict, confirm_across_hosts, finish_slot, flags, release_remote, resume_owned_delete,
    seal_word, state, DeadSlot, Directory, Finished, InsertError, Inserted, Resumed, SealRefused,
    Slot, Unconfirmed, Word,
};
use gismo_core::store::events::{Event, EventCell, EventKind, EventRing, HostEntry};
use gismo_core::store::fencing::{
    publish_allocation, DeadEntry, Registered, TakenIntent, Unpublished,
};
use gismo_core::store::leader::{LeaderId, LeaseEvent, LeaseState, LeaseWords};
use gismo_core::store::refs::{gen_matches, RefTable};
use gismo_core::store::registration::{reclaim_if_stale, register, Identity, Prepared};
use gismo_core::store::ring_claim::{claim_consumer, release_consumer, ring_consumer, ConsumerId};
use gismo_core::store::ObjectId;
use gismo_core::xhost::lines::{evict, write_back};
use gismo_core::xhost::ring::{
    Consumer as XhostConsumer, Ring as XhostRing, RingError as XhostRingError, PAYLOAD_WORDS,
};
use gismo_platform::coherence::{Coherence, CoherenceMode};
use gismo_platform::sync::{fence, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
#[path = "support/loom_hosts.rs"]
mod loom_hosts;
use loom_hosts::{Cell, Hosts, Knobs};
use std::time::Duration;

/// The coherence of the same-host models: `hardware`, write-back and evict are no-ops.
static HW: std::sync::LazyLock<Coherence> =
    std::sync::LazyLock::new(|| Coherence::new(CoherenceMode::Hardware));

fn table(n: usize) -> Arc<Vec<Slot>> {
    Arc::new((0..n).map(|_| Slot::new_free()).collect())
}

/// Ids whose home is slot 0 of a 4-slot table.
fn same_home_ids(n: usize) -> Vec<ObjectId> {
    (0u64..)
        .map(ObjectId::from_u64)
        .filter(|id| id.hash64() & 3 == 0)
        .take(n)
        .collect()
}

#[test]
fn one_id_inserted_twice_concurrently_exactly_one_wins() {
    loom::model(|| {
        let slots = table(4);
        let id = same_home_ids(1)[0];
        let ths: Vec<_> = (0..2u16)
            .map(|t| {
                let s = slots.clone();
                thread::spawn(move || Directory::new(&s).insert(&id, t, |_| {}))
            })
            .collect();
        let results: Vec<_> = ths.into_iter().map(|h| h.join().unwrap()).collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, InsertError::Exists { .. }));
            }
        }
        let dir = Directory::new(&slots);
        let (i, w) = dir.lookup(&id).expect("winner visible");
        assert_eq!(w.state, state::CREATING);
        let winner = results.iter().find_map(|r| r.ok()).unwrap();
        assert_eq!(i, winner.index);
        // Exactly one committed slot holds the id.
        let holders = slots
            .iter()
            .filter(|s| s.load_word().state == state::CREATING)
            .count();
        assert_eq!(holders, 1);
    });
}

#[test]
fn insert_races_delete_and_reinsert_in_the_same_home() {
    loom::model(|| {
        let slots = table(4);
        let ids = same_home_ids(2);
        let (a, b) = (ids[0], ids[1]);
        let first = Directory::new(&slots).insert(&a, 0, |_| {}).unwrap();
        let s1 = slots.clone();
        let t1 = thread::spawn(move || {
            let dir = Directory::new(&s1);
            // Delete a, then insert it again.
            let del = Word {
                state: state::DELETING,
                ..first.word
            };
            dir.slot(first.index).cas_word(first.word, del).unwrap();
            dir.free_slot(first.index, del);
            dir.insert(&a, 0, |_| {}).is_ok()
        });
        let s2 = slots.clone();
        let t2 = thread::spawn(move || Directory::new(&s2).insert(&b, 1, |_| {}).is_ok());
        assert!(t1.join().unwrap());
        assert!(t2.join().unwrap());
        let dir = Directory::new(&slots);
        let (ia, _) = dir.lookup(&a).expect("a present");
        let (ib, _) = dir.lookup(&b).expect("b present");
        assert_ne!(ia, ib);
    });
}

/// L1 (the visibility half): inserter L reads its home's version, then W commits the next
/// version at slot X of the same home, and X is freed; L then claims X and would write the commit
/// record W's version already names, so a lookup accepted L's uncommitted slot as committed. W
/// plays the deleter and the observer: right after its lookup of L's key, the home version still
/// being 1 means only W's own insert has committed, so a slot found for L's key is a phantom.
#[test]
fn an_uncommitted_insert_is_never_visible_in_a_freed_winners_slot() {
    loom::model(|| {
        let slots = table(4);
        let ids = same_home_ids(2);
        let (a, b) = (ids[0], ids[1]);
        let sl = slots.clone();
        let l = thread::spawn(move || Directory::new(&sl).insert(&b, 1, |_| {}).is_ok());
        let dir = Directory::new(&slots);
        // The yields let L run between W's stages without spending the preemption bound (the
        // history needs L → W → L → W).
        thread::yield_now();
        let w = dir.insert(&a, 0, |_| {}).unwrap();
        let del = Word {
            state: state::DELETING,
            ..w.word
        };
        if dir.slot(w.index).cas_word(w.word, del).is_ok() {
            dir.free_slot(w.index, del);
        }
        thread::yield_now();
        let found = dir.lookup(&b);
        if dir.home_version(&b) == 1 {
            assert!(
                found.is_none(),
                "L's uncommitted slot is visible: {found:?}"
            );
        }
        assert!(l.join().unwrap());
        assert!(dir.lookup(&b).is_some());
    });
}

#[test]
fn lookup_racing_insert_never_returns_another_key() {
    loom::model(|| {
        let slots = table(4);
        let ids = same_home_ids(2);
        let (a, b) = (ids[0], ids[1]);
        let first = Directory::new(&slots).insert(&a, 0, |_| {}).unwrap();
        let s1 = slots.clone();
        let t1 = thread::spawn(move || {
            let dir = Directory::new(&s1);
            let del = Word {
                state: state::DELETING,
                ..first.word
            };
            dir.slot(first.index).cas_word(first.word, del).unwrap();
            dir.free_slot(first.index, del);
            dir.insert(&b, 1, |_| {}).unwrap();
        });
        let s2 = slots.clone();
        let t2 = thread::spawn(move || {
            // a's slot is freed and reused for b under us: a lookup of b may miss it (it is
            // not committed yet) but must never return a slot whose key is not b.
            let dir = Directory::new(&s2);
            if let Some((i, w)) = dir.lookup(&b) {
                assert!(w.state == state::CREATING || w.state == state::PENDING);
                assert_eq!(dir.slot(i).read_id_raw(), b);
            }
        });
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(Directory::new(&slots).lookup(&a).is_none());
    });
}

/// The get/delete Dekker pair, over the production halves: a getter (`acquire_sealed`, the core
/// of `Client::try_acquire`, with a reference-table `add` and a drop that runs `after_release`)
/// and a deleter (`begin_delete`, counting the table) race on a sealed object. They never both
/// win (a getter keeping an object the deleter frees), and the delete happens exactly once: by
/// the deleter, or by the getter's drop (a failed get) or its release after the race (a kept
/// one).
/// Threads: 2; bound 2; 0.01 s.
#[test]
fn get_and_delete_never_both_win() {
    fn count(r: &[AtomicU64]) -> u32 {
        u32::from(RefTable::new(r).count(0, 1))
    }
    /// A client's drop of its reference: `Client::drop_ref` / `after_drop` without fencing.
    fn release(s: &Slot, r: &[AtomicU64], d: &AtomicU64) {
        if RefTable::new(r).remove(0, 1) == Some(0)
            && after_release(&HW, s, 1, 2, || count(r)).is_some()
        {
            d.fetch_add(1, Ordering::SeqCst);
        }
    }
    loom::model(|| {
        let slot = Arc::new(Slot::new_free());
        let sealed = Word {
            gen: 1,
            state: state::SEALED,
            flags: 0,
            owner: 0,
        };
        slot.store_word(sealed);
        let refs: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
        let deletes = Arc::new(AtomicU64::new(0));

        let (s1, r1, d1) = (slot.clone(), refs.clone(), deletes.clone());
        let getter = thread::spawn(move || {
            acquire_sealed(
                &s1,
                sealed,
                || RefTable::new(&r1).add(0, 1).map(drop),
                || release(&s1, &r1, &d1),
            )
            .unwrap()
            .is_some()
        });
        let (s2, r2, d2) = (slot.clone(), refs.clone(), deletes.clone());
        let deleter = thread::spawn(move || {
            let deleted = begin_delete(&HW, &s2, sealed, 3, || count(&r2)).is_some();
            if deleted {
                d2.fetch_add(1, Ordering::SeqCst);
            }
            deleted
        });
        let got = getter.join().unwrap();
        let deleted = deleter.join().unwrap();
        assert!(!(got && deleted), "a reader kept an object that was freed");
        if got {
            // The kept reference goes: its release runs the delete the deleter deferred.
            release(&slot, &refs, &deletes);
        }
        assert_eq!(deletes.load(Ordering::SeqCst), 1, "deleted exactly once");
    });
}

/// A delete racing the last release: the deferred delete is never lost and happens exactly once.
#[test]
fn deferred_delete_is_never_lost() {
    loom::model(|| {
        let slot = Arc::new(Slot::new_free());
        let sealed = Word {
            gen: 1,
            state: state::SEALED,
            flags: 0,
            owner: 0,
        };
        slot.store_word(sealed);
        let refs: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
        RefTable::new(&refs).add(0, 1).unwrap();
        let count = |r: &Vec<AtomicU64>| u32::from(RefTable::new(r).count(0, 1));

        let (s1, r1) = (slot.clone(), refs.clone());
        let deleter =
            thread::spawn(move || begin_delete(&HW, &s1, sealed, 1, || count(&r1)).is_some());
        let (s2, r2) = (slot.clone(), refs.clone());
        let releaser = thread::spawn(move || {
            assert_eq!(RefTable::new(&r2).remove(0, 1), Some(0));
            after_release(&HW, &s2, 1, 2, || count(&r2)).is_some()
        });
        let a = deleter.join().unwrap();
        let b = releaser.join().unwrap();
        assert!(
            a ^ b,
            "exactly one party must own the delete (deleter {a}, releaser {b})"
        );
        let w = slot.load_word();
        assert_eq!(w.state, state::DELETING);
        assert_eq!(w.flags & flags::WAITERS, 0);
    });
}

/// C1: a reaper re-deciding a dead deleter's `DELETING` slot (its step 5, `resume_owned_delete`,
/// which `Store::resume_deleting` runs) racing the holder's last release: the payload is never
/// freed while the holder still holds its reference, and it is freed exactly once. (Fails if
/// `resume_delete` finishes a `DELETING | SEALED_ORIGIN` slot without re-running the reference
/// check.)
#[test]
fn a_dead_deleters_delete_is_decided_once() {
    loom::model(|| {
        let slot = Arc::new(Slot::new_free());
        // What a deleter killed between its CAS and its reference check leaves.
        let dead = Word {
            gen: 1,
            state: state::DELETING,
            flags: flags::SEALED_ORIGIN,
            owner: 5,
        };
        slot.store_word(dead);
        let refs: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
        RefTable::new(&refs).add(0, 1).unwrap();
        let freed = Arc::new(AtomicU64::new(0));
        let count = |r: &Vec<AtomicU64>| u32::from(RefTable::new(r).count(0, 1));

        let (s1, r1, f1) = (slot.clone(), refs.clone(), freed.clone());
        let reaper = thread::spawn(move || {
            if matches!(
                resume_owned_delete(&HW, &s1, dead.owner, 9, |_| count(&r1)),
                Some((_, Resumed::Finish(_)))
            ) {
                f1.fetch_add(1, Ordering::SeqCst);
            }
        });
        let (s2, r2, f2) = (slot.clone(), refs.clone(), freed.clone());
        let holder = thread::spawn(move || {
            // Still holding its reference: nobody may have freed the payload.
            assert_eq!(f2.load(Ordering::SeqCst), 0, "freed while still held");
            assert_eq!(RefTable::new(&r2).remove(0, 1), Some(0));
            if after_release(&HW, &s2, 1, 2, || count(&r2)).is_some() {
                f2.fetch_add(1, Ordering::SeqCst);
            }
        });
        reaper.join().unwrap();
        holder.join().unwrap();
        assert_eq!(freed.load(Ordering::SeqCst), 1, "freed exactly once");
    });
}

/// M5: a delete that finds the object in an eviction probe (a getter took its reference after the
/// evicter's pre-check, so the probe restores the object): the delete is never lost, and exactly
/// one of evicter, delete and last release ends up owning the slot's removal. (Fails if a delete
/// does not mark a probe `DELETE_PENDING`, or the evicter does not honour the mark.)
#[test]
fn a_delete_during_an_eviction_probe_is_not_lost() {
    /// Whether a client sees the object as present (`is_present` in `client.rs`).
    fn present(w: Word) -> bool {
        w.state == state::SEALED
            || (w.state == state::DELETING
                && w.flags & flags::EVICTING != 0
                && w.flags & flags::FINISHING == 0)
    }
    loom::model(|| {
        let slot = Arc::new(Slot::new_free());
        let sealed = Word {
            gen: 1,
            state: state::SEALED,
            flags: 0,
            owner: 0,
        };
        slot.store_word(sealed);
        let refs: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
        let count = |r: &Vec<AtomicU64>| u32::from(RefTable::new(r).count(0, 1));

        let (s1, r1) = (slot.clone(), refs.clone());
        let evicter =
            thread::spawn(move || begin_evict(&HW, &s1, sealed, 1, || count(&r1)).is_some());
        let (s2, r2) = (slot.clone(), refs.clone());
        let client = thread::spawn(move || {
            // A get (reference, then the Dekker fence and a look at the word), a delete of what
            // it sees, then the same client's last release.
            RefTable::new(&r2).add(0, 1).unwrap();
            fence(Ordering::SeqCst);
            let _ = s2.load_word();
            let w = s2.load_word();
            let d = present(w) && begin_delete(&HW, &s2, w, 2, || count(&r2)).is_some();
            assert_eq!(RefTable::new(&r2).remove(0, 1), Some(0));
            let r = after_release(&HW, &s2, 1, 2, || count(&r2)).is_some();
            (d, r)
        });
        let e = evicter.join().unwrap();
        let (d, r) = client.join().unwrap();
        let owners = [e, d, r].iter().filter(|x| **x).count();
        assert_eq!(owners, 1, "evicter {e}, delete {d}, release {r}");
        let w = slot.load_word();
        assert_eq!(w.state, state::DELETING, "the delete was lost: {w:?}");
    });
}

struct Heap {
    pages: Vec<AtomicU64>,
    /// The page bitmap's summary (one *used* and one *full* word, and the run index).
    summary: Vec<AtomicU64>,
    chunks: Vec<ChunkDesc>,
    heads: AllocHeads,
    heap_pages: u64,
}

fn heap() -> Arc<Heap> {
    // Two chunks of 64 KiB.
    heap_of(32)
}

fn heap_of(heap_pages: u64) -> Arc<Heap> {
    Arc::new(Heap {
        pages: (0..heap_pages.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect(),
        summary: (0..summary_words(heap_pages))
            .map(|_| AtomicU64::new(0))
            .collect(),
        chunks: (0..heap_pages / 16)
            .map(|_| ChunkDesc::new_unused())
            .collect(),
        heads: AllocHeads::new(),
        heap_pages,
    })
}

fn allocator(h: &Heap) -> Allocator<'_> {
    Allocator::new(
        &h.pages,
        &h.summary,
        &h.chunks,
        &h.heads,
        4096,
        h.heap_pages,
    )
}

#[test]
fn concurrent_small_allocations_are_distinct() {
    loom::model(|| {
        let h = heap();
        let ths: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                thread::spawn(move || allocator(&h).alloc(16384).unwrap().offset)
            })
            .collect();
        let offs: Vec<u64> = ths.into_iter().map(|t| t.join().unwrap()).collect();
        assert_ne!(offs[0], offs[1]);
        assert_eq!(allocator(&h).used_bytes(), 2 * 16384);
    });
}

#[test]
fn free_racing_alloc_never_loses_or_duplicates_blocks() {
    loom::model(|| {
        let h = heap();
        let a = allocator(&h);
        // 16 KiB class: 4 blocks per chunk. Fill one chunk, keep one block to free.
        let blocks: Vec<u64> = (0..4).map(|_| a.alloc(16384).unwrap().offset).collect();
        let h1 = h.clone();
        let victim = blocks[0];
        let t1 = thread::spawn(move || allocator(&h1).free(victim, 16384).unwrap());
        let h2 = h.clone();
        let t2 = thread::spawn(move || allocator(&h2).alloc(16384).unwrap().offset);
        t1.join().unwrap();
        let got = t2.join().unwrap();
        assert!(!blocks[1..].contains(&got));
        assert_eq!(allocator(&h).used_bytes(), 4 * 16384);
        // Free everything: all pages come back except the hinted chunk.
        let a = allocator(&h);
        for b in blocks[1..].iter().chain([&got]) {
            a.free(*b, 16384).unwrap();
        }
        assert_eq!(a.used_bytes(), 0);
    });
}

#[test]
fn large_runs_claimed_concurrently_do_not_overlap() {
    loom::model(|| {
        let h = heap();
        let ths: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                thread::spawn(move || {
                    allocator(&h)
                        .alloc(40_000)
                        .ok()
                        .map(|a| (a.offset, a.capacity))
                })
            })
            .collect();
        let got: Vec<_> = ths.into_iter().map(|t| t.join().unwrap()).collect();
        let (a, b) = (got[0].unwrap(), got[1].unwrap());
        assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "{a:?} overlaps {b:?}");
    });
}

fn event(slot: u32) -> Event {
    Event {
        kind: EventKind::Sealed,
        slot,
        gen: slot * 3 + 1,
        id: ObjectId::from_u64(u64::from(slot) * 0x9e37_79b9 + 7),
    }
}

struct Ring {
    host: HostEntry,
    cells: Vec<EventCell>,
}

fn ring(cells: usize) -> Arc<Ring> {
    Arc::new(Ring {
        host: HostEntry::new_free(),
        cells: (0..cells).map(|_| EventCell::new_free()).collect(),
    })
}

impl Ring {
    fn events(&self) -> EventRing<'_> {
        EventRing::new(&self.host, &self.cells)
    }
}

/// Two producers `push` one event each while the consumer `pops` (twice, then drains after the
/// joins, as its next pass would): every event a push reported published is popped exactly once
/// and whole (never torn: no field from another event or an earlier lap), and every push that
/// reported `false` is counted in `overflows`. `cells` = 2 ring cells with two events already
/// through it, so the pushes reuse cells in lap 1; `cells` = 1 makes the second push find the
/// cell still full (the overflow path).
///
/// Threads: 3 (two producers, the consumer); bound 2; 1.4 s (`cells` = 2) and 1.3 s (1).
fn two_producers_one_consumer(cells: usize) {
    loom::model(move || {
        let r = ring(cells);
        // Earlier laps: push and pop so that the cells are reused (sequence numbers past lap 0).
        let mut hole = None;
        for i in 0..cells as u32 {
            assert!(r.events().push(&event(100 + i)));
            assert_eq!(r.events().pop(0, &mut hole), Ok(Some(event(100 + i))));
        }
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let r = r.clone();
                thread::spawn(move || r.events().push(&event(p)))
            })
            .collect();
        let rc = r.clone();
        let consumer = thread::spawn(move || {
            let mut hole = None;
            let mut got = Vec::new();
            for _ in 0..2 {
                match rc.events().pop(0, &mut hole) {
                    Ok(Some(e)) => got.push(e),
                    Ok(None) => thread::yield_now(),
                    Err(e) => panic!("{e:?}: no producer dies in this model"),
                }
            }
            (got, hole)
        });
        let pushed: Vec<bool> = producers.into_iter().map(|t| t.join().unwrap()).collect();
        let (mut got, mut hole) = consumer.join().unwrap();
        // The consumer's next pass: everything published is there now.
        while let Some(e) = r.events().pop(0, &mut hole).expect("no hole") {
            got.push(e);
        }
        let mut expected: Vec<Event> = (0..2u32)
            .filter(|&p| pushed[p as usize])
            .map(event)
            .collect();
        got.sort_by_key(|e| e.slot);
        expected.sort_by_key(|e| e.slot);
        assert_eq!(got, expected, "popped exactly the published events, whole");
        let dropped = pushed.iter().filter(|p| !**p).count() as u64;
        assert_eq!(
            r.events().overflows(),
            dropped,
            "every dropped event counted"
        );
        if cells >= 2 {
            assert_eq!(dropped, 0, "room for both: nothing dropped");
        }
    });
}

#[test]
fn event_ring_two_producers_one_consumer() {
    two_producers_one_consumer(2);
}

#[test]
fn event_ring_overflow_is_counted_not_lost() {
    two_producers_one_consumer(1);
}

/// The ring claim (`ring_claim.rs`): a dead consumer `a` still holds the claim; `b` and `c` both
/// claim (`claim_consumer`, judging `a` dead and each other alive) while `a`'s late
/// `release_consumer` runs. Exactly one of `b`, `c` becomes the consumer, the word names it at the
/// end (`a`'s release never clears a claim taken over from it), and the loser was refused with
/// the winner's name.
///
/// Threads: 3; bound 2; 0.1 s.
#[test]
fn ring_claim_has_one_consumer_and_a_stale_release_is_harmless() {
    loom::model(|| {
        let host = Arc::new(HostEntry::new_free());
        let a = ConsumerId { index: 0, epoch: 7 };
        let (b, c) = (
            ConsumerId { index: 1, epoch: 1 },
            ConsumerId { index: 2, epoch: 3 },
        );
        claim_consumer(&host, a, |_| true).unwrap();
        let claimers: Vec<_> = [b, c]
            .into_iter()
            .map(|me| {
                let host = host.clone();
                thread::spawn(move || claim_consumer(&host, me, |holder| holder != a))
            })
            .collect();
        let h = host.clone();
        let stale = thread::spawn(move || release_consumer(&h, a));
        let got: Vec<_> = claimers.into_iter().map(|t| t.join().unwrap()).collect();
        stale.join().unwrap();
        let winners: Vec<ConsumerId> = [b, c]
            .into_iter()
            .zip(&got)
            .filter(|(_, r)| r.is_ok())
            .map(|(me, _)| me)
            .collect();
        assert_eq!(winners.len(), 1, "{got:?}");
        let winner = winners[0];
        assert_eq!(ring_consumer(&host), Some(winner));
        for r in &got {
            if let Err(holder) = r {
                assert_eq!(*holder, winner);
            }
        }
    });
}

/// The leader lease (`LeaseState`, which `LeaderLease` wraps): the word names a reaped holder
/// `dead`; two live servers each poll twice (claim, then renew or lose) and release. Never two
/// leaders at once: a server counts itself in from `Acquired` (checking `is_leader`) until right
/// before its `release`, and the count never exceeds 1; a claim is taken from the word it read,
/// so of two claimers of one word at most one wins. At least one of them led.
///
/// Threads: 2; bound 2; 0.2 s.
#[test]
fn leader_lease_never_two_leaders() {
    loom::model(|| {
        let words = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let dead = LeaderId {
            client: 9,
            epoch: 1,
        };
        words.0.store(dead.pack(), Ordering::Relaxed);
        words.1.store(5, Ordering::Relaxed);
        let leaders = Arc::new(AtomicU64::new(0));
        let ths: Vec<_> = (0..2usize)
            .map(|i| {
                let (words, leaders) = (words.clone(), leaders.clone());
                thread::spawn(move || {
                    let w = LeaseWords {
                        leader: &words.0,
                        lease_until_ms: &words.1,
                    };
                    let me = LeaderId {
                        client: i,
                        epoch: 1,
                    };
                    let mut lease = LeaseState::new(me, 300, 50);
                    let alive = |h: LeaderId| h != dead;
                    let mut led = false;
                    for now in [10, 20] {
                        match lease.poll(w, now, alive) {
                            LeaseEvent::Acquired { .. } => {
                                assert!(lease.is_leader(w, now));
                                let n = leaders.fetch_add(1, Ordering::SeqCst) + 1;
                                assert_eq!(n, 1, "two leaders at once");
                                led = true;
                            }
                            LeaseEvent::Renewed => assert!(led),
                            LeaseEvent::Lost { .. } => panic!("nobody takes a live lease"),
                            LeaseEvent::Follower { .. } => assert!(!led),
                        }
                    }
                    if led {
                        leaders.fetch_sub(1, Ordering::SeqCst);
                    }
                    lease.release(w);
                    led
                })
            })
            .collect();
        let led: Vec<bool> = ths.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(led.iter().any(|l| *l), "somebody led");
        assert_eq!(words.0.load(Ordering::Relaxed), 0, "released");
    });
}

/// A page run freed while another is claimed in the same bitmap word: both change the word's
/// *used* and *full* summary bits (the word goes free, used, full, in some order). Whatever the
/// interleaving, once both are done the summary agrees with the bitmap (the last sync re-reads
/// the final word), and the claim got its pages.
#[test]
fn page_runs_racing_in_one_word_keep_the_summary_exact() {
    loom::model(|| {
        let h = heap();
        let run = 16 * 4096; // 16 pages: a page run, not a size-class block
        let a = allocator(&h).alloc(run).unwrap();
        let h1 = h.clone();
        let t1 = thread::spawn(move || allocator(&h1).free(a.offset, run).unwrap());
        let h2 = h.clone();
        let t2 = thread::spawn(move || allocator(&h2).alloc(run).map(|b| b.offset).ok());
        t1.join().unwrap();
        let got = t2.join().unwrap();
        assert!(got.is_some(), "16 of 32 pages were free throughout");
        let a = allocator(&h);
        assert_eq!(
            a.check_summary(false),
            0,
            "summary disagrees with the bitmap"
        );
        assert_eq!(a.pages_in_use(), 16);
    });
}

/// Two threads each claim and release a page run in the same word: at the end the word is free
/// and so is its summary.
#[test]
fn page_runs_claimed_and_freed_concurrently_leave_the_summary_exact() {
    loom::model(|| {
        let h = heap();
        let ths: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                thread::spawn(move || {
                    let a = allocator(&h);
                    if let Ok(b) = a.alloc(16 * 4096) {
                        a.free(b.offset, 16 * 4096).unwrap();
                    }
                })
            })
            .collect();
        for t in ths {
            t.join().unwrap();
        }
        let a = allocator(&h);
        assert_eq!(a.pages_in_use(), 0);
        assert_eq!(
            a.check_summary(false),
            0,
            "summary disagrees with the bitmap"
        );
    });
}

/// A connector's identity in the registration models: told apart by its pid.
fn identity(pid: u64) -> Identity<'static> {
    Identity {
        pid,
        start_time: pid * 10,
        host_hash: pid * 100,
        host_index: 0,
        attached_ms: 1,
        heartbeat_ms: 1,
        name: "m",
    }
}

/// `Store::connect` over a model table: `register` with the set-up reduced to its fresh check
/// (the reference table, high-water mark and host table are the region's, not modelled).
fn connect(table: &[ClientEntry], pid: u64) -> Option<(usize, EntryWord)> {
    let r: Result<_, ()> = register(
        table.len(),
        |i| &table[i],
        |_, claim| {
            if claim.still_ours() {
                Prepared::Ready(identity(pid))
            } else {
                Prepared::Lost
            }
        },
    );
    r.unwrap()
}

/// How long the reclaimer of the registration model lets a connect take (its clock is passed in:
/// it looks at 0 and at `STALE_MS + 1`).
const STALE_MS: u64 = 100;

/// M1, connect against the stale-connect reclaimer (`register`, `Claim::{take, still_ours,
/// write_identity, publish}` of `Store::connect`; `reclaim_if_stale` of
/// `Store::reclaim_stale_connecting`): a one-entry table, FREE at epoch 4 with a previous
/// occupant's fields. Connector A registers while R, which judges A's entry stale (it looks twice,
/// a stale timeout apart on its clock passed in), reclaims it and then connects itself (B), as the
/// next client would. Exactly one of A and B ends registered, and the entry is exactly its `ACTIVE`
/// word: a connector that reports success owns an entry nobody reclaimed or claimed under it, the
/// reclaimer never frees a published entry, and the entry is never lost (left `CONNECTING` or
/// `FREE` with nobody registered). Not asserted: the identity fields of the winner. A connector
/// paused between its fresh check and its stores can still write into an entry reclaimed and
/// claimed meanwhile (the window every guarded write has, `docs/store.md`, "Pauses and fencing").
/// The two-connector model checks the fields.
///
/// Seeded bugs it catches: `publish` as a plain store (A resurrects the entry B owns: two owners);
/// `reclaim_if_stale` freeing with a store rather than a CAS from the watched word (it frees A's
/// entry A just published, and B takes it).
/// Threads: 2; bound 2; 0.08 s.
#[test]
fn connect_against_a_stale_connect_reclaimer_has_one_owner() {
    loom::model(|| {
        let table = Arc::new(vec![ClientEntry::new_free()]);
        let old = EntryWord {
            epoch: 4,
            status: status::FREE,
        };
        table[0].word.store(old.pack(), Ordering::Relaxed);
        table[0].pid.store(111, Ordering::Relaxed);
        let t = table.clone();
        let a = thread::spawn(move || connect(&t, 1));
        let t = table.clone();
        let r = thread::spawn(move || {
            let seen = reclaim_if_stale(&t[0], None, 0, STALE_MS);
            let _ = reclaim_if_stale(&t[0], seen, STALE_MS + 1, STALE_MS);
            connect(&t, 2)
        });
        let a = a.join().unwrap();
        let b = r.join().unwrap();
        let winners: Vec<_> = [a, b].into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "A {a:?}, B {b:?}");
        let (i, w) = winners[0];
        assert_eq!(i, 0);
        assert_eq!(w.status, status::ACTIVE);
        assert!(w.epoch > old.epoch, "a fresh epoch: {w:?}");
        assert_eq!(
            table[0].load_word(),
            w,
            "the winner's entry was freed or claimed under it"
        );
    });
}

/// Two connectors race for a two-entry table (`register`): both register, on different entries,
/// and each entry is exactly its owner's `ACTIVE` word with its owner's identity (nobody else
/// wrote into it). Seeded bug it catches: `Claim::take` as a load and a store rather than a CAS
/// (both claim entry 0).
/// Threads: 2; bound 2; 0.01 s.
#[test]
fn two_connectors_never_share_an_entry() {
    loom::model(|| {
        let table = Arc::new(vec![ClientEntry::new_free(), ClientEntry::new_free()]);
        let ths: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|pid| {
                let t = table.clone();
                thread::spawn(move || (pid, connect(&t, pid).expect("a free entry for each")))
            })
            .collect();
        let got: Vec<_> = ths.into_iter().map(|t| t.join().unwrap()).collect();
        assert_ne!(got[0].1 .0, got[1].1 .0, "one entry, two owners: {got:?}");
        for (pid, (i, w)) in got {
            let e = &table[i];
            assert_eq!(e.load_word(), w);
            assert_eq!(w.status, status::ACTIVE);
            assert_eq!(
                e.pid.load(Ordering::Relaxed),
                pid,
                "another connector wrote here"
            );
            assert_eq!(e.start_time.load(Ordering::Relaxed), pid * 10);
            assert_eq!(e.host_hash.load(Ordering::Relaxed), pid * 100);
        }
    });
}

/// A client the reaper judges dead: its entry (`ACTIVE` at epoch 3), its reference table with one
/// reference on the object of slot 0, and that object, sealed with a delete pending on that
/// reference. `freed` counts frees of the object's payload.
struct Victim {
    entry: ClientEntry,
    refs: Vec<AtomicU64>,
    slot: Slot,
    freed: AtomicU64,
}

const VICTIM: EntryWord = EntryWord {
    epoch: 3,
    status: status::ACTIVE,
};

const PENDING: Word = Word {
    gen: 1,
    state: state::SEALED,
    flags: flags::DELETE_PENDING,
    owner: 0,
};

fn victim() -> Arc<Victim> {
    let v = Victim {
        entry: ClientEntry::new_free(),
        refs: (0..16).map(|_| AtomicU64::new(0)).collect(),
        slot: Slot::new_free(),
        freed: AtomicU64::new(0),
    };
    v.entry.word.store(VICTIM.pack(), Ordering::Relaxed);
    RefTable::new(&v.refs).add(0, PENDING.gen).unwrap();
    v.slot.store_word(PENDING);
    Arc::new(v)
}

impl Victim {
    fn table(&self) -> RefTable<'_> {
        RefTable::new(&self.refs)
    }

    /// `Store::refcount` over the one client.
    fn refcount(&self, gen: u32) -> u32 {
        count_references([(&self.entry, self.table())], 0, gen)
    }

    /// `Store::finish_delete`'s free of the payload: Release, as the allocator's CAS on the heap
    /// bitmap is (the next owner of the block synchronizes with it before writing).
    fn free_payload(&self) {
        self.freed.fetch_add(1, Ordering::Release);
    }

    /// `Client::run_pending_delete`, the `last` of a drop: the delete pending on our last
    /// reference.
    fn run_pending_delete(&self) {
        if after_release(&HW, &self.slot, PENDING.gen, 0, || {
            self.refcount(PENDING.gen)
        })
        .is_some()
        {
            self.free_payload();
        }
    }

    /// `Store::reap_client` as maintainer `tag`, for a client judged dead with `judged` that holds
    /// references only (no unsealed object, intent or started delete: steps 2, 3 and 5 find
    /// nothing): the fence, the references (step 4) and the free of the entry, each after the
    /// check that the entry is still the one fenced. Returns whether this reaper fenced it.
    fn reap(&self, judged: EntryWord, tag: u16) -> bool {
        let Some(dead) = DeadEntry::fence(&self.entry, judged) else {
            return false;
        };
        if !dead.still_dead() {
            return true;
        }
        dead.release_references(
            &HW,
            self.table(),
            // `Store::entry_names_slot`.
            |slot, g16| {
                let w = self.slot.load_word();
                (slot == 0 && gen_matches(g16, w.gen)).then_some((&self.slot, w))
            },
            tag,
            |_, gen| self.refcount(gen),
            |_, _| false,
            |_, _deleting| self.free_payload(),
        );
        if dead.still_dead() {
            dead.free();
        }
        true
    }
}

/// H1, a client reaped while alive: the reaper (`DeadEntry::fence`, `release_references`, `free`,
/// in `Store::reap_client`'s order) judged it dead while it was paused; it resumes and gets the
/// object again (`Registered::acquire`, as `Client::try_acquire`), reads its payload, checks the
/// fence (`check_fenced`, as a caller of `ObjectRef::still_valid` does) and drops its references
/// (`Registered::drop_ref`, whose last one runs the pending delete). A copy whose fence check
/// passes never read a freed payload (the reaper frees only after its fence CAS, and the client's
/// SeqCst fence orders its payload reads before its reload of the word); the payload is freed at
/// most once (the pending delete runs once: by the reaper, or by the client's release while it
/// was still registered).
///
/// Not asserted, because it does not hold: that the pending delete runs at all. This model found
/// that it can be lost (a leak, not a use-after-free): the client passes `drop_ref`'s fence check;
/// the reaper fences and reads `op_seq` (even: no operation in flight, so no sweep is owed); the
/// client's `OpGuard::begin_unfenced` sees the changed word and takes no guard, its `remove` still
/// drops the last reference, and `after_drop` sees the fence and leaves the delete to the reaper;
/// the reaper's `held()` no longer names the object. It stays `SEALED | DELETE_PENDING` with no
/// reference until some later sweep (`finish_orphaned_deletes`). (Asserting `freed == 1`, or
/// "`freed == 1` or the reaper saw `op_seq` odd", fails at bound 2.)
///
/// Seeded bugs it catches: `check_fenced` without its fence (the client reads the freed payload,
/// then still sees its old word); `DeadEntry::fence` that checks the judged word but does not
/// change it (the client is never fenced and keeps reading a payload the reaper freed).
/// Threads: 2; bound 2; 2.2 s.
#[test]
fn a_client_reaped_while_paused_never_keeps_a_freed_payload() {
    loom::model(|| {
        let v = victim();
        let r = v.clone();
        let reaper = thread::spawn(move || assert!(r.reap(VICTIM, 9)));
        let c = v.clone();
        let client = thread::spawn(move || {
            let reg = Registered::new(&c.entry, VICTIM.pack(), c.table());
            let got = reg.acquire(&c.slot, 0, PENDING, || {
                reg.drop_ref(0, PENDING.gen, || c.run_pending_delete());
            });
            // The copy out of the payload, then the check that makes it valid.
            let stale = c.freed.load(Ordering::Relaxed) != 0;
            if reg.check_fenced().is_ok() {
                assert!(
                    !stale,
                    "a client that passed its fence check read a freed payload"
                );
            }
            if matches!(got, Ok(Some(_))) {
                reg.drop_ref(0, PENDING.gen, || c.run_pending_delete());
            }
            reg.drop_ref(0, PENDING.gen, || c.run_pending_delete());
        });
        reaper.join().unwrap();
        client.join().unwrap();
        assert!(v.freed.load(Ordering::Relaxed) <= 1, "freed twice");
    });
}

/// H2, two reapers of one entry: both judged it dead with the same word (`ACTIVE` at epoch 3); one
/// of them, after its reap, connects a new client into the entry it freed (`register`: `ACTIVE`
/// at epoch 4), as the next client would. Exactly one reaper fences the entry (the other's CAS
/// from the judged word fails, and it does nothing at all); the pending delete on the dead
/// client's reference runs exactly once; and the newcomer, if it registered, keeps its entry and
/// its (empty) table: a reaper's judgement of epoch 3 never reaps epoch 4.
///
/// Seeded bug it catches: `DeadEntry::fence` that reloads the word and fences whatever `ACTIVE`
/// epoch it finds (the late reaper reaps the newcomer; also a fence by plain store: both fence).
/// Threads: 2; bound 2; 0.01 s.
#[test]
fn two_reapers_of_one_entry_reap_it_once() {
    loom::model(|| {
        let v = victim();
        let r = v.clone();
        let first = thread::spawn(move || {
            let reaped = r.reap(VICTIM, 8);
            let newcomer = connect(std::slice::from_ref(&r.entry), 7).map(|(_, w)| w);
            (reaped, newcomer)
        });
        let r = v.clone();
        let second = thread::spawn(move || r.reap(VICTIM, 9));
        let (a, newcomer) = first.join().unwrap();
        let b = second.join().unwrap();
        assert!(a ^ b, "reapers that fenced: first {a}, second {b}");
        assert_eq!(
            v.freed.load(Ordering::Relaxed),
            1,
            "the pending delete ran once"
        );
        let last = v.entry.load_word();
        match newcomer {
            Some(w) => {
                assert_eq!(w.epoch, VICTIM.epoch + 1);
                assert_eq!(last, w, "the newcomer was reaped");
                assert!(
                    v.table().held().is_empty(),
                    "the newcomer's table was written"
                );
            }
            None => assert_eq!(
                last,
                EntryWord {
                    status: status::FREE,
                    ..VICTIM
                },
                "the entry was not freed"
            ),
        }
    });
}

/// A heap of two run-index leaves under a root (4128 pages: 64 page words and a half), with
/// two 16-page runs allocated in the upper leaf's one word and the lower leaf wholly used. Only
/// the upper leaf changes in the models (a sync of the lower one reads its 64 words twice, too
/// many branches for loom), but both levels do: the upper leaf's runs are the root's suffix.
fn two_leaf_heap() -> (Arc<Heap>, u64, u64) {
    let h = heap_of(64 * 64 + 32);
    let a = allocator(&h);
    // Best fit from the top: the upper word's two halves, then the whole lower leaf.
    let top = a.alloc(16 * 4096).unwrap().offset;
    let below = a.alloc(16 * 4096).unwrap().offset;
    assert_eq!((top, below), (4096 + 4112 * 4096, 4096 + 4096 * 4096));
    assert_eq!(a.alloc(64 * 64 * 4096).unwrap().offset, 4096);
    (h, top, below)
}

/// `loom::model` with room for the setup's syncs of the lower leaf (every load is a branch).
fn two_leaf_model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.max_branches = b.max_branches.max(20_000);
    // Bound 1: a stale re-read (a Relaxed swap, a missing re-read) shows with one preemption
    // (checked by seeding both), at a fraction of bound 2's 49 s.
    b.preemption_bound = Some(1);
    b.check(f);
}

/// A page run allocated (guided by the index) in the word where another is being freed: the
/// allocation gets the top run either way (an exact fit, or the top of the joined run), and
/// both index levels end exact.
#[test]
fn an_allocation_racing_a_free_leaves_both_index_levels_exact() {
    two_leaf_model(|| {
        let (h, top, below) = two_leaf_heap();
        allocator(&h).free(top, 16 * 4096).unwrap();
        let h1 = h.clone();
        let t1 = thread::spawn(move || allocator(&h1).free(below, 16 * 4096).unwrap());
        let h2 = h.clone();
        let t2 = thread::spawn(move || allocator(&h2).alloc(16 * 4096).unwrap().offset);
        t1.join().unwrap();
        assert_eq!(t2.join().unwrap(), top);
        let a = allocator(&h);
        assert_eq!(a.pages_in_use(), 64 * 64 + 16);
        assert_eq!(
            a.check_summary_parts(false),
            (0, 0),
            "summary or index stale"
        );
    });
}

fn xhost_payload(p: u64) -> [u64; PAYLOAD_WORDS] {
    [p, p + 10, p + 20, p + 30, p + 40]
}

/// The cross-host ring's host-local half (`xhost::ring`): two producers `send` (claim by CAS on
/// `head`, take the cell by CAS on its seq, body, publish CAS) while the consumer `try_recv`s
/// twice, then drains after the joins. With `hardware` coherence write-back and evict are no-ops,
/// so this checks the orderings: every send reported `Ok(position)` is received exactly once, at
/// that position, whole (checksum and payload), in position order; a send refused is `Full`
/// (never `Skipped`: the hole timeout is infinite); no checksum ever fails. The cells have been
/// through one lap first, so the sends reuse them (seq of lap 1, the consumer's `tail` Release
/// against the producer's Acquire). `cells` = 1 makes the second send find the ring full.
///
/// Threads: 3; bound 2; 1.9 s (`cells` = 2) and 1.2 s (1). Seen to fail ("a published cell
/// read torn", both) with the publish CAS Relaxed instead of Release.
fn xhost_ring_model(cells: usize) {
    let c = Coherence::new(CoherenceMode::Hardware);
    loom::model(move || {
        let words: Arc<Vec<AtomicU64>> = Arc::new(
            (0..XhostRing::words_needed(cells))
                .map(|_| AtomicU64::new(0))
                .collect(),
        );
        let ring = XhostRing::new(&words, cells).expect("layout");
        let mut consumer = XhostConsumer::new(&c, ring, Duration::MAX).unwrap();
        for i in 0..cells as u64 {
            assert_eq!(ring.send(&c, 1, &xhost_payload(100 + i)), Ok(i));
            let m = consumer.try_recv(&c).unwrap().expect("the earlier lap");
            assert_eq!(m.payload, xhost_payload(100 + i));
        }
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let (words, c) = (words.clone(), c.clone());
                thread::spawn(move || {
                    let ring = XhostRing::new(&words, cells).unwrap();
                    ring.send(&c, 2, &xhost_payload(p))
                })
            })
            .collect();
        let (wc, cc) = (words.clone(), c.clone());
        let consumer = thread::spawn(move || {
            let ring = XhostRing::new(&wc, cells).unwrap();
            let mut consumer = XhostConsumer::new(&cc, ring, Duration::MAX).unwrap();
            let mut got = Vec::new();
            for _ in 0..2 {
                match consumer.try_recv(&cc) {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(consumer.mismatches(), 0, "a published cell read torn");
            got
        });
        let sent: Vec<_> = producers.into_iter().map(|t| t.join().unwrap()).collect();
        let mut got = consumer.join().unwrap();
        let mut consumer = XhostConsumer::new(&c, ring, Duration::MAX).unwrap();
        while let Some(m) = consumer.try_recv(&c).expect("no corrupt cell") {
            got.push(m);
        }
        assert_eq!(consumer.mismatches(), 0, "a published cell read torn");
        let mut expected = Vec::new();
        for (p, r) in sent.iter().enumerate() {
            match r {
                Ok(position) => expected.push((*position, p as u64)),
                Err(XhostRingError::Full { .. }) => assert_eq!(cells, 1, "room for both"),
                Err(e) => panic!("send: {e}"),
            }
        }
        expected.sort_unstable();
        let got: Vec<(u64, u64)> = got
            .iter()
            .map(|m| {
                assert_eq!(m.kind, 2);
                assert_eq!(m.payload, xhost_payload(m.payload[0]), "whole");
                (m.position, m.payload[0])
            })
            .collect();
        assert_eq!(
            got, expected,
            "received exactly what was sent, in position order"
        );
        assert_eq!(consumer.stats().skipped(), 0);
    });
}

#[test]
fn xhost_ring_two_producers_one_consumer() {
    xhost_ring_model(2);
}

#[test]
fn xhost_ring_full_is_refused_not_lost() {
    xhost_ring_model(1);
}

/// The cross-host ring between two emulated hosts (`support/loom_hosts.rs`): host A's producer
/// sends two messages through a one-cell ring while host B's consumer `try_recv`s twice, then
/// drains after the join; a third thread is the caches, which may write A's cell line back early
/// (half written) and refill B's copy of it (a stale prefetch) anywhere. Every line moves between
/// the hosts only by the ring's own write-backs and evictions (and those spontaneous events), so
/// this checks the write order across hosts: every send reported `Ok` is received exactly once,
/// whole, in order; the second send is refused `Full` only while B's advanced `tail` has not
/// reached memory; no checksum fails; memory ends holding B's `tail` past both messages.
///
/// Threads: 3; bound 2. The negative controls below run it with A's write-backs or B's
/// evictions switched off: each must fail.
fn xhost_ring_across_hosts(knobs: Knobs, caches: bool) {
    loom_hosts::model(caches.then_some(1), move || {
        let n = XhostRing::words_needed(1);
        let cell_word = n - loom_hosts::LINE_WORDS;
        let hosts = Hosts::new(2, n);
        let (ca, cb) = (hosts.coherence(0), hosts.coherence(1));
        // Lap 0 through the cell, so the sends below reuse it.
        {
            let ring_a = XhostRing::new(hosts.view(0), 1).unwrap();
            let mut consumer = XhostConsumer::new(
                &cb,
                XhostRing::new(hosts.view(1), 1).unwrap(),
                Duration::MAX,
            )
            .unwrap();
            assert_eq!(ring_a.send(&ca, 1, &xhost_payload(100)), Ok(0));
            let m = consumer.try_recv(&cb).unwrap().expect("lap 0 delivered");
            assert_eq!(m.payload, xhost_payload(100));
        }
        hosts.set_knobs(knobs);
        let (ha, hb) = (hosts.clone(), hosts.clone());
        let producer = thread::spawn(move || {
            let ca = ha.coherence(0);
            let ring = XhostRing::new(ha.view(0), 1).unwrap();
            [
                ring.send(&ca, 2, &xhost_payload(1)),
                ring.send(&ca, 2, &xhost_payload(2)),
            ]
        });
        let consumer = thread::spawn(move || {
            let cb = hb.coherence(1);
            let ring = XhostRing::new(hb.view(1), 1).unwrap();
            let mut consumer = XhostConsumer::new(&cb, ring, Duration::MAX)
                .unwrap_or_else(|e| panic!("host B's view of the ring across hosts: {e}"));
            let mut got = Vec::new();
            for _ in 0..2 {
                match consumer.try_recv(&cb) {
                    Ok(Some(m)) => got.push(m),
                    Ok(None) => thread::yield_now(),
                    Err(e) => panic!("host B's receive across hosts: {e}"),
                }
            }
            (got, consumer.mismatches())
        });
        let cache = caches.then(|| {
            let hc = hosts.clone();
            thread::spawn(move || {
                hc.spontaneous_write_back(0, cell_word);
                hc.spontaneous_refresh(1, cell_word);
            })
        });
        let sent = producer.join().unwrap();
        let (mut got, mismatches) = consumer.join().unwrap();
        if let Some(t) = cache {
            t.join().unwrap();
        }
        assert_eq!(mismatches, 0, "a published cell read torn across hosts");
        let mut consumer = XhostConsumer::new(
            &cb,
            XhostRing::new(hosts.view(1), 1).unwrap(),
            Duration::MAX,
        )
        .unwrap();
        while let Some(m) = consumer.try_recv(&cb).expect("no corrupt cell") {
            got.push(m);
        }
        assert_eq!(
            consumer.mismatches(),
            0,
            "a published cell read torn across hosts"
        );
        let expected: Vec<(u64, u64)> = sent
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Ok(position) => Some((*position, i as u64 + 1)),
                Err(XhostRingError::Full { .. }) if i == 1 => None,
                Err(e) => panic!("send {i}: {e}"),
            })
            .collect();
        assert!(!expected.is_empty(), "the first send has room");
        let got: Vec<(u64, u64)> = got
            .iter()
            .map(|m| {
                assert_eq!(m.payload, xhost_payload(m.payload[0]), "whole");
                (m.position, m.payload[0])
            })
            .collect();
        assert_eq!(
            got, expected,
            "host B received exactly what host A sent, in order, across hosts"
        );
        // B's consumer writes its tail back: memory (what A would read next) has both.
        assert_eq!(
            hosts.device_word(XhostRing::words_needed(0) / 2),
            1 + expected.len() as u64,
            "memory holds B's tail past every message received"
        );
    });
}

#[test]
fn xhost_ring_across_two_emulated_hosts_delivers_every_message_whole() {
    xhost_ring_across_hosts(Knobs::default(), false);
}

#[test]
fn xhost_ring_across_hosts_survives_early_write_backs_and_stale_refills() {
    xhost_ring_across_hosts(Knobs::default(), true);
}

#[test]
#[should_panic(expected = "across hosts")]
fn xhost_ring_across_hosts_without_the_producers_write_backs_fails() {
    xhost_ring_across_hosts(
        Knobs {
            skip_write_back: Some(0),
            ..Knobs::default()
        },
        false,
    );
}

#[test]
#[should_panic(expected = "across hosts")]
fn xhost_ring_across_hosts_without_the_consumers_evictions_fails() {
    xhost_ring_across_hosts(
        Knobs {
            skip_evict: Some(1),
            ..Knobs::default()
        },
        false,
    );
}

/// A host's view for the cross-host get/delete models: the line of host A's directory slot that
/// the protocol moves (its state word and the other `AtomicU64` fields of its first line), and a
/// line holding host B's pin table (one `RefTable` word: a pin of `(slot 0, gen 1)`).
struct ShardView {
    slot: Slot,
    pins: Vec<AtomicU64>,
    pad: Vec<AtomicU64>,
}

impl ShardView {
    fn new() -> ShardView {
        ShardView {
            slot: Slot::new_free(),
            pins: vec![AtomicU64::new(0)],
            pad: (0..9).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Host `c`'s count of host B's pins on the object, from memory (the deleter's half).
    fn pins_in_memory(&self, c: &Coherence) -> u32 {
        evict(c, &self.pins);
        u32::from(RefTable::new(&self.pins).count(0, SHARD_SEALED.gen))
    }
}

impl loom_hosts::View for ShardView {
    fn len(&self) -> usize {
        16
    }

    fn cell(&self, i: usize) -> Cell<'_> {
        let s = &self.slot;
        Cell::U64(match i {
            0 => &s.word,
            1 => &s.commit,
            2 => &s.data_offset,
            3 => &s.data_size,
            4 => &s.last_access_ms,
            5 => &s.created,
            6 | 7 => &self.pad[i - 6],
            8 => &self.pins[0],
            _ => &self.pad[i - 7],
        })
    }
}

/// Host A's sealed object in the cross-host models.
const SHARD_SEALED: Word = Word {
    gen: 1,
    state: state::SEALED,
    flags: 0,
    owner: 0,
};

/// Host A (index 0) has sealed the object and written the word back; host B (1) found it (its
/// view holds the sealed word). `pinned`: B also holds a pin, written back. Then `knobs` apply.
fn shard_hosts(pinned: bool, knobs: Knobs) -> std::sync::Arc<Hosts<ShardView>> {
    let hosts = Hosts::with_views(vec![ShardView::new(), ShardView::new()]);
    let (ca, cb) = (hosts.coherence(0), hosts.coherence(1));
    let (a, b) = (hosts.view(0), hosts.view(1));
    a.slot.store_word(SHARD_SEALED);
    write_back(&ca, std::slice::from_ref(&a.slot.word));
    evict(&cb, std::slice::from_ref(&b.slot.word));
    assert_eq!(b.slot.load_word(), SHARD_SEALED);
    if pinned {
        RefTable::new(&b.pins).add(0, SHARD_SEALED.gen).unwrap();
        write_back(&cb, &b.pins);
    }
    hosts.set_knobs(knobs);
    hosts
}

/// Protocol v2's get of another host's object against that host's delete, through memory
/// (`directory::acquire_sealed_remote` on host B — pin in B's own table, write back, fence, evict
/// and re-read A's slot word — and `begin_delete` on host A, which writes its `DELETING` word
/// back before its fence and evicts B's pin table before counting). Each host's stores reach the
/// other only by these write-backs and evictions (`support/loom_hosts.rs`): never both "B holds
/// it" and "A may free it".
///
/// Threads: 2; bound 2. Negative controls: with B's or A's write-backs, or B's or A's
/// evictions, switched off, the model fails.
fn remote_get_and_delete(knobs: Knobs) {
    loom_hosts::model(None, move || {
        let hosts = shard_hosts(false, knobs);
        let (ha, hb) = (hosts.clone(), hosts.clone());
        let deleter = thread::spawn(move || {
            let (c, a) = (ha.coherence(0), ha.view(0));
            begin_delete(&c, &a.slot, SHARD_SEALED, 1, || a.pins_in_memory(&c)).is_some()
        });
        let getter = thread::spawn(move || {
            let (c, b) = (hb.coherence(1), hb.view(1));
            let pins = RefTable::new(&b.pins);
            acquire_sealed_remote(
                &c,
                &b.slot,
                SHARD_SEALED,
                || pins.add(0, SHARD_SEALED.gen).map(|_| &b.pins[..]),
                || {
                    pins.remove(0, SHARD_SEALED.gen);
                },
            )
            .unwrap()
            .is_some()
        });
        let (freed, held) = (deleter.join().unwrap(), getter.join().unwrap());
        assert!(
            !(freed && held),
            "host A may free an object host B holds, across hosts"
        );
    });
}

#[test]
fn a_remote_get_and_its_hosts_delete_never_both_win() {
    remote_get_and_delete(Knobs::default());
}

#[test]
#[should_panic(expected = "across hosts")]
fn a_remote_get_without_its_pins_write_back_fails() {
    remote_get_and_delete(Knobs {
        skip_write_back: Some(1),
        ..Knobs::default()
    });
}

#[test]
#[should_panic(expected = "across hosts")]
fn a_remote_get_without_evicting_the_slot_word_fails() {
    remote_get_and_delete(Knobs {
        skip_evict: Some(1),
        ..Knobs::default()
    });
}

#[test]
#[should_panic(expected = "across hosts")]
fn a_delete_without_writing_back_its_deleting_word_fails() {
    remote_get_and_delete(Knobs {
        skip_write_back: Some(0),
        ..Knobs::default()
    });
}

#[test]
#[should_panic(expected = "across hosts")]
fn a_delete_without_evicting_the_remote_pins_fails() {
    remote_get_and_delete(Knobs {
        skip_evict: Some(0),
        ..Knobs::default()
    });
}

/// A delete on host A deferred by host B's pin is never lost when B releases meanwhile
/// (`directory::release_remote` on B — unpin, write back, fence, evict and re-read the word: a
/// pending delete → B tells A, here a flag standing for the release message on the ring to A,
/// whose delivery the ring models check — then A's keeper runs `after_release`): the object is
/// deleted exactly once. `begin_delete`'s restore writes `DELETE_PENDING` back before its second
/// reference check, so either that check sees the pin gone or B's re-read sees the flag.
///
/// Threads: 2; bound 2. Negative control: with A's write-backs off (the restored flag never
/// reaches B), the delete is lost.
fn remote_release_and_deferred_delete(knobs: Knobs) {
    loom_hosts::model(None, move || {
        let hosts = shard_hosts(true, knobs);
        let (ha, hb) = (hosts.clone(), hosts.clone());
        let deleter = thread::spawn(move || {
            let (c, a) = (ha.coherence(0), ha.view(0));
            begin_delete(&c, &a.slot, SHARD_SEALED, 1, || a.pins_in_memory(&c)).is_some()
        });
        let releaser = thread::spawn(move || {
            let (c, b) = (hb.coherence(1), hb.view(1));
            release_remote(&c, &b.slot, SHARD_SEALED.gen, || {
                RefTable::new(&b.pins).remove(0, SHARD_SEALED.gen);
                &b.pins[..]
            })
        });
        let deleted = deleter.join().unwrap();
        let told = releaser.join().unwrap();
        // Host A's keeper, on B's release message.
        let (ca, a) = (hosts.coherence(0), hosts.view(0));
        let deleted_on_release = told
            && after_release(&ca, &a.slot, SHARD_SEALED.gen, 2, || a.pins_in_memory(&ca)).is_some();
        assert_eq!(
            u32::from(deleted) + u32::from(deleted_on_release),
            1,
            "the delete ran exactly once across hosts (told: {told})"
        );
    });
}

#[test]
fn a_remote_release_never_loses_its_hosts_deferred_delete() {
    remote_release_and_deferred_delete(Knobs::default());
}

#[test]
#[should_panic(expected = "across hosts")]
fn a_deferred_delete_without_writing_back_its_flag_is_lost() {
    remote_release_and_deferred_delete(Knobs {
        skip_write_back: Some(0),
        ..Knobs::default()
    });
}

/// A host's view for the cross-host create model: both hosts' directory shards (two slots each),
/// every slot as two lines like the region's — the first with its state word, commit record and
/// key, the second with its home word.
struct CreateView {
    shards: [Vec<Slot>; 2],
}

/// Cells per slot in `CreateView`: word, commit, the 7 key words (line 0), home (line 1).
const SLOT_CELLS: usize = 10;

impl CreateView {
    fn new() -> CreateView {
        CreateView {
            shards: [0, 1].map(|_| (0..2).map(|_| Slot::new_free()).collect()),
        }
    }
}

impl loom_hosts::View for CreateView {
    fn len(&self) -> usize {
        2 * 2 * SLOT_CELLS
    }

    fn cell(&self, i: usize) -> Cell<'_> {
        let s = &self.shards[i / (2 * SLOT_CELLS)][i / SLOT_CELLS % 2];
        match i % SLOT_CELLS {
            0 => Cell::U64(&s.word),
            1 => Cell::U64(&s.commit),
            9 => Cell::U64(s.home_word()),
            k => Cell::U32(&s.id[k - 2]),
        }
    }

    fn line(&self, i: usize) -> usize {
        2 * (i / SLOT_CELLS) + usize::from(i % SLOT_CELLS == 9)
    }
}

/// Protocol v2's create of one id by two hosts at once, each in its own shard
/// (`Directory::insert_flagged` with `UNCONFIRMED`, then `directory::confirm_across_hosts`: write
/// the entry back, fence, look the id up in the other shard from memory, lower host index wins a
/// tie, the winner clears the flag): never both confirmed (a duplicate id across hosts); when
/// nobody gave up waiting, exactly one. The loser's slot is free again.
///
/// Threads: 2; bound 2. Negative controls: with either host's write-backs or evictions off, both
/// confirm.
fn cross_host_create(knobs: Knobs) {
    loom_hosts::model(None, move || {
        let hosts = Hosts::with_views(vec![CreateView::new(), CreateView::new()]);
        hosts.set_knobs(knobs);
        let id = ObjectId::from_u64(42);
        let creators: Vec<_> = (0..2usize)
            .map(|h| {
                let hosts = hosts.clone();
                thread::spawn(move || {
                    let (c, v) = (hosts.coherence(h), hosts.view(h));
                    let mine = Directory::new(&v.shards[h]);
                    let other = [((1 - h) as u32, Directory::new(&v.shards[1 - h]))];
                    let ins = mine
                        .insert_flagged(&id, 0, flags::UNCONFIRMED, |_| {})
                        .expect("room");
                    let mut waits = 0;
                    let r = confirm_across_hosts(&c, &mine, ins, h as u32, &other, &id, || {
                        waits += 1;
                        thread::yield_now();
                        waits <= 3
                    });
                    let left = mine.slot(ins.index).load_word();
                    (r, left)
                })
            })
            .collect();
        let results: Vec<_> = creators.into_iter().map(|t| t.join().unwrap()).collect();
        let confirmed = results.iter().filter(|(r, _)| r.is_ok()).count();
        assert!(
            confirmed <= 1,
            "one id confirmed on both hosts, across hosts: {results:?}"
        );
        let gave_up = results
            .iter()
            .any(|(r, _)| matches!(r, Err(Unconfirmed::Busy { .. })));
        if !gave_up {
            assert_eq!(confirmed, 1, "nobody confirmed, across hosts: {results:?}");
        }
        for (r, left) in &results {
            match r {
                Ok(w) => assert!(w.flags & flags::UNCONFIRMED == 0 && w.state == state::CREATING),
                Err(_) => assert_eq!(left.state, state::FREE, "the loser's slot is free"),
            }
        }
    });
}

#[test]
fn one_id_created_on_two_hosts_at_once_is_confirmed_on_one() {
    cross_host_create(Knobs::default());
}

#[test]
#[should_panic(expected = "across hosts")]
fn a_cross_host_create_without_writing_back_its_entry_fails() {
    cross_host_create(Knobs {
        skip_write_back: Some(1),
        ..Knobs::default()
    });
}

#[test]
#[should_panic(expected = "across hosts")]
fn a_cross_host_create_without_evicting_the_other_shard_fails() {
    cross_host_create(Knobs {
        skip_evict: Some(0),
        ..Knobs::default()
    });
}

/// The reaper's step 2 on a dead (lease-judged, so possibly only paused) creator's unsealed
/// object, racing that creator's resumed seal and a getter that flags itself as waiting: exactly
/// one of seal and abort wins, the loser is told (`AlreadySealed` / `Skipped`), and a waiter
/// whose flag landed is seen by the winner (who wakes it).
#[test]
fn a_reapers_abort_and_a_resumed_creators_seal_never_both_win() {
    loom::model(|| {
        let slots = table(4);
        let id = same_home_ids(1)[0];
        let ins = Directory::new(&slots).insert(&id, 1, |_| {}).unwrap();
        let (i, w) = (ins.index, ins.word);
        let s1 = slots.clone();
        let sealer = thread::spawn(move || seal_word(&s1[i], w, 1));
        let s2 = slots.clone();
        let waiter = thread::spawn(move || {
            // A waiting get's flag (`Client::get` on an unsealed object): only while unsealed.
            let mut cur = s2[i].load_word();
            while matches!(cur.state, state::PENDING | state::CREATING) && cur.gen == w.gen {
                let flagged = Word {
                    flags: cur.flags | flags::WAITERS,
                    ..cur
                };
                match s2[i].cas_word(cur, flagged) {
                    Ok(()) => return true,
                    Err(actual) => cur = actual,
                }
            }
            false
        });
        let reaped = abort_dead_owners_slot(&Directory::new(&slots), i, 1);
        let sealed = sealer.join().unwrap();
        let flagged = waiter.join().unwrap();
        let end = slots[i].load_word();
        let woken = match (sealed, reaped) {
            (Ok(replaced), DeadSlot::Skipped) => {
                assert_eq!(end.state, state::SEALED, "{end:?}");
                replaced.flags & flags::WAITERS != 0
            }
            (Err(SealRefused::AlreadySealed), DeadSlot::Aborting { live, deleting, .. }) => {
                assert_eq!(end, deleting);
                live.flags & flags::WAITERS != 0
            }
            other => panic!("seal and abort: {other:?}, slot {end:?}"),
        };
        assert!(
            !flagged || woken,
            "a waiter's flag landed and nobody wakes it"
        );
    });
}

/// A finisher paused inside `Store::finish_delete` (`finish_slot`) while a reaper that judged it
/// dead takes its `DELETING` slot over (`resume_owned_delete`), finishes it, and the slot and the
/// block are reused by a new object of the same id: the old block is freed at most once (leaked,
/// for the orphan collector, only if the finisher had unnamed it when it was taken over), the new
/// object's block is never freed by the paused finisher, and the slot still names it.
#[test]
fn a_taken_over_finisher_never_frees_twice_nor_the_next_objects_block() {
    const SIZE: u64 = 16384;
    loom::model(|| {
        let h = heap();
        let slots = table(4);
        let id = same_home_ids(1)[0];
        let old = allocator(&h).alloc(SIZE).unwrap().offset;
        let ins = Directory::new(&slots)
            .insert(&id, 1, |s| {
                s.data_size.store(SIZE, Ordering::Relaxed);
                s.data_offset.store(old, Ordering::Relaxed);
            })
            .unwrap();
        let i = ins.index;
        let sealed = seal_word(&slots[i], ins.word, 1).unwrap();
        let sealed = Word {
            state: state::SEALED,
            flags: sealed.flags & !flags::WAITERS,
            ..sealed
        };
        let deleting = begin_delete(&HW, &slots[i], sealed, 1, || 0).expect("unreferenced");
        let frees = Arc::new(AtomicU64::new(0));
        let free = |h: Arc<Heap>, frees: Arc<AtomicU64>| {
            move |offset: u64, size: Option<u64>| {
                frees.fetch_add(1, Ordering::SeqCst);
                allocator(&h).free(offset, size.unwrap()).is_ok()
            }
        };
        let (s1, f1) = (slots.clone(), free(h.clone(), frees.clone()));
        let finisher = thread::spawn(move || finish_slot(&Directory::new(&s1), i, deleting, f1));
        // The reaper: take the slot over, finish it, and reuse the slot (same id) and the heap.
        let reaped = match resume_owned_delete(&HW, &slots[i], 1, 9, |_| 0) {
            Some((_, Resumed::Finish(taken))) => Some(finish_slot(
                &Directory::new(&slots),
                i,
                taken,
                free(h.clone(), frees.clone()),
            )),
            None => None,
            Some((_, other)) => panic!("an unreferenced delete kept: {other:?}"),
        };
        let new = allocator(&h).alloc(SIZE).unwrap().offset;
        let reinserted = Directory::new(&slots).insert(&id, 2, |s| {
            s.data_size.store(SIZE, Ordering::Relaxed);
            s.data_offset.store(new, Ordering::Relaxed);
        });
        let finished = finisher.join().unwrap();
        let reins = reinserted.expect("the old object is gone, so its id is free");
        // Every free that ran succeeded (no double free), and the old block was freed at most once.
        for r in [&finished, reaped.as_ref().unwrap_or(&Finished::TakenOver)] {
            if let Finished::Freed(Some(ok)) = r {
                assert!(
                    ok,
                    "a free of a block not allocated: {finished:?} / {reaped:?}"
                );
            }
        }
        let freed = frees.load(Ordering::SeqCst);
        assert!(freed <= 1, "the old block freed {freed} times");
        // Leaked only by a finisher taken over while it held the offset unnamed (before its last
        // check, or transiently between its CAS and its give-back).
        assert!(
            freed == 1 || finished == Finished::TakenOver,
            "the old block leaked: {finished:?} / {reaped:?}"
        );
        // The new object's slot still names its block, and that block is still allocated.
        let s = &slots[reins.index];
        assert_eq!(s.data_offset.load(Ordering::SeqCst), new);
        allocator(&h)
            .free(new, SIZE)
            .expect("the new object's block was freed under it");
        assert_eq!(allocator(&h).used_bytes(), (1 - freed) * SIZE);
    });
}

/// The payload size of the create models.
const CREATE_SIZE: u64 = 16384;

/// A creator's world in the create models: a heap with one block allocated (the creator's
/// allocation, made before the race), a 4-slot directory, the creator's entry (`VICTIM`) and
/// table, and a count of the block's frees.
struct CreateFixture {
    h: Arc<Heap>,
    slots: Arc<Vec<Slot>>,
    entry: Arc<ClientEntry>,
    refs: Arc<Vec<AtomicU64>>,
    id: ObjectId,
    block: u64,
    frees: Arc<AtomicU64>,
}

impl CreateFixture {
    fn new() -> CreateFixture {
        let h = heap();
        let block = allocator(&h).alloc(CREATE_SIZE).unwrap().offset;
        let entry = Arc::new(ClientEntry::new_free());
        entry.word.store(VICTIM.pack(), Ordering::Relaxed);
        CreateFixture {
            h,
            slots: table(4),
            entry,
            refs: Arc::new((0..16).map(|_| AtomicU64::new(0)).collect()),
            id: same_home_ids(1)[0],
            block,
            frees: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A free of the block: counted, and refused (a panic) if it is not allocated.
    fn free(&self) -> impl Fn(u64, u64) + Send + 'static {
        let (h, frees, block) = (self.h.clone(), self.frees.clone(), self.block);
        move |offset, size| {
            assert_eq!(offset, block);
            frees.fetch_add(1, Ordering::SeqCst);
            allocator(&h)
                .free(offset, size)
                .expect("the block freed twice");
        }
    }

    /// The creator on its own thread: `publish_allocation` of the block (`Client::create`);
    /// `during_insert` runs inside the insert (in its `init`).
    fn spawn_creator(
        &self,
        during_insert: impl Fn(&ClientEntry) + Send + 'static,
    ) -> thread::JoinHandle<Result<Inserted, Unpublished>> {
        let (slots, entry, refs, free) = (
            self.slots.clone(),
            self.entry.clone(),
            self.refs.clone(),
            self.free(),
        );
        let (id, block) = (self.id, self.block);
        thread::spawn(move || {
            let reg = Registered::new(&entry, VICTIM.pack(), RefTable::new(&refs));
            publish_allocation(
                &reg,
                &Directory::new(&slots),
                &id,
                0,
                (block, CREATE_SIZE),
                || {},
                |s| {
                    s.data_size.store(CREATE_SIZE, Ordering::Relaxed);
                    s.data_offset.store(block, Ordering::Relaxed);
                    during_insert(&entry);
                },
                free,
                |_| {},
            )
        })
    }

    fn freed(&self) -> u64 {
        self.frees.load(Ordering::SeqCst)
    }
}

/// The reaper's steps 2, 3 and 5 (the dead client's slots, its intent, the deletes it had
/// started: `reap_steps_2_3_5` — `DeadEntry::fence`, `take_intent`, `abort_dead_owners_slot`
/// over the directory, `finish_slot`, the free of an intent no slot covered,
/// `resume_owned_delete`) against a creator judged dead by lease but only paused, anywhere in
/// its create (`publish_allocation`: record the intent, insert, clear it; the allocation made
/// before). The block is freed at most once; afterwards no slot names it (a creator that finds
/// itself fenced withdraws its slot); it is left unfreed (for the orphan collector) only if the
/// creator was fenced; and a create that succeeded was aborted by the reaper.
///
/// It found a double free: the reaper read the slot's payload offset before its fresh read of the
/// word, so a slot first seen `RESERVED`, then written and committed, was aborted with offset 0,
/// which did not match the intent, and the block was freed through the slot and as the intent.
/// Seeded bugs it catches: no withdraw of a slot committed by a fenced creator, and either
/// SeqCst fence of the insert/scan pair (`clear_intent`, `take_intent`) removed (a slot of the
/// reaped client is left naming the block).
#[test]
fn a_creator_reaped_mid_create_never_leaves_a_slot_naming_a_freed_block() {
    loom::model(|| {
        let f = CreateFixture::new();
        let creator = f.spawn_creator(|_| {});
        // The reaper (it died inside an operation, so the whole directory is scanned).
        reap_steps_2_3_5(&f.entry, VICTIM, &f.slots, 0, &f.free());
        let created = creator.join().unwrap();
        let freed = f.freed();
        assert!(
            Directory::new(&f.slots).lookup(&f.id).is_none(),
            "a slot of the reaped creator is left ({created:?}, block freed {freed}x)"
        );
        assert!(
            freed == 1 || created == Err(Unpublished::Fenced),
            "the block leaked though the create was not fenced: {created:?}"
        );
        assert_eq!(allocator(&f.h).used_bytes(), (1 - freed) * CREATE_SIZE);
    });
}

/// The reaper's steps 2, 3 and 5 in `Store::reap_client`'s order, for the dead client `owner`
/// fenced from `judged`: take the intent, abort or release its slots, resume the deletes it had
/// started, free the intent unless a slot covered it. `free` frees a block.
fn reap_steps_2_3_5(
    entry: &ClientEntry,
    judged: EntryWord,
    slots: &[Slot],
    owner: u16,
    free: &dyn Fn(u64, u64),
) {
    let dead = DeadEntry::fence(entry, judged).expect("judged from its word");
    let (intent_offset, intent_size) = match dead.take_intent() {
        TakenIntent::Allocated { offset, size } => (offset, size),
        _ => (0, 0),
    };
    let dir = Directory::new(slots);
    let mut covered = false;
    let mut started = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        if slot.load_word().owner != owner {
            continue;
        }
        match abort_dead_owners_slot(&dir, i, owner) {
            DeadSlot::Started { data_offset } => {
                covered |= data_offset == intent_offset;
                started.push(i);
            }
            DeadSlot::Aborting {
                deleting,
                data_offset,
                ..
            } => {
                covered |= data_offset == intent_offset;
                finish_slot(&dir, i, deleting, |o, s| free(o, s.unwrap().max(1)));
            }
            DeadSlot::Skipped | DeadSlot::Released => {}
        }
    }
    if !covered && intent_size > 0 {
        free(intent_offset, intent_size);
    }
    for i in started {
        if let Some((_, Resumed::Finish(t))) = resume_owned_delete(&HW, &slots[i], owner, 9, |_| 0)
        {
            finish_slot(&dir, i, t, |o, s| free(o, s.unwrap().max(1)));
        }
    }
}

/// A creator quarantined inside its insert (staged in its `init`: after its check before the
/// insert) withdraws its slot while a maintainer's orphan pass runs (it finishes `DELETING`
/// slots of owners not `ACTIVE`); after the grace the creator is reaped (steps 2, 3, 5). The
/// block is freed exactly once and the id is free. It caught a double free (second review of
/// these commits, H1): the withdraw went through a `DELETING` word, which the orphan pass took
/// for an abort and finished with its payload, and the reap then freed the intent as well. Now
/// the withdraw is one CAS to FREE.
#[test]
fn a_withdrawn_slot_is_never_finished_with_its_payload() {
    let quarantined = EntryWord {
        status: status::QUARANTINED,
        ..VICTIM
    };
    loom::model(move || {
        let f = CreateFixture::new();
        // The maintainer's quarantine lands inside the insert.
        let creator = f.spawn_creator(move |e| e.word.store(quarantined.pack(), Ordering::SeqCst));
        // One orphan pass: `finish_orphaned_deletes_pass` on DELETING slots of owner 0 (not
        // ACTIVE), on its own thread, started once the creator is inside its insert.
        let (slots, entry, free) = (f.slots.clone(), f.entry.clone(), f.free());
        let pass = thread::spawn(move || {
            while entry.word.load(Ordering::SeqCst) != quarantined.pack() {
                thread::yield_now();
            }
            let dir = Directory::new(&slots);
            for (i, slot) in slots.iter().enumerate() {
                let w = slot.load_word();
                if w.state == state::DELETING && w.owner == 0 {
                    if let Some((_, Resumed::Finish(t))) =
                        resume_owned_delete(&HW, slot, 0, 9, |_| 0)
                    {
                        finish_slot(&dir, i, t, |o, s| free(o, s.unwrap().max(1)));
                    }
                }
            }
        });
        pass.join().unwrap();
        assert_eq!(creator.join().unwrap(), Err(Unpublished::Fenced));
        // After the grace: the reap.
        reap_steps_2_3_5(&f.entry, quarantined, &f.slots, 0, &f.free());
        assert_eq!(f.freed(), 1, "the block was not freed once");
        assert!(Directory::new(&f.slots).lookup(&f.id).is_none());
        assert_eq!(allocator(&f.h).used_bytes(), 0);
    });
}
