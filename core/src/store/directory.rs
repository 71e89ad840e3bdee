//! The object directory: a lock-free open-addressing hash table of [`Slot`]s in the region, keyed
//! by `ObjectID`, with no tombstones.
//!
//! # The protocol
//!
//! Every slot has a **state word** (`gen:32 | state:8 | flags:8 | owner:16`). A slot goes
//! `FREE → RESERVED → PENDING → CREATING → SEALED → DELETING → FREE`; claiming a free slot bumps
//! its generation, so a `(index, generation)` handle never names a slot that was reused under it.
//! `owner` is the client table index of the creator: the claim itself records who owns the slot,
//! so a client killed right after its claim is still found by the reaper.
//!
//! Every slot index `h` also carries a **home word** (`ver:32 | maxd:16 | commit_d:16`) for the
//! keys whose hash lands on `h`. All inserts of keys with home `h` commit by a compare-and-swap of
//! that word from the version they scanned under to the next one; this is what makes IDs unique:
//!
//! 1. read the home word (`Acquire`), scan distances `0..=maxd` for the key among *committed*
//!    entries (`CREATING`, `SEALED`, `DELETING`, or the `PENDING` slot named by `(ver, commit_d)`);
//! 2. claim the first `FREE` slot at or after `h` (CAS `FREE → RESERVED`, generation + 1) and
//!    write the key and the object's fields while nobody else may look at them;
//! 3. record the target version in the slot and publish it as `PENDING` (`Release`);
//! 4. CAS the home word to `(ver + 1, maxd', d)`. Success commits the insert; failure means some
//!    other insert of the same home committed meanwhile, so go back to 1 (keeping the slot).
//!
//! Two inserts of one key both need the same home word to move from the version they scanned
//! under, so at most one of them commits per version, and the next one's scan sees the winner.
//! The winner flips its slot `PENDING → CREATING` after committing; whoever commits the next
//! version first *helps* by doing that flip, so every committed slot older than the current
//! version is visible as `CREATING` or later. Losers' `PENDING` slots carry a stale target version
//! and are ignored by everyone.
//!
//! Deleting a slot makes it `FREE` directly: lookups do not stop at free slots; they scan exactly
//! the `maxd + 1` slots that can hold a key of this home. Each insert recomputes `maxd` from the
//! committed entries it saw, so the scan range shrinks again after deletions: a long-running store
//! does not degrade (see the churn test and the `lookup_after_churn` benchmark).
//!
//! Readers validate every key they compare seqlock-style: load the state word (`Acquire`), load
//! the key words, `fence(Acquire)`, reload the state word; a changed word means the slot was
//! reused and the comparison is discarded. Writers fence (`Release`) after claiming and before
//! writing the key, which pairs with that reader fence.

use crate::coherence::Coherence;
use crate::store::object_id::ObjectId;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::xhost::lines::{evict, write_back};

/// Slot states (the `state` byte of the state word).
pub mod state {
    pub const FREE: u8 = 0;
    /// Claimed by `owner`; fields being written; invisible to everyone else.
    pub const RESERVED: u8 = 1;
    /// Fields written; waiting for the home-word commit (step 4).
    pub const PENDING: u8 = 2;
    /// Committed; the creator is writing the payload.
    pub const CREATING: u8 = 3;
    /// Sealed: immutable and readable by everyone.
    pub const SEALED: u8 = 4;
    /// Being deleted (or aborted, or evicted) by one party, which will make it `FREE`.
    pub const DELETING: u8 = 5;

    pub fn name(s: u8) -> &'static str {
        match s {
            FREE => "free",
            RESERVED => "reserved",
            PENDING => "pending",
            CREATING => "creating",
            SEALED => "sealed",
            DELETING => "deleting",
            _ => "invalid",
        }
    }
}

/// Flag bits of the state word.
pub mod flags {
    /// A delete was asked for while the object was in use; the last release deletes it.
    pub const DELETE_PENDING: u8 = 1;
    /// Someone on this host sleeps on the word (futex); whoever changes the state wakes them.
    pub const WAITERS: u8 = 2;
    /// On a `DELETING` word: it came from `SEALED` (a delete or an eviction), not from an abort.
    /// Until the deleter's reference check has passed ([`FINISHING`]), the object may still be
    /// referenced, so whoever recovers the slot from a dead deleter re-runs the check
    /// ([`resume_delete`](super::resume_delete)) instead of freeing it.
    pub const SEALED_ORIGIN: u8 = 4;
    /// On a `DELETING` word: an eviction probe. A delete arriving meanwhile adds
    /// [`DELETE_PENDING`], which the evicter honours when it restores the object.
    pub const EVICTING: u8 = 8;
    /// On a `DELETING` word: its owner passed the point of no return (no references) and frees
    /// the payload; set by the compare-and-swap that claims the finish, so two finishers never
    /// both free.
    pub const FINISHING: u8 = 16;
    /// Protocol v2: committed in this host's directory shard, not yet confirmed unique across
    /// hosts ([`confirm_across_hosts`](super::confirm_across_hosts)). Set from the claim on, so
    /// no other host ever reads the entry as confirmed before it is.
    pub const UNCONFIRMED: u8 = 32;
}

/// Bits of the low byte of a slot's `created` word (set at create, immutable after).
pub mod object_flags {
    /// Ray's experimental mutable object (a channel).
    pub const MUTABLE: u64 = 1;
    /// Deleted when its creator is reaped (it died): Ray's lifetime for an object its creator
    /// owns (`CreateInfo::dies_with_creator`). Readers holding it keep it until they release.
    pub const DIES_WITH_CREATOR: u64 = 2;
}

/// Owner value meaning "no client".
pub const NO_OWNER: u16 = u16::MAX;

/// Commit record of a slot being freed: its home (`u32::MAX`) matches no home index, because
/// capacities are at most 2^31.
const FREEING: u64 = u64::MAX;

/// The most slots an insert probes from its home before reporting the directory full.
pub const MAX_PROBE: usize = 1024;

/// A decoded state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word {
    pub gen: u32,
    pub state: u8,
    pub flags: u8,
    pub owner: u16,
}

impl Word {
    pub const fn pack(self) -> u64 {
        (self.gen as u64) << 32
            | (self.state as u64) << 24
            | (self.flags as u64) << 16
            | self.owner as u64
    }

    pub const fn unpack(w: u64) -> Word {
        Word {
            gen: (w >> 32) as u32,
            state: (w >> 24) as u8,
            flags: (w >> 16) as u8,
            owner: w as u16,
        }
    }

    pub fn with_state(self, state: u8) -> Word {
        Word { state, ..self }
    }

    pub fn is_committed_state(self) -> bool {
        matches!(
            self.state,
            state::CREATING | state::SEALED | state::DELETING
        )
    }
}

/// A decoded home word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Home {
    ver: u32,
    maxd: u16,
    commit_d: u16,
}

impl Home {
    fn pack(self) -> u64 {
        (self.ver as u64) << 32 | (self.maxd as u64) << 16 | self.commit_d as u64
    }
    fn unpack(w: u64) -> Home {
        Home {
            ver: (w >> 32) as u32,
            maxd: (w >> 16) as u16,
            commit_d: w as u16,
        }
    }
}

/// One directory slot: 128 bytes, two cache lines. Every field is an atomic so that concurrent
/// access from other processes is never a data race; fields other than the two words are written
/// only by the slot's owner while it is `RESERVED` (or `CREATING`, for `data_size` bookkeeping)
/// and published by the `Release` store of the state word.
#[repr(C)]
pub struct Slot {
    /// `gen:32 | state:8 | flags:8 | owner:16`.
    pub word: AtomicU64,
    /// `commit_ver:32 | home:32`: the home-word version this slot's insert is trying to commit,
    /// and the home index of its key.
    pub commit: AtomicU64,
    pub id: [AtomicU32; 7],
    pub metadata_size: AtomicU32,
    /// Offset of the payload from the start of the region (data, then metadata).
    pub data_offset: AtomicU64,
    pub data_size: AtomicU64,
    /// Last get, coarse wall-clock milliseconds (LRU eviction).
    pub last_access_ms: AtomicU64,
    /// `unix_ms:48 | source:8 | object flags:8`.
    pub created: AtomicU64,
    /// Index into the owner-node table (raylet id + IP of the owner), or `u32::MAX`.
    pub owner_node: AtomicU32,
    pub owner_port: AtomicU32,
    pub owner_worker: [AtomicU32; 7],
    /// Host table index of the creating host.
    pub creator_host: AtomicU32,
    /// The home word of keys whose home is this index.
    home: AtomicU64,
}

