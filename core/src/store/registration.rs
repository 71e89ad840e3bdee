//! Registering a client in the client table, and reclaiming a registration left half done.
//!
//! # The protocol
//!
//! A connector takes the first `FREE` entry by one compare-and-swap `FREE(e) → CONNECTING(e + 1)`
//! ([`Claim::take`]): of several connectors racing for one entry exactly one wins, and the epoch
//! bump makes every word the entry had before stale. Until it publishes, the entry's identity
//! fields (pid, start time, host, heartbeat) may still be the previous occupant's, so nobody
//! judges a `CONNECTING` entry by them. The connector writes its fields, each group after a fresh
//! check that the word is still its `CONNECTING` word ([`Claim::still_ours`]), and publishes with a
//! second compare-and-swap `CONNECTING(e + 1) → ACTIVE(e + 1)` ([`Claim::publish`], Release: the
//! fields are visible to whoever loads the `ACTIVE` word with Acquire). A CAS, not a store: a
//! connector that finds its word changed lost the entry and tries the next one.
//!
//! A connector that dies inside `connect` leaves the entry `CONNECTING` for ever. A maintainer
//! that has seen the same `CONNECTING` word for longer than a lease plus the quarantine grace on
//! its own monotonic clock frees it ([`reclaim_if_stale`]): a CAS from exactly the word it watched,
//! so an entry published meanwhile (`ACTIVE`, same epoch) or claimed again (a later epoch) is
//! left alone. A connector that was only paused that long finds the word changed at its next
//! check and writes nothing more (the window between a check and the store after it is the one
//! every guarded write has: `docs/store.md`, "Pauses and fencing").
//!
//! # Where the decision lives
//!
//! [`register`] is `Store::connect`'s loop over the table and [`reclaim_if_stale`] the reaper's
//! judgement of one entry, both over the entry words with the clock passed in; `Store::connect`
//! and `Store::reclaim_stale_connecting` bind them to a region. The loom models
//! (`core/tests/loom.rs`) run them over entries on the heap.

use crate::store::clients::{intent, reap_flags, status, ClientEntry, EntryWord};
use crate::sync::Ordering;

/// What a connector writes into the entry it claimed, before publishing it.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub pid: u64,
    /// Process start time (0: unknown).
    pub start_time: u64,
    pub host_hash: u64,
    pub host_index: u64,
    pub attached_ms: u64,
    pub heartbeat_ms: u64,
    pub name: &'a str,
}

/// An entry claimed by a connector: `CONNECTING` at a fresh epoch, not yet published.
pub struct Claim<'a> {
    entry: &'a ClientEntry,
    connecting: EntryWord,
}

