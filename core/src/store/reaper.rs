//! Finding dead clients and reclaiming everything they held.
//!
//! A client is dead when its process is gone (same host and pid namespace: `kill(pid, 0)` says
//! `ESRCH`, or the pid runs with another start time) or, when its process cannot be checked (another
//! host, another pid namespace, or a check that failed for another reason), when its heartbeat
//! has not changed for the lease **on this process's monotonic clock** ([`LeaseWatch`]: no two
//! hosts' clocks are ever compared). A client dead by lease is first **quarantined** (fenced, but
//! everything it held kept) and reaped only after a grace period of twice the lease, so that a
//! client that was merely paused does not find its zero-copy views reused the moment it resumes
//! (`docs/store.md`, "Pauses and fencing"). Reaping follows the crash protocol of `docs/store.md`:
//!
//! 0. **One maintainer at a time**: reaping, finishing orphaned deletes and collecting orphans
//!    run only under the region's maintenance lock ([`Store::begin_maintenance`]), held by a
//!    registered client (a server's, a runner's, or a Python client's). A maintainer that lost
//!    it (taken for dead, or silent for [`MAINTENANCE_LEASE`]) stops at its next check
//!    ([`Maintenance::held`]: every [`CHECK_EVERY`] slots and before every write to the victim's
//!    entry), leaving the entry `DEAD` for the new holder.
//! 1. **Fence**: CAS the entry from exactly the word it was judged dead by, `ACTIVE(epoch) →
//!    DEAD(epoch)`. A client that was only paused sees its word changed at its next call and
//!    fails with `Fenced`. A `DEAD` entry is a reap that was interrupted (its maintainer died):
//!    the next maintainer finishes it.
//! 2. **Unsealed objects**: every slot the client owns in `CREATING` (or a committed `PENDING`)
//!    is aborted and its payload freed; uncommitted `RESERVED`/`PENDING` slots are released. A
//!    lost CAS (a helper's flip, a waiter flag) is retried while the generation is unchanged.
//!    Its slots are looked for where they can be: for a client killed outside any operation,
//!    with no reap flag, only the slots its reference table names (every unsealed object of its
//!    own holds its creation reference there, and only operations own other slots); otherwise
//!    the whole directory, and the pass then sweeps for orphans too (`docs/store.md`, "What a
//!    reap costs").
//! 3. **In-flight allocation**: the intent record's allocation (taken out of the entry with a
//!    swap before step 2) is freed unless a committed slot of the client names it (then step 2
//!    freed it).
//! 4. **References**: the reference table is erased; objects whose delete was pending on those
//!    references are deleted now.
//! 5. **Deletes it had started**: a `DELETING` slot it owned is taken over and decided again
//!    ([`resume_delete`]): an abort, or a delete past its reference check, is finished; a delete
//!    or eviction that may not have checked yet re-runs the check (after step 4, so its own
//!    references do not count) and goes back to `SEALED` if the object is still referenced.
//! 6. The entry's `op_seq` is made even again and the entry becomes `FREE` (the next claim bumps
//!    the epoch).

use crate::sync::Ordering;
use std::collections::HashMap;
use std::time::Instant;

use crate::store::clients::{
    process_liveness, reap_flags, status, EntryWord, HostIdentity, Liveness,
};
use crate::store::directory::{
    abort_dead_owners_slot, begin_delete, flags, object_flags, resume_owned_delete, state,
    DeadSlot, Resumed,
};
use crate::store::error::{Result, StoreError};
use crate::store::fencing::{DeadEntry, TakenIntent};
use crate::store::handle::Store;
use crate::store::leader::LeaderId;
use crate::store::registration::{reclaim_if_stale, ConnectingSighting};

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
    /// Deletes or evictions it had started on objects still referenced: restored to `SEALED`
    /// (delete-pending for a delete).
    pub restored_objects: u64,
    /// Orphaned heap bytes (allocated by a client killed before it recorded them) collected
    /// after this reap pass; counted on the first report of a pass.
    pub orphan_bytes: u64,
    /// Whether its objects were looked for in the whole directory, rather than from its own
    /// entry and reference table alone: it died inside an operation (or a reap of it was
    /// interrupted), released an unsealed object of its own before sealing it, or maintained
    /// the region (see [`reap_flags`](crate::store::clients::reap_flags)).
    pub directory_scanned: bool,
    /// Whether it died inside an operation guard (`op_seq` odd): it may have left an orphaned
    /// block or a delete nobody's table names, so the pass also sweeps for those.
    pub died_in_operation: bool,
}