#[cfg(not(loom))]
static_assertions::const_assert_eq!(
    std::mem::size_of::<Slot>() as u64,
    crate::format::layout::DIR_SLOT_SIZE
);
#[cfg(not(loom))]
static_assertions::const_assert_eq!(std::mem::align_of::<Slot>(), 8);

// SAFETY: `Slot` is `repr(C)`, made only of integer atomics (every bit pattern valid), no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for Slot {}

impl Slot {
    /// A zeroed (FREE) slot, for process-local tables (tests, loom models).
    pub fn new_free() -> Slot {
        Slot {
            word: AtomicU64::new(0),
            commit: AtomicU64::new(0),
            id: std::array::from_fn(|_| AtomicU32::new(0)),
            metadata_size: AtomicU32::new(0),
            data_offset: AtomicU64::new(0),
            data_size: AtomicU64::new(0),
            last_access_ms: AtomicU64::new(0),
            created: AtomicU64::new(0),
            owner_node: AtomicU32::new(0),
            owner_port: AtomicU32::new(0),
            owner_worker: std::array::from_fn(|_| AtomicU32::new(0)),
            creator_host: AtomicU32::new(0),
            home: AtomicU64::new(0),
        }
    }

    /// The home word of the keys whose home is this slot (for models that move it between
    /// emulated hosts' views; the directory's own code reaches it directly).
    pub fn home_word(&self) -> &AtomicU64 {
        &self.home
    }

    pub fn load_word(&self) -> Word {
        // Acquire: pairs with the Release stores/CASes of the state word; makes the fields the
        // writer published before that store visible.
        Word::unpack(self.word.load(Ordering::Acquire))
    }

    /// Reads the key without validation (the caller validates against the state word).
    pub fn read_id_raw(&self) -> ObjectId {
        ObjectId::from_words(std::array::from_fn(|i| self.id[i].load(Ordering::Relaxed)))
    }

    fn key_matches(&self, words: &[u32; 7]) -> bool {
        self.id
            .iter()
            .zip(words)
            .all(|(a, b)| a.load(Ordering::Relaxed) == *b)
    }

    /// Reads the key consistently with `expected` (the state word loaded before): `None` if the
    /// slot changed meanwhile.
    pub fn read_id_validated(&self, expected: Word) -> Option<ObjectId> {
        let id = self.read_id_raw();
        // Acquire fence: pairs with the Release fence in `claim`, so if any key word read above
        // came from a later writer, the reload below sees that writer's claim.
        fence(Ordering::Acquire);
        (Word::unpack(self.word.load(Ordering::Relaxed)) == expected).then_some(id)
    }

    /// Payload bytes (data, then metadata) the slot's fields name, or `None` if the sum
    /// overflows: the fields are read from the region, so a corrupt slot must not wrap to a small
    /// length.
    pub fn payload_len(&self) -> Option<u64> {
        self.data_size
            .load(Ordering::Relaxed)
            .checked_add(u64::from(self.metadata_size.load(Ordering::Relaxed)))
    }

    fn commit_info(&self) -> (u32, u32) {
        let c = self.commit.load(Ordering::Relaxed);
        ((c >> 32) as u32, c as u32)
    }

    /// Compare-and-swap of the state word. `AcqRel` on success: the Release half publishes the
    /// caller's earlier writes (payload flush, fields) to whoever next Acquires the word; the
    /// Acquire half makes the previous owner's writes visible to the caller.
    pub fn cas_word(&self, current: Word, new: Word) -> Result<(), Word> {
        // AcqRel: pairs with the AcqRel `cas_word` of the slot's other owners and the Acquire
        // `load_word` of its readers (`lookup`, `Client::get`); the Acquire failure ordering lets
        // the caller act on the word it got back.
        self.word
            .compare_exchange(
                current.pack(),
                new.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Word::unpack)
    }

    /// Stores a new state word. Only for the party that exclusively owns the slot in its current
    /// state (RESERVED/PENDING by the owner, DELETING by the deleter). `Release`: publishes the
    /// owner's writes; pairs with `load_word`'s Acquire.
    pub fn store_word(&self, new: Word) {
        self.word.store(new.pack(), Ordering::Release);
    }
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The key is already committed at this slot.
    Exists { index: usize, word: Word },
    /// No free slot within [`MAX_PROBE`] of the key's home.
    Full,
    /// The slot we claimed is no longer ours (a reaper judged us dead and released it while we
    /// were paused); nothing more was written to it.
    Lost,
}

/// A committed insert: the slot is `CREATING`, owned by the inserter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub index: usize,
    pub word: Word,
}

/// The directory over a table of slots (in the region, or on the heap for models).
pub struct Directory<'a> {
    slots: &'a [Slot],
    mask: usize,
}

