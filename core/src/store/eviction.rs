//! The eviction policy: which objects to evict to free a number of bytes, and how many bytes to
//! free when — the one rule set every caller uses (the watermark evictor of [`Maintainer`], and
//! the create that evicts and retries, [`Client::create_evicting`]).
//!
//! As in Ray's plasma store (`eviction_policy.cc`), eviction is split from the object lifecycle:
//! [`EvictionPolicy`] only *chooses* (an ordering and a stopping rule); the store then evicts each
//! chosen object with the same lock-free state machine as a delete (`begin_evict` in
//! `directory.rs`), which is what guarantees that a referenced object is never evicted.
//!
//! # The rules
//!
//! 1. **Candidates** are sealed objects with a readable size. Unsealed objects (`CREATING`,
//!    `PENDING`), objects being deleted, and slots whose size is corrupt (left for fsck: freeing a
//!    block of unknown size could free someone else's) are never candidates.
//! 2. **Order**: least recently used first (the slot's `last_access_ms`, bumped by every `get`),
//!    ties broken by slot index so the order is deterministic.
//! 3. **Never a referenced object**: a candidate that any live client references (a `get` not yet
//!    released, an unsealed creation, a pin) is skipped, not counted, and left exactly as it was —
//!    eviction never marks an object delete-pending.
//! 4. **Stop** as soon as the objects evicted so far free at least the bytes asked for, counted
//!    in heap capacity ([`capacity_for`](crate::store::allocator::capacity_for) of each object's
//!    size), or when the candidates run out.
//! 5. **How much, under pressure** ([`EvictionPolicy::excess`]): when heap use is above the high
//!    watermark (a fraction of the heap), free enough to come down to the low watermark. A high
//!    watermark of 1 turns this off (the default of the GISMO runner: Plasma evicts only while
//!    serving a create).
//! 6. **How much, for a create** ([`EvictionPolicy::for_create`]): a create that finds the store
//!    full frees at least its own size and at least a fifth of the heap (Plasma's rule), then
//!    retries; at most [`CREATE_EVICTIONS`] evictions, and one last try after an eviction that
//!    freed nothing (a concurrent delete may have made room). A create that still fails for want
//!    of space is counted ([`Store::note_create_full`]), so that runners ask the raylet to spill.
//!
//! [`Maintainer`]: crate::store::maintenance::Maintainer

use crate::store::allocator::capacity_for;
use crate::store::client::{Client, CreateInfo, Located};
use crate::store::directory::{begin_evict, state, Word};
use crate::store::error::{Result, StoreError};
use crate::store::handle::Store;
use crate::store::object_id::ObjectId;
use crate::sync::Ordering;

/// How many times a create evicts before it gives up (rule 6).
pub const CREATE_EVICTIONS: u32 = 3;

/// The share of the heap a create that found the store full frees at least: `heap / 5` (rule 6).
pub const CREATE_EVICT_DIVISOR: u64 = 5;

/// A sealed object eviction may consider (rule 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its directory slot.
    pub index: usize,
    /// When it was last created or read (ms; only the order matters).
    pub last_access_ms: u64,
    /// The heap bytes evicting it frees.
    pub bytes: u64,
}

/// The watermarks of background eviction (rule 5); victim choice (rules 1–4) and the create rule
/// (rule 6) are the same for every policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvictionPolicy {
    high_watermark: f64,
    low_watermark: f64,
}

impl Default for EvictionPolicy {
    /// Evicts only for creates (high watermark 1, low 0.9).
    fn default() -> Self {
        EvictionPolicy {
            high_watermark: 1.0,
            low_watermark: 0.9,
        }
    }
}

impl EvictionPolicy {
    /// Evicts down to `low` (a fraction of the heap) whenever use passes `high`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] unless `0 <= low <= high <= 1`.
    pub fn with_watermarks(high: f64, low: f64) -> Result<EvictionPolicy> {
        if !(0.0..=1.0).contains(&high) || !(0.0..=high).contains(&low) {
            return Err(StoreError::Invalid(format!(
                "eviction watermarks must satisfy 0 <= low <= high <= 1 (got low {low}, high {high})"
            )));
        }
        Ok(EvictionPolicy {
            high_watermark: high,
            low_watermark: low,
        })
    }

    pub fn high_watermark(&self) -> f64 {
        self.high_watermark
    }

    pub fn low_watermark(&self) -> f64 {
        self.low_watermark
    }