/// Why a client is considered dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathCause {
    /// Same host, and its process is gone.
    ProcessGone,
    /// Its process cannot be checked from here (another host or pid namespace, or the check
    /// failed), and its heartbeat has not changed for the lease on this observer's clock. Such a
    /// client is quarantined first (see [`quarantine_grace`]).
    LeaseExpired,
    /// Quarantined (dead by lease) for longer than the grace period: now reaped.
    QuarantineOver,
    /// Already `DEAD`: a reap that a maintainer started and did not finish.
    ReapInterrupted,
}

/// The region's maintenance lock, held by one registered client while it reaps and collects
/// (see [`Store::begin_maintenance`]); released on drop.
pub struct Maintenance<'a> {
    store: &'a Store,
    me: LeaderId,
    /// The lock was taken over from a holder that did not give it back (dead, or silent): it may
    /// have left work half done anywhere in the directory and heap.
    took_over: bool,
}

impl Maintenance<'_> {
    /// The holder.
    pub fn holder(&self) -> LeaderId {
        self.me
    }

    /// Whether the lock was taken over from a holder that did not give it back.
    pub fn took_over(&self) -> bool {
        self.took_over
    }

    /// Whether we still hold the lock and our client is still live (a maintainer judged dead and
    /// fenced, or whose lock was taken over, stops before its next step). Checked before every
    /// reap, every [`CHECK_EVERY`] slots of a scan, before each step of a reap that writes the
    /// victim's entry, and before freeing orphans. While held, it also shows we are alive: it
    /// bumps the lock's liveness counter (a same-host taker watches it, see
    /// [`Store::begin_maintenance`]) and our client's heartbeat (a taker on another host judges
    /// us by it), so a busy maintainer is never taken for a dead one.
    pub fn held(&self) -> bool {
        let c = self.store.control();
        // Acquire: pairs with the AcqRel CAS of a maintainer that took the lock over.
        let held = c.maintenance.load(Ordering::Acquire) == self.me.pack()
            && self.store.holder_alive(self.me);
        if held {
            // Relaxed: liveness only; takers compare values, nothing is published through them.
            c.maintenance_beat.fetch_add(1, Ordering::Relaxed);
            crate::store::heartbeat::bump(&self.store.client_entry(self.me.client).heartbeat_ms);
        }
        held
    }

    /// `Ok` while [`held`](Self::held); else [`StoreError::MaintenanceLost`].
    fn check(&self) -> Result<()> {
        if self.held() {
            Ok(())
        } else {
            Err(StoreError::MaintenanceLost)
        }
    }

    /// The owner tag under which the maintainer takes over slots.
    fn tag(&self) -> u16 {
        self.me.client as u16
    }
}