impl<'a> Directory<'a> {
    /// `slots.len()` must be a power of two.
    pub fn new(slots: &'a [Slot]) -> Directory<'a> {
        assert!(
            slots.len().is_power_of_two(),
            "directory capacity must be a power of two"
        );
        Directory {
            slots,
            mask: slots.len() - 1,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn slot(&self, index: usize) -> &'a Slot {
        &self.slots[index & self.mask]
    }

    pub fn slots(&self) -> &'a [Slot] {
        self.slots
    }

    pub fn home_of(&self, id: &ObjectId) -> usize {
        id.hash64() as usize & self.mask
    }

    /// Whether `slot` at distance `d` from home `h` (with home word `home`) holds a committed
    /// entry of home `h`, and its state word.
    fn committed_entry(&self, slot: &Slot, h: usize, d: usize, home: Home) -> Option<Word> {
        let w = slot.load_word();
        let (cver, chome) = slot.commit_info();
        if chome as usize != h {
            return None;
        }
        match w.state {
            state::CREATING | state::SEALED | state::DELETING => Some(w),
            state::PENDING if cver == home.ver && d == home.commit_d as usize => Some(w),
            _ => None,
        }
    }

    /// Finds the committed entry for `id`: its index and state word.
    pub fn lookup(&self, id: &ObjectId) -> Option<(usize, Word)> {
        let words = id.words();
        let h = self.home_of(id);
        // Acquire: pairs with the AcqRel commit CAS in `insert`; every entry committed up to this
        // version (and the helping flips before it) is visible to the scan.
        let home = Home::unpack(self.slots[h].home.load(Ordering::Acquire));
        for d in 0..=home.maxd as usize {
            let index = (h + d) & self.mask;
            let slot = &self.slots[index];
            // A slot can change under us (sealed, deleted, reused): retry it a few times; a slot
            // that keeps changing is being reused by others and cannot hold a stable `id`.
            for _ in 0..4 {
                let Some(w) = self.committed_entry(slot, h, d, home) else {
                    break;
                };
                if !slot.key_matches(&words) {
                    // Validate the negative answer too: if the slot changed, look again.
                    // Acquire fence: pairs with the Release fence in `claim` (every rewrite of the
                    // key follows one): orders the key loads above before this reload of the
                    // word, so a key rewritten under us shows as a changed word (seqlock
                    // validation).
                    fence(Ordering::Acquire);
                    if Word::unpack(slot.word.load(Ordering::Relaxed)) == w {
                        break;
                    }
                    continue;
                }
                // Acquire fence: as above (pairs with the Release fence in `claim`).
                fence(Ordering::Acquire);
                if Word::unpack(slot.word.load(Ordering::Relaxed)) == w {
                    return Some((index, w));
                }
            }
        }
        None
    }

    /// [`Directory::lookup`] in another host's shard (protocol v2): the home word's line and then
    /// the first line of every slot in its probe range are evicted before the scan reads them, so
    /// it sees what that host wrote back. A slot's first line holds its word, its commit record
    /// and its key: one line moves whole, so the scan's seqlock check sees a consistent snapshot.
    /// Never writes.
    pub fn lookup_remote(&self, c: &Coherence, id: &ObjectId) -> Option<(usize, Word)> {
        let h = self.home_of(id);
        evict(c, std::slice::from_ref(&self.slots[h].home));
        // Acquire: pairs with the AcqRel commit CAS in `insert` (as in `lookup`), on the other
        // host through memory: the eviction above made it read what that host wrote back.
        let home = Home::unpack(self.slots[h].home.load(Ordering::Acquire));
        for d in 0..=home.maxd as usize {
            evict(
                c,
                std::slice::from_ref(&self.slots[(h + d) & self.mask].word),
            );
        }
        self.lookup(id)
    }

    /// Writes back what a remote [`Directory::lookup_remote`] of the entry in slot `index` reads:
    /// the slot's first line (word, commit record, key) and its home's home word.
    pub fn publish_entry(&self, c: &Coherence, index: usize) {
        let slot = &self.slots[index & self.mask];
        write_back(c, std::slice::from_ref(&slot.word));
        let (_, home) = slot.commit_info();
        write_back(
            c,
            std::slice::from_ref(&self.slots[home as usize & self.mask].home),
        );
    }

    /// Claims the first free slot at or after `h`: `FREE → RESERVED` with a new generation.
    fn claim(&self, h: usize, owner: u16, flags: u8) -> Result<(usize, Word), InsertError> {
        for d in 0..MAX_PROBE.min(self.slots.len()) {
            let index = (h + d) & self.mask;
            let slot = &self.slots[index];
            let mut cur = Word::unpack(slot.word.load(Ordering::Relaxed));
            while cur.state == state::FREE {
                let new = Word {
                    gen: cur.gen.wrapping_add(1),
                    state: state::RESERVED,
                    flags,
                    owner,
                };
                match slot.cas_word(cur, new) {
                    Ok(()) => {
                        // Release fence: pairs with the Acquire fence of validating readers; a
                        // reader that sees any field written after this point also sees the claim.
                        fence(Ordering::Release);
                        return Ok((index, new));
                    }
                    Err(actual) => cur = actual,
                }
            }
        }
        Err(InsertError::Full)
    }

    /// Inserts `id`, owned by `owner`. `init` writes the slot's fields (other than the two words
    /// and the key) while the slot is exclusively ours. On success the slot is `CREATING`.
    pub fn insert(
        &self,
        id: &ObjectId,
        owner: u16,
        init: impl FnOnce(&Slot),
    ) -> Result<Inserted, InsertError> {
        self.insert_flagged(id, owner, 0, init)
    }

    /// [`Directory::insert`] with `flags` on the slot's word from its claim on (protocol v2's
    /// creates claim with [`flags::UNCONFIRMED`]).
    pub fn insert_flagged(
        &self,
        id: &ObjectId,
        owner: u16,
        flags: u8,
        init: impl FnOnce(&Slot),
    ) -> Result<Inserted, InsertError> {
        let words = id.words();
        let h = self.home_of(id);
        let home_word = &self.slots[h].home;
        let mut mine: Option<(usize, usize, Word)> = None;
        let mut init = Some(init);
        loop {
            // Acquire: pairs with the AcqRel commit CAS below (of earlier inserts).
            let raw_home = home_word.load(Ordering::Acquire);
            let home = Home::unpack(raw_home);

            // Help the latest winner out of PENDING, so that no committed slot older than the
            // next version is still PENDING once the next version commits.
            let wslot = &self.slots[(h + home.commit_d as usize) & self.mask];
            let ww = wslot.load_word();
            if ww.state == state::PENDING && wslot.commit_info() == (home.ver, h as u32) {
                flip_to_creating(wslot, ww.gen);
            }

            // Scan for a committed entry of this key; recompute maxd from the entries of home h.
            let mut new_maxd = 0usize;
            for d in 0..=home.maxd as usize {
                let index = (h + d) & self.mask;
                if mine.map(|m| m.0) == Some(index) {
                    continue;
                }
                let slot = &self.slots[index];
                let Some(w) = self.committed_entry(slot, h, d, home) else {
                    continue;
                };
                new_maxd = d;
                if slot.key_matches(&words) {
                    // Acquire fence: as in `lookup` (pairs with the Release fence in `claim` of
                    // a concurrent inserter).
                    fence(Ordering::Acquire);
                    let now = Word::unpack(slot.word.load(Ordering::Relaxed));
                    // A key is only rewritten after a claim bumps the generation, so the same
                    // generation in a live state is the same object, whatever else changed (a
                    // seal, a waiter flag, a delete mark): the id exists.
                    if now.gen == w.gen && now.state != state::FREE && now.state != state::RESERVED
                    {
                        if let Some((index, _, w)) = mine.take() {
                            self.release_uncommitted(index, w);
                        }
                        return Err(InsertError::Exists { index, word: now });
                    }
                    // Reused or freed under us: that object is gone. If the key was committed
                    // again meanwhile, our commit CAS fails and we rescan.
                }
            }

            let (index, d, w) = match mine {
                Some(m) => m,
                None => {
                    let (index, w) = self.claim(h, owner, flags)?;
                    let slot = &self.slots[index];
                    for (dst, src) in slot.id.iter().zip(words) {
                        dst.store(src, Ordering::Relaxed);
                    }
                    if let Some(f) = init.take() {
                        f(slot);
                    }
                    crate::crash_point!("insert.claimed");
                    let d = index.wrapping_sub(h) & self.mask;
                    if d > u16::MAX as usize {
                        self.release_uncommitted(index, w);
                        return Err(InsertError::Full);
                    }
                    // The version we would commit must be read after the claim (L1): the slot
                    // may have been the winner of a version committed since our read of the
                    // home word, then freed; writing that version into its commit record would
                    // make our uncommitted slot look committed. A version current after the
                    // claim cannot name this slot, which is ours from the claim on. (The claim's
                    // Acquire CAS read the freer's Release store, which follows that winner's
                    // commit.) Acquire: pairs with the AcqRel commit CAS of the home word.
                    if home_word.load(Ordering::Acquire) != raw_home {
                        mine = Some((index, d, w));
                        continue;
                    }
                    (index, d, w)
                }
            };
            let slot = &self.slots[index];
            // Still ours? A reaper releases the uncommitted slot of a client it judged dead; an
            // inserter paused past that must not write the next claimer's commit record and
            // word (review follow-up R5). A fresh check, then one write, then a CAS.
            let Some(cur) = uncommitted_ours(slot, w) else {
                return Err(InsertError::Lost);
            };
            let target = home.ver.wrapping_add(1);
            slot.commit
                .store(u64::from(target) << 32 | h as u64, Ordering::Relaxed);
            // AcqRel (cas_word): the Release half publishes the key, fields and commit record
            // to scanners that Acquire the word and find it PENDING. From the word as it is:
            // flags a getter or a delete set on a slot that looked committed are kept (L1).
            let pending = cur.with_state(state::PENDING);
            if slot.cas_word(cur, pending).is_err() {
                // Changed meanwhile (a flag, or taken from us): look again.
                mine = Some((index, d, w));
                continue;
            }
            let new_home = Home {
                ver: target,
                maxd: new_maxd.max(d) as u16,
                commit_d: d as u16,
            };
            // AcqRel: pairs with the Acquire loads of the home word in `lookup`, `live_word` and
            // the next `insert`: the Release half publishes the PENDING slot (and our helping
            // flip) to them; the Acquire half orders our success after every earlier commit.
            if home_word
                .compare_exchange(
                    raw_home,
                    new_home.pack(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                // Flip (or find flipped by a helper); report the word as it is now.
                let creating = flip_to_creating(slot, w.gen).unwrap_or_else(|| slot.load_word());
                return Ok(Inserted {
                    index,
                    word: creating,
                });
            }
            mine = Some((index, d, pending));
        }
    }

    /// Gives back a slot we claimed but never committed — only while it is still ours (same
    /// generation and owner, not yet committed for good), by a CAS from the word as it is, so
    /// that a slot a reaper released and someone else claimed meanwhile is left alone (review
    /// follow-up, item d). A getter waiting on it is woken.
    fn release_uncommitted(&self, index: usize, w: Word) {
        let slot = &self.slots[index];
        while let Some(cur) = uncommitted_ours(slot, w) {
            // Make it fail every commit check before it is free again.
            slot.commit.store(FREEING, Ordering::Relaxed);
            let free = Word {
                gen: w.gen,
                state: state::FREE,
                flags: 0,
                owner: NO_OWNER,
            };
            if slot.cas_word(cur, free).is_ok() {
                // (Loom models have no futex waits: nothing to wake.)
                #[cfg(not(loom))]
                if cur.flags & flags::WAITERS != 0 {
                    crate::store::wait::wake_word(&slot.word);
                }
                return;
            }
        }
    }

    /// Frees a slot that the caller exclusively owns in `DELETING` (or an uncommitted state).
    /// The generation stays; the next claim bumps it.
    pub fn free_slot(&self, index: usize, w: Word) {
        let slot = &self.slots[index & self.mask];
        // From here on no scan counts the slot as an entry of its home: the object is gone,
        // even while the state word still says DELETING for a moment.
        slot.commit.store(FREEING, Ordering::Relaxed);
        // Release: the deleter's reads of the fields (data offset for freeing) happen before the
        // slot can be claimed again.
        slot.store_word(Word {
            gen: w.gen,
            state: state::FREE,
            flags: 0,
            owner: NO_OWNER,
        });
    }

    /// Frees a slot whose finish the caller claimed (`w` is its `DELETING | FINISHING` word):
    /// like [`Directory::free_slot`], but by compare-and-swap from `w`, so a finisher whose slot
    /// was taken over (its owner was judged dead) frees nothing. Returns whether it freed it.
    pub fn free_finished(&self, index: usize, w: Word) -> bool {
        let slot = &self.slots[index & self.mask];
        if slot.load_word() != w {
            return false;
        }
        // As in `free_slot`: the object is gone from this instant.
        slot.commit.store(FREEING, Ordering::Relaxed);
        let free = Word {
            gen: w.gen,
            state: state::FREE,
            flags: 0,
            owner: NO_OWNER,
        };
        // AcqRel (cas_word): Release orders the finisher's reads of the fields before the slot
        // can be claimed again.
        slot.cas_word(w, free).is_ok()
    }

    /// The state word of slot `index` if it holds a live entry: committed (`CREATING`, `SEALED`,
    /// `DELETING` not yet past the point of no return, or the winning `PENDING` slot).
    pub fn live_word(&self, index: usize) -> Option<Word> {
        let slot = &self.slots[index & self.mask];
        let (_, chome) = slot.commit_info();
        let h = chome as usize;
        if h >= self.slots.len() {
            return None;
        }
        // Acquire: as in `lookup` (pairs with the AcqRel commit CAS of the home word in `insert`).
        let home = Home::unpack(self.slots[h].home.load(Ordering::Acquire));
        self.committed_entry(slot, h, index.wrapping_sub(h) & self.mask, home)
    }

    /// The version of `id`'s home word: how many inserts of keys of that home have committed
    /// (for tests and statistics).
    pub fn home_version(&self, id: &ObjectId) -> u32 {
        // Acquire: as in `lookup` (pairs with the AcqRel commit CAS of the home word in `insert`).
        Home::unpack(self.slots[self.home_of(id)].home.load(Ordering::Acquire)).ver
    }

    /// The current scan length for `id`'s home (for tests and statistics).
    pub fn probe_len(&self, id: &ObjectId) -> usize {
        let h = self.home_of(id);
        // Acquire: as in `lookup` (pairs with the AcqRel commit CAS of the home word in `insert`).
        Home::unpack(self.slots[h].home.load(Ordering::Acquire)).maxd as usize + 1
    }
}

/// Moves a committed `PENDING` slot of generation `gen` to `CREATING`, keeping whatever flags
/// others set meanwhile (a waiter, a delete mark). Returns the word it left, if it flipped it.
fn flip_to_creating(slot: &Slot, gen: u32) -> Option<Word> {
    let mut w = slot.load_word();
    while w.gen == gen && w.state == state::PENDING {
        let creating = w.with_state(state::CREATING);
        match slot.cas_word(w, creating) {
            Ok(()) => return Some(creating),
            Err(actual) => w = actual,
        }
    }
    None
}

/// The slot's word if it is still the uncommitted slot of claim `w`: same generation and owner,
/// in `RESERVED`, `PENDING` or `CREATING` (a helper flips only a committed slot, so `CREATING` is
/// not expected here since the fix of L1; it is accepted so that such a slot is still ours).
fn uncommitted_ours(slot: &Slot, w: Word) -> Option<Word> {
    let cur = slot.load_word();
    (cur.gen == w.gen
        && cur.owner == w.owner
        && matches!(
            cur.state,
            state::RESERVED | state::PENDING | state::CREATING
        ))
    .then_some(cur)
}

/// The getter half of the Dekker pair with deletion, independent of where references are counted.
///
/// Takes a reference on the sealed object whose state word is `w` (`add_ref`, which records it
/// in the caller's reference table), then `fence(SeqCst)` and re-reads the slot word: the object
/// is the caller's only if the word still shows it `SEALED` at `w`'s generation, and then its
/// current word is returned. Otherwise the reference is dropped again (`drop_ref`, which also
/// runs a delete that the reference deferred) and the result is `Ok(None)`. A deleter
/// ([`begin_delete`]) CASes to `DELETING`, fences and counts references: of the two, at least one
/// sees the other (the getter the `DELETING` word, or the deleter the reference), so a getter
/// never keeps an object a deleter frees. `Client::try_acquire` is this plus the payload checks.
///
/// # Errors
/// What `add_ref` returns (then nothing was recorded and the word is not read).
pub fn acquire_sealed<E>(
    slot: &Slot,
    w: Word,
    add_ref: impl FnOnce() -> Result<(), E>,
    drop_ref: impl FnOnce(),
) -> Result<Option<Word>, E> {
    add_ref()?;
    crate::crash_point!("get.referenced");
    // SeqCst fence: first half of the Dekker pair with deletion (refs module docs): pairs with
    // the deleter's SeqCst fence in `settle`, between its CAS to DELETING and its reference scan.
    fence(Ordering::SeqCst);
    let now = slot.load_word();
    if now.gen != w.gen || now.state != state::SEALED {
        drop_ref();
        return Ok(None);
    }
    Ok(Some(now))
}

/// The deletion protocol on one slot, independent of where references are counted.
///
/// Starts deleting the sealed object whose state word is `w`: CAS to `DELETING` (with
/// [`flags::SEALED_ORIGIN`]), then `fence(SeqCst)` and ask `refcount` (the sum over every client's
/// reference table). If nobody holds it, returns the `DELETING` word: the caller now exclusively
/// owns the slot and must finish it (`Store::finish_delete`). Otherwise the slot goes back to
/// `SEALED` with `DELETE_PENDING`, and is re-checked once more: a reference dropped while we held
/// `DELETING` was dropped by a releaser who saw `DELETING` rather than our flag, so nobody else
/// will retry. Returns `None` if the object is in use (deferred) or was not deletable (changed
/// under us). An object in an eviction probe (`DELETING | EVICTING`) is marked `DELETE_PENDING`
/// instead; the evicter runs the delete when it restores the object.
pub fn begin_delete(
    c: &Coherence,
    slot: &Slot,
    mut w: Word,
    deleter: u16,
    refcount: impl Fn() -> u32,
) -> Option<Word> {
    loop {
        if w.state == state::DELETING && w.flags & flags::EVICTING != 0 {
            // Past its reference check (FINISHING): it is being freed; nothing to mark.
            if w.flags & (flags::DELETE_PENDING | flags::FINISHING) != 0 {
                return None;
            }
            let marked = Word {
                flags: w.flags | flags::DELETE_PENDING,
                ..w
            };
            match slot.cas_word(w, marked) {
                Ok(()) => {
                    publish_word(c, slot);
                    return None;
                }
                Err(actual) if actual.gen == w.gen => {
                    w = actual;
                    continue;
                }
                Err(_) => return None,
            }
        }
        if w.state != state::SEALED {
            return None;
        }
        // The DELETING word names the deleter (not the creator), so that the reaper can finish a
        // delete whose deleter died half way.
        let deleting = Word {
            state: state::DELETING,
            flags: (w.flags & !flags::WAITERS) | flags::SEALED_ORIGIN,
            owner: deleter,
            ..w
        };
        if let Err(actual) = slot.cas_word(w, deleting) {
            if actual.gen != w.gen {
                return None;
            }
            w = actual;
            continue;
        }
        publish_word(c, slot);
        crate::crash_point!("delete.deleting");
        match settle(c, slot, deleting, w.owner, true, &refcount) {
            Settled::Delete(d) => return Some(d),
            Settled::Kept => return None,
            Settled::Again(now) => w = now,
        }
    }
}

/// What [`settle`] decided.
enum Settled {
    /// Nobody references it: the caller owns this `DELETING` word and finishes the delete.
    Delete(Word),
    /// Referenced (or taken over by someone else): the object stays.
    Kept,
    /// Restored with `DELETE_PENDING`, and the references went meanwhile: delete from this word.
    Again(Word),
}

/// The second half of [`begin_delete`], [`begin_evict`] and [`resume_delete`], for the party that
/// owns `deleting` (a `DELETING | SEALED_ORIGIN` word): the reference check, and the restore if
/// it fails. `mark` adds `DELETE_PENDING` to the restored word (a delete; not an eviction).
fn settle(
    c: &Coherence,
    slot: &Slot,
    deleting: Word,
    restore_owner: u16,
    mark: bool,
    refcount: &impl Fn() -> u32,
) -> Settled {
    // SeqCst fence: second half of the Dekker pair with getters and releasers (refs docs):
    // pairs with the SeqCst fences in `acquire_sealed`, `Registered::add_ref` and `after_drop`.
    // For a recoverer (`resume_delete`) the DELETING word was written by the dead deleter; it
    // happens-before this fence through our Acquire CAS on it, which is all the pairing needs.
    fence(Ordering::SeqCst);
    if refcount() == 0 {
        return Settled::Delete(deleting);
    }
    crate::crash_point!("settle.referenced");
    // Restore. A CAS, not a store: a delete may have added DELETE_PENDING to an eviction probe
    // meanwhile (kept), and a recoverer may have taken the word over (then it is theirs).
    let mut cur = deleting;
    let restored = loop {
        let flags = (cur.flags & !(flags::SEALED_ORIGIN | flags::EVICTING | flags::FINISHING))
            | if mark { flags::DELETE_PENDING } else { 0 };
        let restored = Word {
            state: state::SEALED,
            flags,
            owner: restore_owner,
            ..cur
        };
        match slot.cas_word(cur, restored) {
            Ok(()) => {
                publish_word(c, slot);
                break restored;
            }
            Err(actual)
                if actual.gen == cur.gen
                    && actual.state == state::DELETING
                    && actual.owner == cur.owner =>
            {
                cur = actual
            }
            Err(_) => return Settled::Kept,
        }
    };
    if restored.flags & flags::DELETE_PENDING == 0 {
        return Settled::Kept;
    }
    crate::crash_point!("settle.restored_pending");
    // SeqCst fence: pairs with the fence in `after_release` (store flag, then read refs here;
    // store ref drop, then read the flag there).
    fence(Ordering::SeqCst);
    if refcount() > 0 {
        return Settled::Kept;
    }
    let w = slot.load_word();
    if w.gen != restored.gen || w.state != state::SEALED || w.flags & flags::DELETE_PENDING == 0 {
        return Settled::Kept;
    }
    Settled::Again(w)
}

/// Starts evicting the sealed object `w` if nobody references it: like [`begin_delete`], but an
/// object in use is left as it was (eviction never marks anything delete-pending). A delete asked
/// for during the probe (it finds `DELETING | EVICTING` and adds `DELETE_PENDING`) is run here
/// when the object is restored, so it is never lost.
pub fn begin_evict(
    c: &Coherence,
    slot: &Slot,
    w: Word,
    evicter: u16,
    refcount: impl Fn() -> u32,
) -> Option<Word> {
    if w.state != state::SEALED {
        return None;
    }
    // Cheap pre-check: an object in use right now is not a candidate, and is never moved to
    // DELETING at all (LRU eviction meets pinned objects all the time). The check after the CAS
    // below is the one that decides.
    if refcount() > 0 {
        return None;
    }
    let deleting = Word {
        state: state::DELETING,
        flags: (w.flags & !flags::WAITERS) | flags::SEALED_ORIGIN | flags::EVICTING,
        owner: evicter,
        ..w
    };
    slot.cas_word(w, deleting).ok()?;
    publish_word(c, slot);
    crate::crash_point!("evict.deleting");
    match settle(c, slot, deleting, w.owner, false, &refcount) {
        Settled::Delete(d) => Some(d),
        Settled::Kept => None,
        Settled::Again(now) => begin_delete(c, slot, now, evicter, refcount),
    }
}

/// What [`resume_delete`] left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// The caller owns this `DELETING` word and must finish it (free payload, then slot).
    Finish(Word),
    /// The object is still referenced: it is `SEALED` again (with `DELETE_PENDING` unless it
    /// was an eviction), or someone else took it over.
    Kept,
    /// The word was not `w` any more: nothing done.
    Changed,
}

/// Takes over the `DELETING` slot `w` whose owner is dead, as `me`, and decides what the dead
/// owner had not decided yet. An abort (no `SEALED_ORIGIN`) or a delete past its reference check
/// (`FINISHING`) is finished. A delete or eviction that may not have checked the references
/// re-runs the check (the caller has erased the dead client's own table first): nobody holds it,
/// finish; otherwise restore `SEALED` (`DELETE_PENDING` for a delete), exactly as the deleter
/// would have. `DELETING` is thus not a point of no return until the check passed.
pub fn resume_delete(
    c: &Coherence,
    slot: &Slot,
    w: Word,
    me: u16,
    refcount: impl Fn() -> u32,
) -> Resumed {
    if w.state != state::DELETING {
        return Resumed::Changed;
    }
    let taken = Word { owner: me, ..w };
    // AcqRel (cas_word): Acquire makes the dead owner's writes (its DELETING CAS, its data-offset
    // swap if it got that far) visible; exactly one recoverer wins the word.
    if slot.cas_word(w, taken).is_err() {
        return Resumed::Changed;
    }
    publish_word(c, slot);
    crate::crash_point!("resume.taken");
    if w.flags & flags::SEALED_ORIGIN == 0 || w.flags & flags::FINISHING != 0 {
        return Resumed::Finish(taken);
    }
    let mark = w.flags & flags::EVICTING == 0;
    match settle(c, slot, taken, NO_OWNER, mark, &refcount) {
        Settled::Delete(d) => Resumed::Finish(d),
        Settled::Kept => Resumed::Kept,
        Settled::Again(now) => match begin_delete(c, slot, now, me, refcount) {
            Some(d) => Resumed::Finish(d),
            None => Resumed::Kept,
        },
    }
}

/// A reaper's step 5: decides the `DELETING` slot that the dead client `owner` left, as `me`
/// ([`resume_delete`]), looking again while others change the word without taking the slot (a
/// delete marking an eviction probe). `refcount(gen)` sums the live clients' references on the
/// object of generation `gen`. `None` if the slot is not `owner`'s `DELETING` any more (finished
/// or taken over by someone else); otherwise the word it was taken from and the verdict,
/// [`Resumed::Finish`] (the caller finishes it) or [`Resumed::Kept`].
pub fn resume_owned_delete(
    c: &Coherence,
    slot: &Slot,
    owner: u16,
    me: u16,
    refcount: impl Fn(u32) -> u32,
) -> Option<(Word, Resumed)> {
    loop {
        let w = slot.load_word();
        if w.state != state::DELETING || w.owner != owner {
            return None;
        }
        match resume_delete(c, slot, w, me, || refcount(w.gen)) {
            Resumed::Changed => continue,
            decided => return Some((w, decided)),
        }
    }
}

/// Called by a client right after its reference count on `(slot, gen)` dropped to zero: if a
/// delete is pending, tries it (see [`begin_delete`]). Returns the `DELETING` word if the caller
/// must finish the delete.
pub fn after_release(
    c: &Coherence,
    slot: &Slot,
    gen: u32,
    releaser: u16,
    refcount: impl Fn() -> u32,
) -> Option<Word> {
    // SeqCst fence: pairs with the fence in `begin_delete` after it sets DELETE_PENDING.
    fence(Ordering::SeqCst);
    let w = slot.load_word();
    if w.gen == gen && w.state == state::SEALED && w.flags & flags::DELETE_PENDING != 0 {
        begin_delete(c, slot, w, releaser, refcount)
    } else {
        None
    }
}

/// Why [`confirm_across_hosts`] did not confirm the create. In both cases the caller's slot has
/// been freed (withdrawn, written back); the caller frees its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unconfirmed {
    /// Host `host` holds the id (confirmed there, or unconfirmed there and `host` is the lower
    /// index, which wins the tie).
    Exists { host: u32 },
    /// Host `host` holds the id unconfirmed and its outcome did not come while `wait` allowed
    /// (a dead host: its taker aborts its unsealed objects, then a retry succeeds).
    Busy { host: u32 },
}

