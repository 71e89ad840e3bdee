//! Model checks of the lock-free state machines with `loom`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p gismo-core --test loom`
//! (`tools/test.sh` does, in its own target directory).
#![cfg(loom)]

use gismo_core::store::allocator::{AllocHeads, Allocator, ChunkDesc};
use gismo_core::store::directory::{
    after_release, begin_delete, begin_evict, flags, resume_delete, state, Directory, InsertError,
    Resumed, Slot, Word,
};
use gismo_core::store::refs::RefTable;
use gismo_core::store::ObjectId;
use gismo_platform::sync::{fence, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

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

/// The get/delete Dekker pair: a getter that keeps its reference and a deleter that frees the
/// object never both succeed.
#[test]
fn get_and_delete_never_both_win() {
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

        let (s1, r1) = (slot.clone(), refs.clone());
        let getter = thread::spawn(move || {
            let t = RefTable::new(&r1);
            t.add(0, 1).unwrap();
            fence(Ordering::SeqCst);
            let w = s1.load_word();
            if w.state == state::SEALED && w.gen == 1 {
                true
            } else {
                t.remove(0, 1);
                false
            }
        });
        let (s2, r2) = (slot.clone(), refs.clone());
        let deleter = thread::spawn(move || {
            let deleting = Word {
                state: state::DELETING,
                ..sealed
            };
            if s2.cas_word(sealed, deleting).is_err() {
                return false;
            }
            fence(Ordering::SeqCst);
            if RefTable::new(&r2).count(0, 1) == 0 {
                true
            } else {
                s2.store_word(sealed);
                false
            }
        });
        let got = getter.join().unwrap();
        let deleted = deleter.join().unwrap();
        assert!(!(got && deleted), "a reader kept an object that was freed");
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
        let deleter = thread::spawn(move || begin_delete(&s1, sealed, 1, || count(&r1)).is_some());
        let (s2, r2) = (slot.clone(), refs.clone());
        let releaser = thread::spawn(move || {
            assert_eq!(RefTable::new(&r2).remove(0, 1), Some(0));
            after_release(&s2, 1, 2, || count(&r2)).is_some()
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

/// C1: a recoverer re-deciding a dead deleter's `DELETING` slot (`resume_delete`) racing the
/// holder's last release: the payload is never freed while the holder still holds its reference,
/// and it is freed exactly once. (Fails if `resume_delete` finishes a `DELETING | SEALED_ORIGIN`
/// slot without re-running the reference check.)
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
                resume_delete(&s1, dead, 9, || count(&r1)),
                Resumed::Finish(_)
            ) {
                f1.fetch_add(1, Ordering::SeqCst);
            }
        });
        let (s2, r2, f2) = (slot.clone(), refs.clone(), freed.clone());
        let holder = thread::spawn(move || {
            // Still holding its reference: nobody may have freed the payload.
            assert_eq!(f2.load(Ordering::SeqCst), 0, "freed while still held");
            assert_eq!(RefTable::new(&r2).remove(0, 1), Some(0));
            if after_release(&s2, 1, 2, || count(&r2)).is_some() {
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
        let evicter = thread::spawn(move || begin_evict(&s1, sealed, 1, || count(&r1)).is_some());
        let (s2, r2) = (slot.clone(), refs.clone());
        let client = thread::spawn(move || {
            // A get (reference, then the Dekker fence and a look at the word), a delete of what
            // it sees, then the same client's last release.
            RefTable::new(&r2).add(0, 1).unwrap();
            fence(Ordering::SeqCst);
            let _ = s2.load_word();
            let w = s2.load_word();
            let d = present(w) && begin_delete(&s2, w, 2, || count(&r2)).is_some();
            assert_eq!(RefTable::new(&r2).remove(0, 1), Some(0));
            let r = after_release(&s2, 1, 2, || count(&r2)).is_some();
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
    /// The page bitmap's summary (one *used* and one *full* word).
    summary: Vec<AtomicU64>,
    chunks: Vec<ChunkDesc>,
    heads: AllocHeads,
    heap_pages: u64,
}

fn heap() -> Arc<Heap> {
    // Two chunks of 64 KiB.
    let heap_pages: u64 = 32;
    Arc::new(Heap {
        pages: (0..heap_pages.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect(),
        summary: (0..2).map(|_| AtomicU64::new(0)).collect(),
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