impl<'a> Claim<'a> {
    /// Claims `entry` if it is `FREE`: `FREE(e) → CONNECTING(e + 1)`. `None` if it is taken (or
    /// was taken between our look and our CAS).
    pub fn take(entry: &'a ClientEntry) -> Option<Claim<'a>> {
        let cur = entry.word.load(Ordering::Relaxed);
        let w = EntryWord::unpack(cur);
        if w.status != status::FREE {
            return None;
        }
        // Claim into CONNECTING: until our fields are written the entry names the previous
        // occupant's pid, start time and heartbeat, by which the reaper must not judge us.
        let connecting = EntryWord {
            epoch: w.epoch.wrapping_add(1),
            status: status::CONNECTING,
        };
        // AcqRel: the Acquire pairs with the Release that freed the entry (the owner's
        // `disconnect_inner`, the reaper's `DeadEntry::free`, a reclaim, or a claim given back),
        // making its clearing of the previous owner's state visible; the Release orders the claim
        // before our writes to the entry for a reclaimer that Acquire-loads it.
        entry
            .word
            .compare_exchange(cur, connecting.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        Some(Claim { entry, connecting })
    }

    /// The claimed entry.
    pub fn entry(&self) -> &'a ClientEntry {
        self.entry
    }

    /// Our `CONNECTING` word.
    pub fn word(&self) -> EntryWord {
        self.connecting
    }

    /// Whether the entry is still ours (unchanged since the claim): checked right before every
    /// group of writes to it.
    pub fn still_ours(&self) -> bool {
        // Acquire: pairs with the Release CAS of a reclaimer or of the next claimer.
        self.entry.word.load(Ordering::Acquire) == self.connecting.pack()
    }

    /// Makes `op_seq` ours: [`op_seq::fresh`] at our epoch (a previous occupant killed inside
    /// an operation may have left it odd, and one paused past its reap must not be able to write
    /// it again). Returns false, writing nothing, if the entry is no longer ours.
    ///
    /// A CAS from the value read after the check: a paused previous occupant's late guard may
    /// change it meanwhile (then we read again), and if we are reclaimed meanwhile, the next
    /// occupant's own value is never overwritten by ours.
    ///
    /// [`op_seq::fresh`]: crate::store::clients::op_seq::fresh
    pub fn own_op_seq(&self) -> bool {
        use crate::store::clients::op_seq;
        let fresh = op_seq::fresh(self.connecting.epoch);
        // Bounded: each lost CAS is a late write of a previous occupant (one per guard it was
        // paused in) or the entry's next occupant, which the check then sees.
        for _ in 0..8 {
            let seq = self.entry.op_seq.load(Ordering::Relaxed);
            if !self.still_ours() {
                return false;
            }
            if seq == fresh
                || self
                    .entry
                    .op_seq
                    .compare_exchange(seq, fresh, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// Writes our identity fields after one fresh check. Returns false, writing nothing, if the
    /// entry is no longer ours.
    pub fn write_identity(&self, id: &Identity<'_>) -> bool {
        if !self.still_ours() {
            return false;
        }
        let e = self.entry;
        // Relaxed, all: published by the Release CAS of `publish`.
        e.pid.store(id.pid, Ordering::Relaxed);
        e.start_time.store(id.start_time, Ordering::Relaxed);
        e.host_hash.store(id.host_hash, Ordering::Relaxed);
        e.host_index.store(id.host_index, Ordering::Relaxed);
        e.intent.store(intent::NONE, Ordering::Relaxed);
        e.reap_flags.store(reap_flags::TRACKED, Ordering::Relaxed);
        e.attached_ms.store(id.attached_ms, Ordering::Relaxed);
        e.heartbeat_ms.store(id.heartbeat_ms, Ordering::Relaxed);
        e.set_name(id.name);
        true
    }

    /// Publishes the entry: `CONNECTING(e) → ACTIVE(e)`. Returns the `ACTIVE` word, or `None` if
    /// the entry was reclaimed meanwhile (a stall longer than the stale-connect timeout; someone
    /// may own it now).
    pub fn publish(self) -> Option<EntryWord> {
        let active = EntryWord {
            status: status::ACTIVE,
            ..self.connecting
        };
        // Release: publishes the fields written before; pairs with the Acquire loads of the word
        // (`ClientEntry::load_word`: the reaper, fsck, `Store::clients`). A CAS, not a store: a
        // plain store would resurrect an entry that was reclaimed, and maybe claimed again, under
        // us (core review M1).
        self.entry
            .word
            .compare_exchange(
                self.connecting.pack(),
                active.pack(),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(active)
    }

    /// Gives the entry back unpublished (nothing was taken yet). A CAS: if it was reclaimed
    /// meanwhile, it is not ours to free.
    pub fn give_back(self) {
        let free = EntryWord {
            status: status::FREE,
            ..self.connecting
        };
        // Release: as in `disconnect_inner`; pairs with the AcqRel CAS of the entry's next
        // claimer in `Claim::take`.
        let _ = self.entry.word.compare_exchange(
            self.connecting.pack(),
            free.pack(),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

/// What `register`'s `prepare` step made of a claimed entry.
pub enum Prepared<'i, E> {
    /// Write this identity and publish.
    Ready(Identity<'i>),
    /// The entry is no longer ours (a fresh check failed): try the next one.
    Lost,
    /// Give the entry back and fail with this error.
    Failed(E),
}

/// Registers a client in a table of `capacity` entries (`entry(i)` is entry `i`): claims the
/// first free entry, runs `prepare` on it (the caller's own set-up: the reference table, the
/// high-water mark, the host index, each after a fresh [`Claim::still_ours`]), writes the identity
/// it returns and publishes. An entry lost on the way (reclaimed under a stalled connector) is
/// left to whoever has it now, and the next free one is tried. Returns the index and `ACTIVE`
/// word, or `None` if no entry could be had.
///
/// # Errors
/// What `prepare` fails with (after the entry was given back).
pub fn register<'t, 'i, E>(
    capacity: usize,
    entry: impl Fn(usize) -> &'t ClientEntry,
    mut prepare: impl FnMut(usize, &Claim<'t>) -> Prepared<'i, E>,
) -> Result<Option<(usize, EntryWord)>, E> {
    for i in 0..capacity {
        let Some(claim) = Claim::take(entry(i)) else {
            continue;
        };
        crate::crash_point!("connect.claimed");
        let id = match prepare(i, &claim) {
            Prepared::Ready(id) => id,
            Prepared::Lost => continue,
            Prepared::Failed(err) => {
                claim.give_back();
                return Err(err);
            }
        };
        if !claim.write_identity(&id) {
            continue;
        }
        crate::crash_point!("connect.fields_written");
        if let Some(active) = claim.publish() {
            return Ok(Some((i, active)));
        }
    }
    Ok(None)
}

/// One observer's memory of an entry seen `CONNECTING`: the word, and when (the observer's
/// monotonic ms) it first saw that word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectingSighting {
    pub word: u64,
    pub since_ms: u64,
}

/// The reaper's judgement of one entry left `CONNECTING`: `seen` is what this observer remembers
/// of it, `now_ms` its monotonic clock, `stale_ms` how long a connect may take at most. An entry
/// seen with the same `CONNECTING` word for longer than `stale_ms` is freed, by a CAS from
/// exactly that word. Returns what to remember for the next pass (`None`: not `CONNECTING`, or
/// reclaimed now).
pub fn reclaim_if_stale(
    entry: &ClientEntry,
    seen: Option<ConnectingSighting>,
    now_ms: u64,
    stale_ms: u64,
) -> Option<ConnectingSighting> {
    // Acquire: pairs with the AcqRel CAS that moved the entry to CONNECTING in `Claim::take` (or
    // the Release that freed it).
    let raw = entry.word.load(Ordering::Acquire);
    if EntryWord::unpack(raw).status != status::CONNECTING {
        return None;
    }
    let since_ms = match seen {
        Some(s) if s.word == raw => s.since_ms,
        _ => now_ms,
    };
    if now_ms.saturating_sub(since_ms) <= stale_ms {
        return Some(ConnectingSighting {
            word: raw,
            since_ms,
        });
    }
    let free = EntryWord {
        status: status::FREE,
        ..EntryWord::unpack(raw)
    };
    // Release: pairs with the next claimer's AcqRel CAS in `Claim::take`; the entry holds
    // nothing. From exactly the watched word: an entry published (ACTIVE) or claimed again (a
    // later epoch) since is not stale.
    let _ = entry
        .word
        .compare_exchange(raw, free.pack(), Ordering::Release, Ordering::Relaxed);
    None
}