/// Protocol v2's create across hosts (`docs/protocol-v2.md`, "Creates"): ids are unique within
/// a shard by v1's home-word commit; across shards, this. `ins` is this host's entry for `id`,
/// just committed in its shard `dir` by [`Directory::insert_flagged`] with
/// [`flags::UNCONFIRMED`]. It is written back (`publish_entry`), then `fence(SeqCst)`, then every
/// other host's shard (`others`: host index and shard) is looked up from memory
/// ([`Directory::lookup_remote`]). Another host's *confirmed* entry: withdraw, `Exists`. Another
/// host's *unconfirmed* entry: the lower host index wins — a higher `me` withdraws (`Exists`); a
/// lower `me` waits (`wait()` between looks; `false` gives up: withdraw, `Busy`) until that
/// entry is gone (the other host withdrew) or confirmed (it did not see ours: withdraw,
/// `Exists`). Then the flag is cleared and written back: `Ok` with the confirmed word.
///
/// Why exactly one of two racing creators confirms: both wrote their entries back before they
/// looked (a Dekker pair through memory), so at least one sees the other's; the tie-break leaves
/// one, and a lower host that saw the higher one's entry waits for its outcome, which is decided
/// by whether the higher one saw the lower one's. Loom checks it over two emulated hosts, with
/// each write-back and eviction as negative controls (`core/tests/loom.rs`).
pub fn confirm_across_hosts(
    c: &Coherence,
    dir: &Directory<'_>,
    ins: Inserted,
    me: u32,
    others: &[(u32, Directory<'_>)],
    id: &ObjectId,
    mut wait: impl FnMut() -> bool,
) -> Result<Word, Unconfirmed> {
    dir.publish_entry(c, ins.index);
    // SeqCst fence: the cross-host Dekker pair of two creators of one id: pairs with the same
    // fence in the other host's `confirm_across_hosts`; its write-back above completed before,
    // the evictions of `lookup_remote` below follow.
    fence(Ordering::SeqCst);
    for (host, shard) in others {
        // Until it is not there (or gone: the other host withdrew).
        while let Some((_, w)) = shard.lookup_remote(c, id) {
            let unconfirmed = w.flags & flags::UNCONFIRMED != 0 && w.state != state::DELETING;
            if !unconfirmed || *host < me {
                withdraw_unconfirmed(c, dir, ins);
                return Err(Unconfirmed::Exists { host: *host });
            }
            // We are the lower index: the other withdraws if it saw us; wait for its outcome.
            if !wait() {
                withdraw_unconfirmed(c, dir, ins);
                return Err(Unconfirmed::Busy { host: *host });
            }
        }
    }
    let slot = dir.slot(ins.index);
    let mut w = slot.load_word();
    loop {
        let confirmed = Word {
            flags: w.flags & !flags::UNCONFIRMED,
            ..w
        };
        match slot.cas_word(w, confirmed) {
            Ok(()) => {
                publish_word(c, slot);
                return Ok(confirmed);
            }
            // A local getter's WAITERS flag, a PENDING → CREATING helper: same generation.
            Err(actual) if actual.gen == w.gen => w = actual,
            Err(_) => return Err(Unconfirmed::Busy { host: me }),
        }
    }
}

/// The loser's half of [`confirm_across_hosts`]: its own unconfirmed entry withdrawn
/// ([`withdraw_unsealed`]: one CAS to `FREE`; no reader can hold an unsealed object), written back
/// so that a waiting lower host sees it gone.
fn withdraw_unconfirmed(c: &Coherence, dir: &Directory<'_>, ins: Inserted) {
    withdraw_unsealed(dir, ins.index, ins.word, |_slot| {
        // (Loom models have no futex waits: nothing to wake.)
        #[cfg(not(loom))]
        crate::store::wait::wake_word(&_slot.word);
    });
    publish_word(c, dir.slot(ins.index));
}

/// Writes back the line of `slot`'s state word after a change of it that another host's getter
/// or releaser must see (protocol v2: the slot's host is its only writer; readers on other hosts
/// evict the line before each load, [`acquire_sealed_remote`], [`release_remote`]). Nothing with
/// `hardware` coherence.
fn publish_word(c: &Coherence, slot: &Slot) {
    write_back(c, std::slice::from_ref(&slot.word));
}

/// [`acquire_sealed`] for a getter on another host than the slot's (protocol v2,
/// `docs/protocol-v2.md`, "Gets"): the Dekker pair with deletion through memory, without
/// cross-host coherence and without writing the slot.
///
/// `pin` records the reference in the getter's own host's table and returns the words it
/// stored; they are written back, then `fence(SeqCst)` (`mfence`), then the slot word's line is
/// evicted and re-read. The deleter ([`begin_delete`], on the slot's host) writes its `DELETING`
/// word back before its fence and its `refcount` evicts the other hosts' tables before reading
/// them. Both halves' stores reach memory before their loads go to memory, and memory orders
/// them, so at least one half sees the other: the getter `DELETING` (it unpins: `unpin`, then
/// [`release_remote`]'s duties are the caller's) or the deleter the pin (deferred). The slot is
/// never written from this host (a remote get leaves `last_access_ms` alone).
///
/// # Errors
/// What `pin` returns (then nothing was recorded and the word is not read).
pub fn acquire_sealed_remote<'p, E>(
    c: &Coherence,
    slot: &Slot,
    w: Word,
    pin: impl FnOnce() -> Result<&'p [AtomicU64], E>,
    unpin: impl FnOnce(),
) -> Result<Option<Word>, E> {
    let pinned = pin()?;
    write_back(c, pinned);
    // SeqCst fence: first half of the cross-host Dekker pair: pairs with the deleter's SeqCst
    // fence in `settle`. With emulated or non-coherent memory the pairing is through memory: the
    // write-back above completed before it, the eviction below follows it.
    fence(Ordering::SeqCst);
    evict(c, std::slice::from_ref(&slot.word));
    let now = slot.load_word();
    if now.gen != w.gen || now.state != state::SEALED {
        unpin();
        return Ok(None);
    }
    Ok(Some(now))
}

/// A getter on another host gives its reference on `(slot, gen)` back: `unpin` removes it from
/// the host's table and returns the words it stored, which are written back; then
/// `fence(SeqCst)`, evict and re-read the slot word. Returns `true` when a delete is pending on
/// that object: the caller must tell the slot's host (a release message on the ring to it), whose
/// keeper runs [`after_release`]. The slot's host writes `DELETE_PENDING` back before its second
/// reference check (`settle`), so of the two at least one sees the other: this release the flag,
/// or that check the reference gone. Never writes the slot.
pub fn release_remote<'p>(
    c: &Coherence,
    slot: &Slot,
    gen: u32,
    unpin: impl FnOnce() -> &'p [AtomicU64],
) -> bool {
    let unpinned = unpin();
    write_back(c, unpinned);
    // SeqCst fence: pairs with the fence in `settle` after it restores the word with
    // DELETE_PENDING (and wrote it back), as `after_release`'s does on one host.
    fence(Ordering::SeqCst);
    evict(c, std::slice::from_ref(&slot.word));
    let w = slot.load_word();
    w.gen == gen && w.state == state::SEALED && w.flags & flags::DELETE_PENDING != 0
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn table(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::new_free()).collect()
    }

    #[test]
    fn insert_lookup_exists() {
        let t = table(64);
        let d = Directory::new(&t);
        let a = ObjectId::from_u64(1);
        let ins = d
            .insert(&a, 3, |s| s.data_size.store(42, Ordering::Relaxed))
            .unwrap();
        assert_eq!(ins.word.state, state::CREATING);
        assert_eq!(ins.word.owner, 3);
        let (i, w) = d.lookup(&a).unwrap();
        assert_eq!((i, w), (ins.index, ins.word));
        assert_eq!(d.slot(i).data_size.load(Ordering::Relaxed), 42);
        assert!(matches!(
            d.insert(&a, 4, |_| {}),
            Err(InsertError::Exists { .. })
        ));
        assert!(d.lookup(&ObjectId::from_u64(2)).is_none());
    }

    #[test]
    fn free_then_reinsert_bumps_generation() {
        let t = table(64);
        let d = Directory::new(&t);
        let a = ObjectId::from_u64(7);
        let first = d.insert(&a, 1, |_| {}).unwrap();
        d.free_slot(first.index, first.word);
        assert!(d.lookup(&a).is_none());
        let second = d.insert(&a, 1, |_| {}).unwrap();
        assert_ne!(second.word.gen, first.word.gen);
    }

    #[test]
    fn full_table_reports_full() {
        let t = table(64);
        let d = Directory::new(&t);
        let mut n = 0;
        for i in 0..1000u64 {
            match d.insert(&ObjectId::from_u64(i), 1, |_| {}) {
                Ok(_) => n += 1,
                Err(InsertError::Full) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(n, 64);
    }

    /// Lookup cost must not degrade after many inserts and deletes (no tombstones).
    #[test]
    fn churn_keeps_probe_lengths_short() {
        let cap = 1024;
        let t = table(cap);
        let d = Directory::new(&t);
        let live = cap / 2;
        let mut ids: std::collections::VecDeque<(ObjectId, Inserted)> = Default::default();
        for i in 0..(10 * cap as u64 + live as u64) {
            let id = ObjectId::from_u64(i);
            let ins = d.insert(&id, 1, |_| {}).unwrap();
            ids.push_back((id, ins));
            if ids.len() > live {
                let (old, ins) = ids.pop_front().unwrap();
                d.free_slot(ins.index, ins.word);
                assert!(d.lookup(&old).is_none());
            }
        }
        let total: usize = (0..1000u64)
            .map(|i| d.probe_len(&ObjectId::from_u64(1 << 40 | i)))
            .sum();
        let mean = total as f64 / 1000.0;
        // At load factor 0.5, linear probing's expected miss scan is small; tombstone-based
        // tables drift towards scanning the whole table after 10x capacity churn.
        assert!(mean < 8.0, "mean probe length after churn: {mean}");
        for (id, ins) in &ids {
            assert_eq!(d.lookup(id).map(|x| x.0), Some(ins.index));
        }
    }
}

/// Why [`seal_word`] did not seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealRefused {
    /// `SEALED`, or `DELETING` (an abort — e.g. the reaper's, if we were reaped — or a delete).
    AlreadySealed,
    /// Another generation, or a state no unsealed object has.
    NotFound,
    /// Another client's object.
    NotCreator,
}