    /// Bytes to free so that `used` comes down to `low * heap`, when `used` is above
    /// `high * heap` (rule 5); `None` while it is not (or the high watermark is 1).
    pub fn excess(&self, used: u64, heap: u64) -> Option<u64> {
        if self.high_watermark >= 1.0 {
            return None;
        }
        let high_bytes = (heap as f64 * self.high_watermark) as u64;
        let low_bytes = (heap as f64 * self.low_watermark) as u64;
        (used > high_bytes).then(|| used - low_bytes)
    }

    /// Bytes a create of `requested` bytes that found a heap of `heap` bytes full evicts before
    /// it retries (rule 6).
    pub fn for_create(requested: u64, heap: u64) -> u64 {
        requested.max(heap / CREATE_EVICT_DIVISOR)
    }

    /// Puts `candidates` in eviction order (rule 2).
    pub fn order<T>(candidates: &mut [(Candidate, T)]) {
        candidates.sort_unstable_by_key(|(c, _)| (c.last_access_ms, c.index));
    }

    /// Evicts from `candidates` in eviction order until at least `bytes` were freed (rules 2–4):
    /// `evict` is asked for each candidate in turn (with what the caller attached to it) and
    /// returns whether it evicted it (false: the object is referenced, or changed meanwhile).
    /// Returns the bytes freed.
    ///
    /// # Errors
    /// The first error of `evict` (nothing more is evicted).
    pub fn evict_lru<T>(
        mut candidates: Vec<(Candidate, T)>,
        bytes: u64,
        mut evict: impl FnMut(&Candidate, &T) -> Result<bool>,
    ) -> Result<u64> {
        Self::order(&mut candidates);
        let mut freed = 0u64;
        for (c, t) in &candidates {
            if freed >= bytes {
                break;
            }
            if evict(c, t)? {
                freed = freed.saturating_add(c.bytes);
            }
        }
        Ok(freed)
    }
}

impl Store {
    /// Evicts sealed, unreferenced objects as [`EvictionPolicy`] orders them until at least
    /// `bytes` of heap were freed (or nothing evictable is left). Returns the bytes freed.
    /// Frees heap memory, so it runs only inside the evicter's operation guard (`Client::evict`):
    /// the orphan collector must see the frees as in flight.
    pub(crate) fn evict(&self, bytes: u64, evicter: u16) -> Result<u64> {
        let dir = self.directory();
        let candidates: Vec<(Candidate, Word)> = dir
            .slots()
            .iter()
            .enumerate()
            .filter_map(|(index, s)| {
                let w = s.load_word();
                if w.state != state::SEALED {
                    return None;
                }
                // A corrupt size is left for fsck: evicting would free a block of unknown size.
                let size = s.payload_len()?;
                let c = Candidate {
                    index,
                    last_access_ms: s.last_access_ms.load(Ordering::Relaxed),
                    bytes: capacity_for(size.max(1)),
                };
                Some((c, w))
            })
            .collect();
        EvictionPolicy::evict_lru(candidates, bytes, |c, &w| {
            let slot = dir.slot(c.index);
            // `begin_evict` CASes from exactly the word of the scan: an object deleted, recreated
            // or being deleted since is not evicted on a stale judgment; it checks references.
            let Some(deleting) = begin_evict(self.coherence(), slot, w, evicter, || {
                self.refcount(c.index, w.gen)
            }) else {
                return Ok(false);
            };
            crate::crash_point!("evict.decided");
            self.complete_delete(c.index, deleting)?;
            self.control()
                .objects_evicted
                .fetch_add(1, Ordering::Relaxed);
            self.control()
                .objects_deleted
                .fetch_sub(1, Ordering::Relaxed);
            Ok(true)
        })
    }
}

/// Whether a create may evict to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    /// Ray's `CreateAndSpillIfNeeded`: evict and retry when the store is full (rule 6).
    EvictIfFull,
    /// Ray's `TryCreateImmediately`: never evict.
    Immediate,
}

