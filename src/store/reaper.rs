//! Finding dead clients and reclaiming everything they held.
//!
//! A client is dead when its process is gone (same host: the pid no longer runs, or runs with
//! another start time) or, on another host, when its heartbeat is older than the lease. Reaping
//! follows the crash protocol of `docs/store.md`:
//!
//! 1. **Fence**: CAS the entry `ACTIVE(epoch) → DEAD(epoch)`. A client that was only paused sees
//!    its word changed at its next call and fails with `Fenced`; it never acts again.
//! 2. **Unsealed objects**: every slot the client owns in `CREATING` (or a committed `PENDING`)
//!    is aborted and its payload freed; uncommitted `RESERVED`/`PENDING` slots are released.
//! 3. **In-flight allocation**: the intent record's allocation is freed unless a committed slot of
//!    the client names it (then step 2 freed it).
//! 4. **References**: the reference table is erased; objects whose delete was pending on those
//!    references are deleted now.
//! 5. The entry becomes `FREE` (the next claim bumps the epoch).

use std::sync::atomic::Ordering;

use crate::store::clients::{intent, process_alive, status, EntryWord, HostIdentity};
use crate::store::clock::unix_ms;
use crate::store::directory::{begin_delete, flags, state, Word};
use crate::store::error::Result;
use crate::store::handle::Store;

/// What reaping one client reclaimed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub client: usize,
    pub pid: u32,
    pub aborted_objects: u64,
    pub released_slots: u64,
    pub freed_intent_bytes: u64,
    pub released_references: u64,
    pub deleted_objects: u64,
    /// Deletes it had started and not finished.
    pub finished_deletes: u64,
    /// Orphaned heap bytes (allocated by a client killed before it recorded them) collected
    /// after this reap pass; counted on the first report of a pass.
    pub orphan_bytes: u64,
}

/// Why a client is considered dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathCause {
    /// Same host, and its process is gone.
    ProcessGone,
    /// Another host, and its heartbeat is older than the lease.
    LeaseExpired,
}

impl Store {
    /// Active clients that are dead: on this host by pid and start time, elsewhere by a heartbeat
    /// older than `lease_ms`.
    pub fn dead_clients(&self, lease_ms: u64) -> Vec<(usize, DeathCause)> {
        let me = HostIdentity::current().hash();
        let now = unix_ms();
        let hwm =
            (self.control().clients_hwm.load(Ordering::SeqCst) as usize).min(self.max_clients());
        (0..hwm)
            .filter_map(|i| {
                let e = self.client_entry(i);
                if e.load_word().status != status::ACTIVE {
                    return None;
                }
                if e.host_hash.load(Ordering::Relaxed) == me {
                    let pid = e.pid.load(Ordering::Relaxed) as u32;
                    let start = e.start_time.load(Ordering::Relaxed);
                    (!process_alive(pid, start)).then_some((i, DeathCause::ProcessGone))
                } else {
                    let beat = e.heartbeat_ms.load(Ordering::Relaxed);
                    (now.saturating_sub(beat) > lease_ms).then_some((i, DeathCause::LeaseExpired))
                }
            })
            .collect()
    }