/// The seal of `Client::seal`: CAS of `w`'s generation from `CREATING`/`PENDING` to `SEALED`
/// (dropping `WAITERS`), retried while the generation stays (a getter's flag, a helper's
/// `PENDING → CREATING` flip). Returns the word it replaced (its `WAITERS` flag: someone to wake).
pub fn seal_word(slot: &Slot, mut w: Word, owner: u16) -> Result<Word, SealRefused> {
    loop {
        match w.state {
            state::SEALED | state::DELETING => return Err(SealRefused::AlreadySealed),
            state::CREATING | state::PENDING => {}
            _ => return Err(SealRefused::NotFound),
        }
        if w.owner != owner {
            return Err(SealRefused::NotCreator);
        }
        let sealed = Word {
            state: state::SEALED,
            flags: w.flags & !flags::WAITERS,
            ..w
        };
        // AcqRel (cas_word): the Release half publishes the payload (written, and flushed in
        // Flush mode, before this point) to every getter that Acquires SEALED.
        match slot.cas_word(w, sealed) {
            Ok(()) => return Ok(w),
            Err(actual) if actual.gen == w.gen => w = actual,
            Err(_) => return Err(SealRefused::NotFound),
        }
    }
}

/// What [`abort_dead_owners_slot`] found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadSlot {
    /// Not (or no longer) an unsealed object or a started delete of the owner: nothing done.
    Skipped,
    /// A delete, eviction or abort the owner had started (`DELETING`), over `data_offset`: the
    /// reaper resumes it once the owner's references are gone.
    Started { data_offset: u64 },
    /// A committed unsealed object, now `DELETING` by our CAS from `live`: the caller finishes
    /// the abort (frees the payload at `data_offset`, wakes waiters if `live` had `WAITERS`).
    Aborting {
        live: Word,
        deleting: Word,
        data_offset: u64,
    },
    /// A claimed, never committed slot: released (its payload, if any, is the owner's intent).
    Released,
}