impl Client {
    /// [`Client::create_raw`] that, in [`CreateMode::EvictIfFull`], evicts and retries when the
    /// store is full (rule 6 of [`eviction`](self)). A create that still fails for want of space
    /// is counted with [`Store::note_create_full`] (runners then call the raylet's full and spill
    /// callbacks).
    ///
    /// # Errors
    /// As [`Client::create_raw`] (`StoreFull` when even eviction made no room), and as
    /// [`Client::evict`].
    pub fn create_evicting(
        &self,
        id: &ObjectId,
        data_size: u64,
        metadata: &[u8],
        info: &CreateInfo,
        mode: CreateMode,
    ) -> Result<Located> {
        let mut evictions = 0;
        loop {
            match self.create_raw(id, data_size, metadata, info) {
                Err(StoreError::StoreFull { requested, .. })
                    if mode == CreateMode::EvictIfFull && evictions < CREATE_EVICTIONS =>
                {
                    evictions += 1;
                    let want = EvictionPolicy::for_create(requested, self.store().heap_bytes());
                    if self.evict(want)? == 0 {
                        // Nothing evictable: one last try (a concurrent delete may have made room).
                        evictions = CREATE_EVICTIONS;
                    }
                }
                Err(e @ StoreError::StoreFull { .. }) => {
                    self.store().note_create_full();
                    return Err(e);
                }
                r => return r,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(high: f64, low: f64) -> EvictionPolicy {
        EvictionPolicy::with_watermarks(high, low).unwrap()
    }

    #[test]
    fn evicts_down_to_the_low_watermark_only_above_the_high_one() {
        let p = policy(0.9, 0.8);
        assert_eq!(p.excess(89, 100), None);
        assert_eq!(p.excess(90, 100), None);
        assert_eq!(p.excess(95, 100), Some(15));
        assert_eq!(p.excess(0, 0), None);
    }

    #[test]
    fn a_high_watermark_of_one_never_evicts_in_the_background() {
        let p = EvictionPolicy::default();
        assert_eq!(p.excess(100, 100), None);
        assert_eq!(p.excess(u64::MAX, 100), None);
        assert_eq!(policy(1.0, 0.5).excess(100, 100), None);
    }

    #[test]
    fn bad_watermarks_are_refused() {
        for (high, low) in [(0.8, 0.9), (1.5, 0.5), (0.5, -0.1), (f64::NAN, 0.1)] {
            assert!(
                matches!(
                    EvictionPolicy::with_watermarks(high, low),
                    Err(StoreError::Invalid(_))
                ),
                "high {high} low {low}"
            );
        }
        assert!(EvictionPolicy::with_watermarks(0.5, 0.5).is_ok());
    }

    #[test]
    fn a_create_frees_its_size_and_at_least_a_fifth_of_the_heap() {
        assert_eq!(EvictionPolicy::for_create(10, 1000), 200);
        assert_eq!(EvictionPolicy::for_create(500, 1000), 500);
        assert_eq!(EvictionPolicy::for_create(0, 0), 0);
    }

    fn c(index: usize, last_access_ms: u64, bytes: u64) -> Candidate {
        Candidate {
            index,
            last_access_ms,
            bytes,
        }
    }

    /// Runs the policy over `candidates` where `referenced` cannot be evicted; returns the
    /// indices asked about, those evicted, and the bytes freed.
    fn run(
        candidates: Vec<Candidate>,
        bytes: u64,
        referenced: &[usize],
    ) -> (Vec<usize>, Vec<usize>, u64) {
        let (mut asked, mut evicted) = (Vec::new(), Vec::new());
        let candidates = candidates.into_iter().map(|c| (c, ())).collect();
        let freed = EvictionPolicy::evict_lru(candidates, bytes, |c, _| {
            asked.push(c.index);
            let ok = !referenced.contains(&c.index);
            if ok {
                evicted.push(c.index);
            }
            Ok(ok)
        })
        .unwrap();
        (asked, evicted, freed)
    }

    #[test]
    fn least_recently_used_first_until_enough_is_freed() {
        let cands = vec![c(0, 30, 100), c(1, 10, 100), c(2, 20, 100), c(3, 40, 100)];
        let (asked, evicted, freed) = run(cands, 150, &[]);
        assert_eq!(asked, vec![1, 2]);
        assert_eq!(evicted, vec![1, 2]);
        assert_eq!(freed, 200);
    }

    #[test]
    fn a_referenced_object_is_skipped_and_not_counted() {
        let cands = vec![c(0, 30, 100), c(1, 10, 100), c(2, 20, 100), c(3, 40, 100)];
        let (asked, evicted, freed) = run(cands, 150, &[1]);
        assert_eq!(asked, vec![1, 2, 0]);
        assert_eq!(evicted, vec![2, 0]);
        assert_eq!(freed, 200);
    }

    #[test]
    fn when_everything_is_referenced_nothing_is_freed() {
        let cands = vec![c(0, 1, 100), c(1, 2, 100)];
        let (asked, evicted, freed) = run(cands, 1000, &[0, 1]);
        assert_eq!(asked, vec![0, 1]);
        assert!(evicted.is_empty());
        assert_eq!(freed, 0);
    }

    #[test]
    fn ties_are_broken_by_slot_index_and_zero_bytes_evicts_nothing() {
        let cands = vec![c(5, 7, 10), c(2, 7, 10), c(9, 7, 10)];
        let (asked, _, _) = run(cands.clone(), 15, &[]);
        assert_eq!(asked, vec![2, 5]);
        let (asked, _, freed) = run(cands, 0, &[]);
        assert!(asked.is_empty());
        assert_eq!(freed, 0);
    }

    #[test]
    fn an_error_stops_eviction() {
        let cands = vec![(c(0, 1, 100), ()), (c(1, 2, 100), ())];
        let mut asked = 0;
        let r = EvictionPolicy::evict_lru(cands, 1000, |_, _| {
            asked += 1;
            Err(StoreError::Invalid("boom".into()))
        });
        assert!(matches!(r, Err(StoreError::Invalid(_))));
        assert_eq!(asked, 1);
    }

    fn small_store(dir: &tempfile::TempDir) -> std::sync::Arc<Store> {
        use crate::region::{Region, RegionOptions, RegionSpec};
        let spec = RegionSpec::File(dir.path().join("region"));
        let region = Region::create(&spec, 16 << 20, &RegionOptions::default()).unwrap();
        Store::format(region, &Default::default()).unwrap()
    }

    /// Fills the heap with sealed 1 MiB objects 1, 2, ... until one no longer fits; returns how
    /// many were created.
    fn fill(c: &Client) -> u64 {
        let mut n = 0;
        loop {
            let id = ObjectId::from_u64(n + 1);
            match c.create(&id, 1 << 20, b"", &CreateInfo::default()) {
                Ok(b) => b.seal().unwrap(),
                Err(StoreError::StoreFull { .. }) => return n,
                Err(e) => panic!("{e}"),
            }
            n += 1;
        }
    }

    #[test]
    fn a_full_store_evicts_for_a_create_but_never_a_referenced_object() {
        let dir = tempfile::tempdir().unwrap();
        let s = small_store(&dir);
        let c = s.connect("c").unwrap();
        let n = fill(&c);
        assert!(n >= 3, "{n} objects");
        let pinned = c
            .get(&ObjectId::from_u64(1), Some(std::time::Duration::ZERO))
            .unwrap()
            .unwrap();
        let big = ObjectId::from_u64(1000);
        let full_before = s.create_full_events();
        // Immediate never evicts; its failure is counted.
        assert!(matches!(
            c.create_evicting(
                &big,
                1 << 20,
                b"",
                &CreateInfo::default(),
                CreateMode::Immediate
            ),
            Err(StoreError::StoreFull { .. })
        ));
        assert_eq!(s.create_full_events(), full_before + 1);
        assert_eq!(s.stats().objects_evicted, 0);
        // EvictIfFull makes room from unreferenced objects only.
        let loc = c
            .create_evicting(
                &big,
                1 << 20,
                b"",
                &CreateInfo::default(),
                CreateMode::EvictIfFull,
            )
            .unwrap();
        assert!(loc.data_size == 1 << 20);
        c.seal(&big).unwrap();
        assert!(s.stats().objects_evicted >= 1);
        assert!(
            c.contains(&ObjectId::from_u64(1)).unwrap(),
            "pinned evicted"
        );
        assert_eq!(
            s.create_full_events(),
            full_before + 1,
            "served: not counted"
        );
        // Nothing left to evict but the pinned object (and the new one, pinned by its creation
        // reference until released): a create larger than the heap fails and is counted.
        let huge = s.heap_bytes() + 1;
        assert!(matches!(
            c.create_evicting(
                &ObjectId::from_u64(2000),
                huge,
                b"",
                &CreateInfo::default(),
                CreateMode::EvictIfFull
            ),
            Err(StoreError::StoreFull { .. })
        ));
        assert_eq!(s.create_full_events(), full_before + 2);
        assert!(
            c.contains(&ObjectId::from_u64(1)).unwrap(),
            "pinned evicted"
        );
        drop(pinned);
    }
}