impl Drop for Maintenance<'_> {
    fn drop(&mut self) {
        let c = self.store.control();
        // Given back normally, all our work done: our own reap needs no scan for slots we took
        // over. Cleared before the lock goes, so that another thread of ours that takes it next
        // sets the flag after we cleared it; not if the lock was taken from us (we may have
        // stopped half way), and not once fenced (the entry may be someone else's). Acquire:
        // pairs with the AcqRel CAS of a maintainer that took the lock over.
        if c.maintenance.load(Ordering::Acquire) == self.me.pack()
            && self.store.holder_alive(self.me)
        {
            self.store
                .client_entry(self.me.client)
                .reap_flags
                .fetch_and(!reap_flags::MAINTAINING, Ordering::Relaxed);
        }
        // Release: pairs with the next maintainer's AcqRel claim CAS in `begin_maintenance`:
        // everything we did happens before its work.
        let _ =
            c.maintenance
                .compare_exchange(self.me.pack(), 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// How long a holder of the maintenance lock may go without showing it is alive before another
/// client takes the lock over: its liveness counter unchanged for this long on the taker's own
/// monotonic clock (a holder paused, stopped or deadlocked on any host), or, for a holder on
/// another host, its heartbeat this old. Fixed: never a caller's (possibly tiny) client lease. A
/// working maintainer shows it is alive at least every [`CHECK_EVERY`] slots.
pub const MAINTENANCE_LEASE: std::time::Duration = std::time::Duration::from_secs(3);

/// Slots between two checks of the maintenance lock in a directory scan.
const CHECK_EVERY: usize = 256;

/// Per-process memory of the maintenance lock as last seen held (lock word, liveness counter,
/// when first seen so), to tell a holder that stopped showing it is alive.
#[derive(Default)]
pub(crate) struct LockSeen(std::sync::Mutex<Option<(u64, u64, Instant)>>);

/// Per-process memory of client entries seen `CONNECTING`: a connector that stays there longer
/// than the lease died inside `connect` (which takes microseconds), and its entry is reclaimed.
#[derive(Default)]
pub(crate) struct ConnectingSeen(std::sync::Mutex<HashMap<usize, ConnectingSighting>>);

/// How long a client dead by lease stays quarantined before it is reaped: twice the lease, on
/// the maintainer's monotonic clock from the moment it first saw the entry quarantined (a
/// maintainer that takes over starts counting afresh, so the grace only ever gets longer).
pub fn quarantine_grace(lease_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(lease_ms.saturating_mul(2))
}

/// Per-process memory of every client entry's `(word, heartbeat)` and when this process last saw
/// it change, on its own monotonic clock. A lease is judged by "has the heartbeat changed since I
/// last looked", never by comparing the heartbeat's wall-clock value with ours, so clock skew and
/// steps between hosts do not matter. The price: a process that starts observing (a fresh
/// server, a takeover) needs a full lease of observation before it can declare anyone dead.
#[derive(Default)]
pub(crate) struct LeaseWatch(std::sync::Mutex<HashMap<usize, (u64, u64, Instant)>>);

impl LeaseWatch {
    /// How long entry `index` has shown `(word, beat)` to this process (zero on a change or a
    /// first sighting).
    pub(crate) fn unchanged_for(&self, index: usize, word: u64, beat: u64) -> std::time::Duration {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match seen.get(&index) {
            Some(&(w, b, since)) if w == word && b == beat => now.saturating_duration_since(since),
            _ => {
                seen.insert(index, (word, beat, now));
                std::time::Duration::ZERO
            }
        }
    }
}

impl Store {
    /// Whether client `index` is dead (see [`Store::dead_clients`]), judged by its fields as
    /// published with its word (loaded with Acquire); `me_identity` is this process's
    /// [`HostIdentity::liveness_hash`].
    pub(crate) fn judge(
        &self,
        index: usize,
        me_identity: u64,
        lease_ms: u64,
    ) -> Option<(EntryWord, DeathCause)> {
        let e = self.client_entry(index);
        // Acquire: pairs with the Release CAS that published the entry's fields.
        let raw = e.word.load(Ordering::Acquire);
        let w = EntryWord::unpack(raw);
        match w.status {
            status::DEAD => return Some((w, DeathCause::ReapInterrupted)),
            status::QUARANTINED => {
                let quiet = self.lease_watch().unchanged_for(index, raw, 0);
                return (quiet >= quarantine_grace(lease_ms))
                    .then_some((w, DeathCause::QuarantineOver));
            }
            status::ACTIVE => {}
            _ => return None,
        }
        if e.host_hash.load(Ordering::Relaxed) == me_identity {
            let pid = e.pid.load(Ordering::Relaxed) as u32;
            let start = e.start_time.load(Ordering::Relaxed);
            match process_liveness(pid, start) {
                Liveness::Gone => return Some((w, DeathCause::ProcessGone)),
                Liveness::Alive => return None,
                // EMFILE, hidepid, no start time recorded...: the lease decides.
                Liveness::Unknown => {}
            }
        }
        let beat = e.heartbeat_ms.load(Ordering::Relaxed);
        let quiet = self.lease_watch().unchanged_for(index, raw, beat);
        (quiet >= std::time::Duration::from_millis(lease_ms))
            .then_some((w, DeathCause::LeaseExpired))
    }

    fn dead_entries(&self, lease_ms: u64) -> Vec<(usize, EntryWord, DeathCause)> {
        let me = HostIdentity::current().liveness_hash();
        // SeqCst: pairs with the SeqCst `fetch_max` of `clients_hwm` in `connect`, as in
        // `Store::refcount`; a client registered after this load is not ours to judge (it is
        // alive).
        let hwm =
            (self.control().clients_hwm.load(Ordering::SeqCst) as usize).min(self.max_clients());
        (0..hwm)
            .filter_map(|i| self.judge(i, me, lease_ms).map(|(w, c)| (i, w, c)))
            .collect()
    }

    /// Clients that are dead: on this host (and pid namespace) by pid and start time; otherwise,
    /// or when the pid cannot be checked, by a heartbeat this process has seen unchanged for
    /// `lease_ms` (a first call only starts watching: a fresh observer needs a full lease);
    /// quarantined clients whose grace period is over; and `DEAD` entries whose reap was
    /// interrupted.
    pub fn dead_clients(&self, lease_ms: u64) -> Vec<(usize, DeathCause)> {
        self.dead_entries(lease_ms)
            .into_iter()
            .map(|(i, _, c)| (i, c))
            .collect()
    }

    /// Takes the region's maintenance lock for the registered client `me` (its index and epoch,
    /// as [`Client::maintainer_id`](crate::store::Client::maintainer_id) gives). Reaping,
    /// finishing orphaned deletes and collecting orphans run under it, so two processes never do
    /// them at once (a leader server and a Python `reap_dead`, or two servers that both believe
    /// they lead). A holder that is no longer registered, or that is dead by the reaper's own
    /// criteria (`lease_ms`), loses the lock to the next taker.
    ///
    /// # Errors
    /// [`StoreError::MaintenanceBusy`] while another live client holds it (or `me` itself, from
    /// another thread); [`StoreError::Fenced`] if `me` is not an active client.
    pub fn begin_maintenance(&self, me: LeaderId, lease_ms: u64) -> Result<Maintenance<'_>> {
        if !self.holder_alive(me) {
            return Err(StoreError::Fenced { epoch: me.epoch });
        }
        let lock = &self.control().maintenance;
        let host = HostIdentity::current().liveness_hash();
        let lease = lease_ms.max(MAINTENANCE_LEASE.as_millis() as u64);
        loop {
            // Acquire: pairs with the Release of the previous holder's unlock (or AcqRel take).
            let cur = lock.load(Ordering::Acquire);
            if let Some(h) = LeaderId::unpack(cur) {
                if h == me {
                    return Err(StoreError::MaintenanceBusy { holder: h.client });
                }
                let live = self.holder_alive(h)
                    && self.judge(h.client, host, lease).is_none()
                    && !self.lock_stalled(cur);
                if live {
                    return Err(StoreError::MaintenanceBusy { holder: h.client });
                }
            }
            // AcqRel: pairs with the previous holder's Release CAS in `Maintenance::drop` (or its
            // own AcqRel claim, for a lock taken over): Acquire orders our work after the previous
            // holder's; exactly one of several takers of `cur` wins.
            if lock
                .compare_exchange(cur, me.pack(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Before any work under the lock: were we killed in it, or did we lose it half
                // way, our reap must look for slots we took over in the whole directory. Relaxed:
                // read by our reaper only after our death, as the rest of our entry.
                self.client_entry(me.client)
                    .reap_flags
                    .fetch_or(reap_flags::MAINTAINING, Ordering::Relaxed);
                if cur != 0 {
                    // Its holder may have left work half done anywhere: a sweep is owed.
                    self.control().sweeps_owed.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(Maintenance {
                    store: self,
                    me,
                    took_over: cur != 0,
                });
            }
        }
    }

    /// Fences client `index`, judged dead by lease with entry word `judged` (`ACTIVE`), without
    /// reclaiming anything yet: `ACTIVE(epoch) → QUARANTINED(epoch)`. Its next operation fails
    /// with `Fenced`; its references keep counting and its allocations stay until
    /// [`Store::reap_client`] reaps it after [`quarantine_grace`]. Returns whether it was
    /// quarantined (false: the entry is no longer `judged`).
    pub fn quarantine_client(&self, index: usize, judged: EntryWord) -> bool {
        if judged.status != status::ACTIVE {
            return false;
        }
        let q = EntryWord {
            status: status::QUARANTINED,
            ..judged
        };
        // AcqRel: as the fence of `reap_client` (the change of word is what fences the client;
        // a copying reader that saw any later reuse sees this word): pairs with the SeqCst
        // fence and word reload in `Client::check_fenced` and `add_ref`.
        let ok = self
            .client_entry(index)
            .word
            .compare_exchange(judged.pack(), q.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if ok {
            // The grace period starts now, on our clock.
            let _ = self.lease_watch().unchanged_for(index, q.pack(), 0);
        }
        ok
    }

    /// Whether the maintenance lock, held with word `cur`, has shown no sign of life (its
    /// liveness counter, bumped by every [`Maintenance::held`]) for [`MAINTENANCE_LEASE`] on this
    /// process's monotonic clock: its holder is stopped, paused or stuck, even if its process
    /// exists.
    fn lock_stalled(&self, cur: u64) -> bool {
        // Relaxed: only compared with what we saw before.
        let beat = self.control().maintenance_beat.load(Ordering::Relaxed);
        let Ok(mut seen) = self.lock_seen().0.lock() else {
            return false;
        };
        match *seen {
            Some((word, b, since)) if word == cur && b == beat => {
                since.elapsed() > MAINTENANCE_LEASE
            }
            _ => {
                *seen = Some((cur, beat, Instant::now()));
                false
            }
        }
    }

    /// Fences client `index`, judged dead with entry word `judged` (`ACTIVE`, `QUARANTINED` once
    /// its grace is over, or `DEAD` for an interrupted reap), and reclaims what it held, as
    /// maintainer `m` (slots are taken over under its tag). Returns `None` if the entry is no
    /// longer `judged` (it was reaped, reclaimed or re-registered meanwhile: never reap a new
    /// client).
    ///
    /// Every step that writes the victim's entry or acts on a slot it owns first checks that we
    /// still hold the lock ([`Maintenance::held`], also every [`CHECK_EVERY`] slots) and that the
    /// entry is still exactly `DEAD` with the judged epoch: a maintainer that lost the lock (it
    /// was taken for dead while busy or paused) stops, leaving the entry `DEAD` for the new
    /// maintainer, instead of acting on an entry someone else finished and a new client reuses.
    ///
    /// # Errors
    /// [`StoreError::MaintenanceLost`] if the lock was lost before the reap was done (what is
    /// left is the next maintainer's); `Corrupt` if the allocator refuses a free (the rest of the
    /// reap still happens).
    pub fn reap_client(
        &self,
        m: &Maintenance<'_>,
        index: usize,
        judged: EntryWord,
    ) -> Result<Option<ReapReport>> {
        let reaper = m.tag();
        let e = self.client_entry(index);
        m.check()?;
        // 1. The fence: from exactly the judged word (see `DeadEntry::fence`).
        let Some(dead) = DeadEntry::fence(e, judged) else {
            return Ok(None);
        };
        // Flush mode: a dead writer of this host (and pid namespace) left its unsealed bytes in
        // this host's caches, which we can write back and drop before its blocks are reused.
        let same_host =
            e.host_hash.load(Ordering::Relaxed) == HostIdentity::current().liveness_hash();
        // Still ours to reap: we hold the lock and the entry is the judged one, still DEAD (a
        // maintainer that took the lock from us may have finished it, and a new client may have
        // claimed it). Checked right before every write to the entry and every slot we act on.
        let ours = || -> Result<bool> {
            m.check()?;
            Ok(dead.still_dead())
        };
        let mut report = ReapReport {
            client: index,
            pid: e.pid.load(Ordering::Relaxed) as u32,
            ..ReapReport::default()
        };
        let mut first_error = None;
        let dir = self.directory();
        let owner = index as u16;

        // The in-flight allocation (freed in step 3), taken out of the entry first: a maintainer
        // killed after this and before the free leaks the block (the orphan collector finds it)
        // instead of leaving the intent for the next one to free a second time — after step 2
        // freed it through its slot, or after step 3 freed it, and maybe after a reuse.
        if !ours()? {
            return Ok(None);
        }
        let taken = dead.take_intent();
        let (intent_offset, intent_size) = match taken {
            TakenIntent::Allocated { offset, size } => (offset, size),
            TakenIntent::None | TakenIntent::Unknown(_) => (0, 0),
        };
        let mut intent_covered = false;
        let mut started_deletes = Vec::new();
        // Where its slots can be (M11: a reap costs what the client held, not the directory).
        // Outside an operation guard a client owns no `RESERVED`/`PENDING` slot, no `DELETING`
        // one and no intent (creates, aborts, deletes, evictions and releases all run inside
        // one), and each unsealed object of its own is in its reference table (a create takes
        // its reference inside the guard) unless it released one before sealing it, which sets
        // a reap flag. So its table names every slot it owns, unless it died inside an
        // operation, its reap was interrupted (`DEAD`: the table may be half erased), it
        // maintained the region, or its entry is corrupt: then the whole directory is scanned.
        let op_seq = e.op_seq.load(Ordering::Relaxed);
        report.died_in_operation = op_seq % 2 == 1;
        report.directory_scanned = report.died_in_operation
            || judged.status == status::DEAD
            || taken != TakenIntent::None
            || e.reap_flags.load(Ordering::Relaxed) != reap_flags::TRACKED;
        let candidates: Box<dyn Iterator<Item = usize>> = if report.directory_scanned {
            Box::new(0..dir.capacity())
        } else {
            let mut held: Vec<usize> = self
                .ref_table(index)
                .held()
                .into_iter()
                .map(|(slot, _, _)| slot as usize)
                .filter(|&slot| slot < dir.capacity())
                .collect();
            held.sort_unstable();
            held.dedup();
            Box::new(held.into_iter())
        };
        for (n, i) in candidates.enumerate() {
            if n % CHECK_EVERY == CHECK_EVERY - 1 {
                m.check()?;
            }
            if dir.slot(i).load_word().owner != owner {
                continue;
            }
            if !ours()? {
                return Ok(None);
            }
            match abort_dead_owners_slot(&dir, i, owner) {
                DeadSlot::Skipped => {}
                DeadSlot::Started { data_offset } => {
                    intent_covered |= data_offset == intent_offset;
                    started_deletes.push(i);
                }
                DeadSlot::Aborting {
                    live,
                    deleting,
                    data_offset,
                } => {
                    crate::crash_point!("reap.aborting");
                    intent_covered |= data_offset == intent_offset;
                    if same_host {
                        self.write_back_and_drop(dir.slot(i));
                    }
                    if let Err(err) =
                        self.finish_delete(i, deleting, live.flags & flags::WAITERS != 0)
                    {
                        first_error = first_error.or(Some(err));
                    }
                    self.control()
                        .objects_aborted
                        .fetch_add(1, Ordering::Relaxed);
                    report.aborted_objects += 1;
                }
                DeadSlot::Released => report.released_slots += 1,
            }
        }

        crate::crash_point!("reap.objects_released");
        // 3. Its in-flight allocation (from the snapshot: the entry no longer names it).
        if !ours()? {
            return Ok(None);
        }
        if !intent_covered && intent_size > 0 {
            match self.allocator().free(intent_offset, intent_size) {
                Ok(()) => report.freed_intent_bytes = intent_size,
                // Already freed through a slot it had reached: nothing more to do.
                Err(crate::store::allocator::AllocError::NotAllocated { .. }) => {}
                Err(err) => first_error = first_error.or(Some(err.into())),
            }
        }
        crate::crash_point!("reap.intent_freed");

        // 4. Its references.
        if !ours()? {
            return Ok(None);
        }
        report.released_references = dead.release_references(
            self.coherence(),
            self.ref_table(index),
            |slot, g16| {
                self.entry_names_slot(slot as usize, g16)
                    .map(|w| (dir.slot(slot as usize), w))
            },
            reaper,
            |slot, gen| self.refcount(slot as usize, gen),
            |slot, w| {
                w.owner == owner
                    && slot.created.load(Ordering::Relaxed) & object_flags::DIES_WITH_CREATOR != 0
            },
            |slot, deleting| match self.complete_delete(slot as usize, deleting) {
                Ok(()) => report.deleted_objects += 1,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            },
        );

        // 5. The deletes, evictions and aborts it had started (its references are gone now, so
        // a re-run reference check counts only the others').
        for i in started_deletes {
            if !ours()? {
                return Ok(None);
            }
            match self.resume_deleting(i, owner, reaper) {
                Ok(Some(true)) => report.finished_deletes += 1,
                Ok(Some(false)) => report.restored_objects += 1,
                Ok(None) => {}
                Err(err) => first_error = first_error.or(Some(err)),
            }
        }

        crate::crash_point!("reap.deletes_resumed");
        // 6. Free the entry. A client killed inside an operation left `op_seq` odd: make it even,
        // or every later occupant would look permanently busy to the orphan collector.
        if !ours()? {
            return Ok(None);
        }
        if report.died_in_operation {
            // An event it was about to publish (a seal's, or a delete's on the creator's host) may
            // be lost: counted as an overflow on every ring, which makes each runner rescan the
            // directory (core review L4). Relaxed: a counter the consumer compares.
            for host in self.hosts() {
                host.overflows.fetch_add(1, Ordering::Relaxed);
            }
        }
        // A client judged dead by lease may have been alive, only paused: fenced between its
        // release's fence check and its operation guard, it can still drop the last reference
        // of a delete-pending object after our table scan and leave that delete to nobody (the
        // loom model `a_client_reaped_while_paused_never_keeps_a_freed_payload` shows the
        // interleaving). Such reaps are rare (another host's client, or a paused one): they owe
        // a sweep, which finds the object.
        let judged_by_lease = judged.status == status::QUARANTINED;
        if report.died_in_operation || report.directory_scanned || judged_by_lease {
            // Before the entry goes: once it is FREE, nothing else would say that this client
            // may have left an orphan or a delete no table names. Relaxed: read by the next
            // maintainer under the lock (Release/Acquire through the lock word).
            self.control().sweeps_owed.fetch_add(1, Ordering::Relaxed);
        }
        dead.free();
        self.control()
            .clients_reaped
            .fetch_add(1, Ordering::Relaxed);
        match first_error {
            Some(err) => Err(err),
            None => Ok(Some(report)),
        }
    }

    /// Decides the `DELETING` slot `index` left by the dead `owner` (see [`resume_delete`]), as
    /// `reaper`: `Some(true)` finished, `Some(false)` restored (still referenced), `None` not
    /// `owner`'s any more.
    fn resume_deleting(&self, index: usize, owner: u16, reaper: u16) -> Result<Option<bool>> {
        let slot = self.directory().slot(index);
        match resume_owned_delete(self.coherence(), slot, owner, reaper, |gen| {
            self.refcount(index, gen)
        }) {
            None => Ok(None),
            Some((w, Resumed::Finish(taken))) => {
                let wake = w.flags & flags::WAITERS != 0;
                let deleted = w.flags & flags::SEALED_ORIGIN != 0;
                let id = slot.read_id_raw();
                let host = slot.creator_host.load(Ordering::Relaxed);
                self.finish_delete(index, taken, wake)?;
                if deleted {
                    self.notify(
                        host,
                        crate::store::events::EventKind::Deleted,
                        index,
                        w.gen,
                        id,
                    );
                }
                Ok(Some(true))
            }
            // Kept (`resume_owned_delete` never returns `Changed`).
            Some(_) => Ok(Some(false)),
        }
    }

    /// Reclaims client entries left `CONNECTING` by a connector that died inside `connect`:
    /// one seen with the same word, by this process, for longer than `lease_ms` plus the
    /// quarantine grace (a connect takes microseconds). Its fields cannot tell (they may be the
    /// previous occupant's), so time does; a connector that was only paused that long finds its
    /// entry taken at its next check, writes nothing more to it, and connects again elsewhere.
    fn reclaim_stale_connecting(&self, lease_ms: u64) {
        let Ok(mut seen) = self.connecting_seen().0.lock() else {
            return;
        };
        // A lease and then the quarantine grace, as for a client dead by lease: a connector that
        // was only paused gets as long to notice (its next check before a write) as a paused
        // client gets before what it holds is reused.
        let stale = std::time::Duration::from_millis(lease_ms) + quarantine_grace(lease_ms);
        let stale_ms = stale.as_millis() as u64;
        let now_ms = crate::clock::monotonic_ms();
        // The whole table, not up to `clients_hwm`: a connector raises that after its claim.
        let still = (0..self.max_clients())
            .filter_map(|i| {
                let watched = reclaim_if_stale(
                    self.client_entry(i),
                    seen.get(&i).copied(),
                    now_ms,
                    stale_ms,
                );
                watched.map(|w| (i, w))
            })
            .collect();
        *seen = still;
    }

    /// Reaps every dead client (see [`Store::dead_clients`]) as maintainer `me`, then finishes
    /// deletes orphaned by dead reapers and collects orphaned heap blocks.
    ///
    /// # Errors
    /// [`StoreError::MaintenanceBusy`] if another live client maintains the region right now
    /// (nothing is done: it reaps); otherwise the first error of a reap (the others still run).
    pub fn reap_dead(&self, me: LeaderId, lease_ms: u64) -> Result<Vec<ReapReport>> {
        let m = self.begin_maintenance(me, lease_ms)?;
        let mut out = Vec::new();
        let mut first_error = None;
        let host = HostIdentity::current().liveness_hash();
        for (index, word, cause) in self.dead_entries(lease_ms) {
            if !m.held() {
                break;
            }
            if index == me.client {
                continue;
            }
            let (word, _) = match cause {
                // Dead by lease: quarantine first; reaped once the grace is over (at once for
                // a zero lease).
                DeathCause::LeaseExpired => {
                    if !self.quarantine_client(index, word) {
                        continue;
                    }
                    match self.judge(index, 0, lease_ms) {
                        Some(judged @ (_, DeathCause::QuarantineOver)) => judged,
                        _ => continue,
                    }
                }
                _ => {
                    // Judged again right before the fence: the scan's verdict may be a pass old.
                    if word.status == status::ACTIVE
                        && self.judge(index, host, lease_ms).map(|(w, _)| w) != Some(word)
                    {
                        continue;
                    }
                    (word, cause)
                }
            };
            match self.reap_client(&m, index, word) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        if m.held() {
            self.reclaim_stale_connecting(lease_ms);
        }
        // The sweeps cost the directory and heap, so they run only while one is owed: raised by
        // a reap whose victim may have left something no entry or table names (killed inside an
        // operation: an orphaned block, a delete-pending object whose last reference it had
        // dropped; or reaped with a scan), and by a takeover of the lock (a maintainer killed
        // or replaced half way). The debt lives in the region and is paid only by a complete
        // sweep, so a sweep cut short (lock lost, no quiet moment for the collector) is run
        // again by the next pass.
        let owed = self.control().sweeps_owed.load(Ordering::Relaxed);
        if owed != 0 && m.held() {
            // Deletes left half done by a reaper that died while acting for a dead client.
            let (finished, complete) = self.finish_orphaned_deletes_pass(&m);
            let orphans = self.collect_orphans_pass(&m, std::time::Duration::from_millis(200));
            if complete && orphans.is_some() && m.held() {
                let _ = self.control().sweeps_owed.compare_exchange(
                    owed,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            if let Some(first) = out.first_mut() {
                first.finished_deletes += finished;
                first.orphan_bytes = orphans.unwrap_or(0);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Decides deletes whose owner is no longer an active client (it died, or a reaper died while
    /// acting for it), as maintainer `m` (see [`resume_delete`]): finished, or restored when the
    /// object is still referenced; and runs deferred deletes (`DELETE_PENDING`) of objects no
    /// longer referenced. Returns how many were finished.
    pub fn finish_orphaned_deletes(&self, m: &Maintenance<'_>) -> u64 {
        self.finish_orphaned_deletes_pass(m).0
    }

    /// [`Store::finish_orphaned_deletes`], and whether the pass went through the whole directory
    /// (false: it stopped because the lock was lost).
    fn finish_orphaned_deletes_pass(&self, m: &Maintenance<'_>) -> (u64, bool) {
        let dir = self.directory();
        let mut finished = 0;
        for (i, slot) in dir.slots().iter().enumerate() {
            if i % CHECK_EVERY == CHECK_EVERY - 1 && !m.held() {
                return (finished, false);
            }
            let w = slot.load_word();
            // A deferred delete whose last reference went without anyone running it: the
            // holder's reaper died between erasing the references and deleting (the list of
            // what they named went with it). A delete like any other: whoever wins the CAS to
            // DELETING runs the reference check, so a live releaser racing us is harmless.
            if w.state == state::SEALED
                && w.flags & flags::DELETE_PENDING != 0
                && self.refcount(i, w.gen) == 0
            {
                let deleting = begin_delete(self.coherence(), slot, w, m.tag(), || {
                    self.refcount(i, w.gen)
                });
                if let Some(deleting) = deleting {
                    if self.complete_delete(i, deleting).is_ok() {
                        finished += 1;
                    }
                }
                continue;
            }
            if w.state != state::DELETING {
                continue;
            }
            let owner = usize::from(w.owner);
            // A quarantined owner keeps everything until its reap (docs/store.md, "Quarantine"):
            // it may be only paused, and resume its own delete; its reap finishes what it left.
            let holds = owner < self.max_clients()
                && status::holds_resources(self.client_entry(owner).load_word().status);
            if holds {
                continue;
            }
            if !m.held() {
                return (finished, false);
            }
            if let Ok(Some(true)) = self.resume_deleting(i, w.owner, m.tag()) {
                finished += 1;
            }
        }
        (finished, true)
    }
}