/// The reaper's step 2 on slot `i` for the dead owner `owner` (`Store::reap_client`): abort its
/// committed unsealed object, release its uncommitted claim, or report its started delete.
/// A lost CAS (a helper's flip, a waiter's flag, a resumed owner's seal) is retried while the
/// slot is still the owner's at the same generation; a seal that won leaves the object sealed.
pub fn abort_dead_owners_slot(dir: &Directory<'_>, i: usize, owner: u16) -> DeadSlot {
    let slot = dir.slot(i);
    let mut sw = slot.load_word();
    let gen = sw.gen;
    while sw.gen == gen && sw.owner == owner {
        match sw.state {
            state::DELETING => {
                // Acquire: the Acquire `load_word` above is what pairs with the Release half of
                // the `cas_word` to DELETING made after `Client::create` stored the offset; this
                // one only keeps the reads after it in order.
                let data_offset = slot.data_offset.load(Ordering::Acquire);
                return DeadSlot::Started { data_offset };
            }
            state::RESERVED | state::PENDING | state::CREATING => {}
            _ => return DeadSlot::Skipped,
        }
        if let Some(live) = dir.live_word(i) {
            // A fresh read: the state may have moved on since `sw` (a resumed owner's seal, an
            // abort): only an unsealed object is aborted; otherwise decide again from the slot.
            if live.gen != gen
                || live.owner != owner
                || !matches!(live.state, state::PENDING | state::CREATING)
            {
                sw = slot.load_word();
                continue;
            }
            // Committed: abort it like its creator would.
            let deleting = Word {
                state: state::DELETING,
                flags: 0,
                ..live
            };
            if let Err(actual) = slot.cas_word(live, deleting) {
                sw = actual;
                continue;
            }
            // Read after the CAS, not before the fresh read above: a slot first seen RESERVED may
            // have had its fields written and been committed since, and an offset read then (0)
            // would not match the intent, which the reaper would then free a second time (the
            // loom model of steps 2 and 3 found it). Relaxed: our CAS read the committed word,
            // whose Release publication (`Directory::insert`) covers the creator's fields.
            let data_offset = slot.data_offset.load(Ordering::Relaxed);
            return DeadSlot::Aborting {
                live,
                deleting,
                data_offset,
            };
        }
        // Claimed but never committed: only the slot; the payload is the intent's. Straight to
        // FREE by one CAS (as `withdraw_unsealed`): a DELETING word left by a maintainer paused
        // here would be finished by a recoverer with the intent's block as its payload.
        let free = Word {
            gen: sw.gen,
            state: state::FREE,
            flags: 0,
            owner: NO_OWNER,
        };
        if let Err(actual) = slot.cas_word(sw, free) {
            sw = actual;
            continue;
        }
        return DeadSlot::Released;
    }
    DeadSlot::Skipped
}