    /// Fences client `index` and reclaims what it held. Returns `None` if it was not active (or
    /// someone else is reaping it).
    ///
    /// # Errors
    /// `Corrupt` if the allocator refuses a free (the rest of the reap still happens).
    pub fn reap_client(&self, index: usize) -> Result<Option<ReapReport>> {
        let e = self.client_entry(index);
        let cur = e.word.load(Ordering::Acquire);
        let w = EntryWord::unpack(cur);
        if w.status != status::ACTIVE {
            return Ok(None);
        }
        let dead = EntryWord {
            status: status::DEAD,
            ..w
        };
        // AcqRel: Acquire makes the client's last writes (slots, table, intent) visible to us;
        // the change of word is what fences the client.
        if e.word
            .compare_exchange(cur, dead.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return Ok(None);
        }
        let mut report = ReapReport {
            client: index,
            pid: e.pid.load(Ordering::Relaxed) as u32,
            ..ReapReport::default()
        };
        let mut first_error = None;
        let dir = self.directory();
        let owner = index as u16;

        // 2. Its unsealed objects.
        let intent_kind = e.intent.load(Ordering::Acquire);
        let intent_offset = e.intent_offset.load(Ordering::Relaxed);
        let intent_size = e.intent_size.load(Ordering::Relaxed);
        let mut intent_covered = false;
        for (i, slot) in dir.slots().iter().enumerate() {
            let sw = slot.load_word();
            if sw.owner != owner {
                continue;
            }
            if sw.state == state::DELETING {
                // A delete (or abort, or eviction) it had started: finish it. Its payload was
                // freed already if the slot no longer names one (see `finish_delete`).
                let was_abort = slot.data_offset.load(Ordering::Acquire) == intent_offset;
                intent_covered |= was_abort;
                match self.finish_delete(i, sw, sw.flags & flags::WAITERS != 0) {
                    Ok(()) => report.finished_deletes += 1,
                    Err(err) => first_error = first_error.or(Some(err)),
                }
                continue;
            }
            if !matches!(sw.state, state::RESERVED | state::PENDING | state::CREATING) {
                continue;
            }
            let offset = slot.data_offset.load(Ordering::Relaxed);
            if let Some(live) = dir.live_word(i) {
                // Committed: abort it like its creator would.
                let deleting = Word {
                    state: state::DELETING,
                    flags: 0,
                    ..live
                };
                if slot.cas_word(live, deleting).is_ok() {
                    intent_covered |= offset == intent_offset;
                    match self.finish_delete(i, deleting, live.flags & flags::WAITERS != 0) {
                        Ok(()) => {}
                        Err(err) => first_error = first_error.or(Some(err)),
                    }
                    self.control()
                        .objects_aborted
                        .fetch_add(1, Ordering::Relaxed);
                    report.aborted_objects += 1;
                }
            } else if slot
                .cas_word(
                    sw,
                    Word {
                        state: state::DELETING,
                        flags: 0,
                        ..sw
                    },
                )
                .is_ok()
            {
                // Claimed but never committed: only the slot; the payload is the intent's.
                dir.free_slot(i, sw);
                report.released_slots += 1;
            }
        }

        // 3. Its in-flight allocation.
        if intent_kind == intent::ALLOCATED && !intent_covered && intent_size > 0 {
            match self.allocator().free(intent_offset, intent_size) {
                Ok(()) => report.freed_intent_bytes = intent_size,
                // Already freed through a slot it had reached: nothing more to do.
                Err(crate::store::allocator::AllocError::NotAllocated { .. }) => {}
                Err(err) => first_error = first_error.or(Some(err.into())),
            }
        }
        e.intent.store(intent::NONE, Ordering::Relaxed);

        // 4. Its references.
        let refs = self.ref_table(index);
        let held = refs.held();
        refs.clear();
        for (slot_index, g16, count) in held {
            report.released_references += u64::from(count);
            let Some(w) = self.entry_names_slot(slot_index as usize, g16) else {
                continue;
            };
            if w.state == state::SEALED && w.flags & flags::DELETE_PENDING != 0 {
                let slot = dir.slot(slot_index as usize);
                if let Some(deleting) =
                    begin_delete(slot, w, owner, || self.refcount(slot_index as usize, w.gen))
                {
                    match self.complete_delete(slot_index as usize, deleting) {
                        Ok(()) => report.deleted_objects += 1,
                        Err(err) => first_error = first_error.or(Some(err)),
                    }
                }
            }
        }

        // 5. Free the entry.
        let free = EntryWord {
            status: status::FREE,
            ..dead
        };
        // Release: everything above happens before the entry can be claimed again.
        e.word.store(free.pack(), Ordering::Release);
        self.control()
            .clients_reaped
            .fetch_add(1, Ordering::Relaxed);
        match first_error {
            Some(err) => Err(err),
            None => Ok(Some(report)),
        }
    }

    /// Reaps every dead client (see [`Store::dead_clients`]).
    ///
    /// # Errors
    /// The first error of a reap; the others still run.
    pub fn reap_dead(&self, lease_ms: u64) -> Result<Vec<ReapReport>> {
        let mut out = Vec::new();
        let mut first_error = None;
        for (index, _) in self.dead_clients(lease_ms) {
            match self.reap_client(index) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if let Some(first) = out.first_mut() {
            // Deletes left half done by a reaper that died while acting for a dead client.
            first.finished_deletes += self.finish_orphaned_deletes();
            first.orphan_bytes = self.collect_orphans(std::time::Duration::from_millis(200));
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