/// How often [`finish_slot`] looks again when the payload offset changes under it (a finisher
/// it took the slot over from unnames and gives back within a few instructions), and
/// [`withdraw_unsealed`] when the word changes under it (flags set while the object stays). On a
/// sound region a handful suffice; running out (a hostile region) leaves a leak or the slot, never
/// a double free.
const MAX_WORD_RETRIES: u32 = 64;

/// What [`finish_slot`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished<R> {
    /// The slot was taken over (a reaper judged us dead) before we freed it: the taker finishes
    /// it; we freed nothing (a payload we had already unnamed is left to the orphan collector).
    TakenOver,
    /// The payload and then the slot are freed; `free`'s result, `None` if the slot named none.
    Freed(Option<R>),
}

/// The finish of a delete, eviction or abort held in `DELETING` with word `w`
/// (`Store::finish_delete`): frees the payload with `free(offset, payload_len)`, then the slot.
///
/// The finish is claimed first, by a CAS `w → w | FINISHING` (a recoverer's word already carries
/// it): of a finisher and a recoverer that took the slot over from it, exactly one holds the word,
/// and the other frees nothing. The payload offset is then taken by a CAS to 0 from the offset
/// read after a fresh check of the word, so even two finishers of one word could not both free
/// it, and one paused past a takeover and the slot's reuse never takes the new object's block.
pub fn finish_slot<R>(
    dir: &Directory<'_>,
    index: usize,
    w: Word,
    free: impl FnOnce(u64, Option<u64>) -> R,
) -> Finished<R> {
    let slot = dir.slot(index);
    let mut cur = w;
    let fin = loop {
        let fin = Word {
            flags: cur.flags | flags::FINISHING,
            ..cur
        };
        if fin == cur {
            break fin;
        }
        match slot.cas_word(cur, fin) {
            Ok(()) => break fin,
            // A delete marked our eviction probe (DELETE_PENDING) meanwhile: still ours.
            Err(actual)
                if actual.gen == cur.gen
                    && actual.state == state::DELETING
                    && actual.owner == cur.owner =>
            {
                cur = actual
            }
            // Taken over by a reaper that judged us dead: the slot is its to finish.
            Err(_) => return Finished::TakenOver,
        }
    };
    crate::crash_point!("finish_delete.claimed");
    let size = slot.payload_len();
    // Forget the payload before freeing it: dying between the two leaks the block (the orphan
    // collector finds it) instead of letting a reaper free it a second time. Only while the slot
    // is still ours: a finisher paused after its claim for longer than its lease and grace was
    // taken over by a reaper, which finished the slot; it may hold another object now, whose
    // block we must not take. A fresh check, then a CAS from the offset read after it (a plain
    // swap would take whatever offset the slot names then).
    let mut offset = 0;
    for _ in 0..MAX_WORD_RETRIES {
        if slot.load_word() != fin {
            return Finished::TakenOver;
        }
        // Acquire: pairs with the Release publication of the creator's fields (the commit CAS
        // of `Directory::insert`), as the check above does, and with a stale finisher's Release
        // give-back below.
        let seen = slot.data_offset.load(Ordering::Acquire);
        // AcqRel: the Release half pairs with the Acquire loads of recoverers that check
        // whether the payload is still named (`resume_delete`, the orphan collector).
        if seen == 0
            || slot
                .data_offset
                .compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            offset = seen;
            break;
        }
        // Changed under us while the slot is ours: only a finisher we took the slot over from
        // does that (its CAS below, given back at once). Look again rather than give up: the
        // slot would stay DELETING, ours, with nobody left to finish it.
        crate::sync::spin_hint();
    }
    // Paused between the check and the CAS, and the slot reused with the same block: the CAS
    // took a live object's offset. Give it back and leave the slot to its owner.
    if slot.load_word() != fin {
        if offset != 0 {
            // Release: pairs with the Acquire loads of `data_offset` by the slot's readers
            // (`finish_slot`, the collector), as the creator's own store did.
            let _ =
                slot.data_offset
                    .compare_exchange(0, offset, Ordering::Release, Ordering::Relaxed);
        }
        return Finished::TakenOver;
    }
    crate::crash_point!("finish_delete.unnamed");
    // Once more right before the free: a finisher taken over after the CAS above left an unnamed
    // block, which the orphan collector frees and someone may own by now. Then it is not ours to
    // free (review follow-up R2); the slot is the taker's to free too.
    if slot.load_word() != fin {
        return Finished::TakenOver;
    }
    let freed = (offset != 0).then(|| free(offset, size));
    crate::crash_point!("finish_delete.payload_freed");
    dir.free_finished(index, fin);
    Finished::Freed(freed)
}

/// Withdraws a just-committed, unsealed object of `owner` (word `w`, from `Directory::insert`)
/// without touching its payload: one CAS `CREATING → FREE` (see below why not through
/// `DELETING`). For a creator that finds itself fenced right after its insert: the reaper may
/// have freed the block the slot names (it took the creator's intent before the slot existed)
/// and someone may hold it now, so the block is not the creator's to free, and the slot must not
/// stay behind naming it (it would block the id and, once aborted by whoever reaps the entry
/// next, free that someone's block). Returns whether it withdrew the object (false: the slot is
/// not that object any more, e.g. a reaper aborted it, which also finishes it). Wakes waiters
/// through `wake` if it withdrew.
pub fn withdraw_unsealed(
    dir: &Directory<'_>,
    index: usize,
    mut w: Word,
    wake: impl FnOnce(&Slot),
) -> bool {
    let slot = dir.slot(index);
    let (gen, owner) = (w.gen, w.owner);
    // Bounded: while the object stays, only a getter's WAITERS flag (one in all), a delete's
    // DELETE_PENDING and a helper's PENDING -> CREATING flip make the CAS fail.
    for _ in 0..MAX_WORD_RETRIES {
        if w.gen != gen || w.owner != owner || !matches!(w.state, state::CREATING | state::PENDING)
        {
            return false;
        }
        // Straight to FREE, one CAS: no intermediate DELETING word, which every recoverer would
        // take for an abort in progress and finish *with its payload* (the block may be the
        // intent's, already freed, and someone else's now), and no store after it (the slot may
        // be claimed again by then). A FREE word is empty whatever its commit record says.
        let free = Word {
            gen: w.gen,
            state: state::FREE,
            flags: 0,
            owner: NO_OWNER,
        };
        match slot.cas_word(w, free) {
            Ok(()) => {
                if w.flags & flags::WAITERS != 0 {
                    wake(slot);
                }
                return true;
            }
            Err(actual) => w = actual,
        }
    }
    false
}
