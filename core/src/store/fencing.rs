//! Fencing: the two halves of the protocol by which a reaper takes over a client table entry
//! whose client it judged dead, while that client may in fact be alive (paused, or judged dead by
//! a lease across hosts).
//!
//! # The client's half ([`Registered`])
//!
//! A registered client owns its entry and its reference table only while the entry word is the
//! exact word it registered with (`ACTIVE` at its epoch). It checks the word right before every
//! write to its table or entry and writes nothing once the word changed ([`Registered::fenced`]).
//! Every table write that another party's decision depends on is followed by `fence(SeqCst)` and a
//! reload of the word: a word unchanged after the fence means a reaper that changes it later will
//! see the write (a reference it must account for); a changed word means the table may already be
//! erased, or be the next occupant's, and the client stops (the reference, if it landed, is erased
//! by the reap or by the next occupant's `connect`). A copy out of an object is valid only if
//! [`check_fenced`] passes after it: the reaper changes the word before anything it frees can be
//! reused.
//!
//! # The reaper's half ([`DeadEntry`])
//!
//! 1. **Fence**: CAS the word from exactly the word it judged dead, `ACTIVE(e)` (or
//!    `QUARANTINED(e)`) `→ DEAD(e)` ([`DeadEntry::fence`]). A reused entry (a new epoch) is another
//!    client and is left alone; of two reapers of one judged word exactly one wins, and the other
//!    does nothing (core review H2).
//! 2. Before each later step it checks that the word is still exactly `DEAD(e)`
//!    ([`DeadEntry::still_dead`]; the caller also checks its maintenance lock).
//! 3. **References** ([`DeadEntry::release_references`]): the table is read and erased, then
//!    `fence(SeqCst)`, then every object whose delete was pending on those references is deleted
//!    (the reference check of `begin_delete` runs after the erasure, so the dead client's own
//!    references do not count).
//! 4. **Free** ([`DeadEntry::free`]): `op_seq` made even, then CAS `DEAD(e) → FREE(e)`; the next
//!    claim bumps the epoch, so every word the dead client knew stays stale for ever.
//!
//! `Store::reap_client` runs these steps (with the unsealed objects, the intent and the deletes the
//! client had started in between); `Client` runs its table writes through [`Registered`]. The loom
//! models (`core/tests/loom.rs`) run both over entries and tables on the heap.

use crate::coherence::Coherence;
use crate::store::clients::{intent, op_seq, status, ClientEntry, EntryWord};
use crate::store::directory::{
    acquire_sealed, begin_delete, flags, state, withdraw_unsealed, Directory, InsertError,
    Inserted, Slot, Word,
};
use crate::store::error::{Result, StoreError};
use crate::store::object_id::ObjectId;
use crate::store::refs::RefTable;
use crate::sync::{fence, Ordering};

/// Fails with `Fenced` if the entry no longer holds `word` (the word its client registered with).
/// Call it **after** copying bytes out of an object: if it passes, every byte copied before it
/// was the object's.
///
/// # Errors
/// [`StoreError::Fenced`].
pub fn check_fenced(entry: &ClientEntry, word: u64) -> Result<()> {
    // SeqCst fence: orders our earlier loads of the payload before the load of our entry word;
    // pairs with the reaper's AcqRel CAS of the word (`DeadEntry::fence`, or the quarantine CAS),
    // which comes before anything it frees can be reused: a copy that saw a reused byte (written
    // after a Release free that follows that CAS) sees the changed word here.
    fence(Ordering::SeqCst);
    if entry.word.load(Ordering::Relaxed) != word {
        return Err(StoreError::Fenced {
            epoch: EntryWord::unpack(word).epoch,
        });
    }
    Ok(())
}

/// A registered client's own entry and reference table, written only while the entry still holds
/// the word the client registered with.
pub struct Registered<'a> {
    entry: &'a ClientEntry,
    word: u64,
    table: RefTable<'a>,
}

impl<'a> Registered<'a> {
    /// The client registered in `entry` with word `word`, whose reference table is `table`.
    pub fn new(entry: &'a ClientEntry, word: u64, table: RefTable<'a>) -> Registered<'a> {
        Registered { entry, word, table }
    }

    /// Whether the reaper declared this client dead (fenced it): its entry word is no longer the
    /// one it registered with.
    pub fn fenced(&self) -> bool {
        // Relaxed: a check before a write; the writes whose accounting matters are followed by a
        // SeqCst fence and a second check (`add_ref`, `after_drop`).
        self.entry.word.load(Ordering::Relaxed) != self.word
    }

    fn fenced_error(&self) -> StoreError {
        StoreError::Fenced {
            epoch: EntryWord::unpack(self.word).epoch,
        }
    }

    /// Records an allocation (`offset`, `size`) as the client's *intent* (`Client::create`), so
    /// that a reaper frees it if the client dies before a slot names it. Fails with `Fenced`
    /// (writing nothing) if the client was fenced: the entry's fields are not ours to write, and
    /// the block is not ours to free either (the orphan collector frees it; review follow-up R2).
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub fn record_intent(&self, offset: u64, size: u64) -> Result<()> {
        if self.fenced() {
            return Err(self.fenced_error());
        }
        self.entry.intent_offset.store(offset, Ordering::Relaxed);
        self.entry.intent_size.store(size, Ordering::Relaxed);
        // Release: pairs with the reaper's AcqRel swap in `DeadEntry::take_intent` and fsck's
        // Acquire load: whoever reads ALLOCATED also reads the offset and size stored above.
        self.entry
            .intent
            .store(intent::ALLOCATED, Ordering::Release);
        Ok(())
    }

    /// Clears the intent once a slot names the allocation (or it was freed). Fails with `Fenced`
    /// (writing nothing) if the client was fenced: the entry may be the next occupant's, whose
    /// intent this store would erase (review follow-up R2).
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub fn clear_intent(&self) -> Result<()> {
        // SeqCst fence: pairs with the fence in `DeadEntry::take_intent`, which comes before the
        // reaper's scan of the directory: either the scan sees the slot we committed before this
        // (and aborts it: the block is freed through the slot), or we see the fence below.
        fence(Ordering::SeqCst);
        if self.fenced() {
            return Err(self.fenced_error());
        }
        // Release: pairs with the reaper's AcqRel swap in `DeadEntry::take_intent`: a reaper that
        // reads NONE also sees what we did before (the slot that now names the allocation, or
        // its free).
        self.entry.intent.store(intent::NONE, Ordering::Release);
        Ok(())
    }

    /// [`check_fenced`] for this client.
    ///
    /// # Errors
    /// [`StoreError::Fenced`].
    pub fn check_fenced(&self) -> Result<()> {
        check_fenced(self.entry, self.word)
    }

    /// The first half of [`Registered::add_ref`]: the check before and the table store. The
    /// caller must pass a SeqCst fence next and then check [`Registered::fenced`]
    /// ([`Registered::acquire`] does, with the fence of `acquire_sealed`).
    ///
    /// # Errors
    /// `Fenced`; `References` (the table is full, or the count would overflow).
    pub fn add_ref_before_fence(&self, slot: u32, gen: u32) -> Result<u16> {
        if self.fenced() {
            return Err(self.fenced_error());
        }
        Ok(self.table.add(slot, gen)?)
    }

    /// Records one reference, checking the fence right before and right after the store: a word
    /// unchanged after our (fenced) store means the reaper will see the reference. Returns the new
    /// count.
    ///
    /// # Errors
    /// `Fenced`; `References`.
    pub fn add_ref(&self, slot: u32, gen: u32) -> Result<u16> {
        let c = self.add_ref_before_fence(slot, gen)?;
        // SeqCst fence: our table store comes before the reload of our word (pairs with the
        // reaper's AcqRel CAS of the word in `DeadEntry::fence`, which precedes its read of the
        // table, and with the SeqCst fence of `settle` before a deleter counts our table).
        fence(Ordering::SeqCst);
        if self.fenced() {
            return Err(self.fenced_error());
        }
        Ok(c)
    }

    /// A get's reference on the sealed object of `slot` (index `index`, word `w`): the getter half
    /// of the Dekker pair with deletion ([`acquire_sealed`]) with our table as the reference
    /// count, then the fence check. Its one fence orders our table store before both the reload
    /// of the slot word (the deleter's pair) and the reload of our entry word (the reaper's pair,
    /// as in `add_ref`). `Ok(Some(word))`: we hold a reference and the object is still sealed;
    /// `Ok(None)`: it is being deleted (the reference went again).
    ///
    /// # Errors
    /// `Fenced` (the reference, if it landed, is the reaper's to erase); `References`.
    pub fn acquire(
        &self,
        slot: &Slot,
        index: u32,
        w: Word,
        drop_ref: impl FnOnce(),
    ) -> Result<Option<Word>> {
        let acquired = acquire_sealed(
            slot,
            w,
            || self.add_ref_before_fence(index, w.gen).map(drop),
            drop_ref,
        )?;
        if self.fenced() {
            return Err(self.fenced_error());
        }
        Ok(acquired)
    }

    /// Drops one reference on `(slot, gen)`; if it was the last, runs `last` (the pending delete,
    /// see [`Registered::after_drop`]). Returns the remaining count, or `None` if we held none or
    /// are fenced (then nothing is written: the table is the reaper's, or another client's, now).
    pub fn drop_ref(&self, slot: u32, gen: u32, last: impl FnOnce()) -> Option<u16> {
        if self.fenced() {
            return None;
        }
        // A client paused here can be fenced by a lease reap that sees its `op_seq` even and
        // owes no sweep for it; the reap of a client judged by lease owes one anyway (see
        // `Store::reap_client`), because the reference this call is about to drop may be the
        // last of a delete-pending object.
        crate::crash_point!("release.checked");
        // In an operation from before the reference goes: a release killed between dropping the
        // last reference of a delete-pending object and running its delete leaves that delete to
        // nobody's table, and the odd `op_seq` tells the reaper to look for it (a sweep), while a
        // client killed outside any operation is reaped from its own table alone. Unfenced: the
        // fence in `after_drop` comes before any heap change of ours.
        let _op = OpGuard::begin_unfenced(self.entry, self.word);
        let left = self.table.remove(slot, gen)?;
        self.after_drop(left, last);
        Some(left)
    }

    /// Drops every reference on `(slot, gen)` at once (as `count` calls of `drop_ref` would, in
    /// one step: the count is read from the region and may be corrupt), then runs `last` as
    /// [`Registered::drop_ref`] does. Nothing is written if we are fenced.
    pub fn drop_all_refs(&self, slot: u32, gen: u32, last: impl FnOnce()) {
        if self.fenced() {
            return;
        }
        // As in `drop_ref`.
        let _op = OpGuard::begin_unfenced(self.entry, self.word);
        if self.table.remove_all(slot, gen).is_some() {
            self.after_drop(0, last);
        }
    }

    /// After our table lost references (`left` remain): the last one runs `last` (the caller's
    /// pending-delete check, `after_release`) inside an operation guard, unless we were fenced
    /// meanwhile (then the pending delete, if any, is the reaper's to run).
    fn after_drop(&self, left: u16, last: impl FnOnce()) {
        crate::crash_point!("release.removed");
        // SeqCst fence: as in `add_ref` (pairs with the reaper's AcqRel CAS of our word, which
        // precedes its read of our table).
        fence(Ordering::SeqCst);
        if self.fenced() {
            return;
        }
        if left == 0 {
            let _op = OpGuard::begin(self.entry, self.word);
            last();
        }
    }
}

/// Marks an operation that allocates or frees heap memory, or that leaves state no table of the
/// client names, as in flight in the client's `op_seq` (odd) until dropped (even again). Nested
/// guards are no-ops, so only the outermost ends it. Besides the orphan collector, the reaper
/// reads it: a client killed with `op_seq` even is reaped from its own table alone.
///
/// A fenced client writes nothing: the entry may be the next occupant's, whose `op_seq` parity
/// its reaper and the orphan collector rely on (review of the targeted reap, F6). Both ends are
/// a CAS from a value that carries our epoch ([`op_seq`]), so a client paused between reading
/// `op_seq` and writing it, for as long as its reap and the entry's reuse take, fails the CAS:
/// no window between a check and a write.
pub(crate) struct OpGuard<'a>(Option<(&'a ClientEntry, u64)>);

impl<'a> OpGuard<'a> {
    /// Begins an operation of the client registered in `entry` with word `word`.
    pub(crate) fn begin(entry: &'a ClientEntry, word: u64) -> OpGuard<'a> {
        let guard = Self::begin_unfenced(entry, word);
        if guard.0.is_some() {
            // SeqCst fence: pairs with the fences around the orphan collector's scan. If its scan
            // sees a heap change we are about to make, its later read of op_seq sees this odd
            // value (see `Store::collect_orphans`). A nested guard's outer one fenced already.
            fence(Ordering::SeqCst);
        }
        guard
    }

    /// [`OpGuard::begin`] without its fence, for a caller that passes a SeqCst fence of its own
    /// after this and before its first heap change (`drop_ref`: the one in `after_drop`), which
    /// pairs with the collector's fences just as well.
    ///
    /// A no-op guard if we are inside a guard already (odd), or `op_seq` is not ours (another
    /// epoch: we were fenced, and the entry is being reaped or has a new occupant).
    pub(crate) fn begin_unfenced(entry: &'a ClientEntry, word: u64) -> OpGuard<'a> {
        let v = entry.op_seq.load(Ordering::Relaxed);
        if op_seq::in_operation(v) || op_seq::epoch(v) != EntryWord::unpack(word).epoch {
            return OpGuard(None);
        }
        let started = op_seq::bump(v);
        match entry
            .op_seq
            .compare_exchange(v, started, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => OpGuard(Some((entry, started))),
            // Only a reaper (it makes an odd value even) or the next occupant (a new epoch)
            // writes our entry's op_seq besides us: either way we are fenced.
            Err(_) => OpGuard(None),
        }
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        if let Some((entry, started)) = self.0 {
            crate::crash_point!("guard.ending");
            // Release: pairs with the orphan collector's SeqCst loads of `op_seq` in
            // `op_snapshot` (fsck.rs): the slot or intent that now accounts for our allocation
            // is visible before the collector sees us idle. A failed CAS: fenced meanwhile (the
            // reaper made it even, and the entry may have a new occupant): nothing written.
            let _ = entry.op_seq.compare_exchange(
                started,
                op_seq::bump(started),
                Ordering::Release,
                Ordering::Relaxed,
            );
        }
    }
}

/// What [`DeadEntry::take_intent`] took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakenIntent {
    /// No allocation in flight.
    None,
    /// An allocation no slot may name yet.
    Allocated { offset: u64, size: u64 },
    /// A kind no build writes (a corrupt entry): nothing to free; the reap scans the directory.
    Unknown(u64),
}

/// Why [`publish_allocation`] did not publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unpublished {
    /// The client was fenced: nothing more of it was written, and its block is not its to free.
    Fenced,
    /// The insert failed; the intent was cleared and the block freed (`free`).
    Insert(InsertError),
}

/// `Client::create`'s steps from its allocation (`offset`, `size`) to a committed slot of
/// `owner` naming it: record the intent, run `before_insert`, insert `id` (`init` writes the
/// slot's fields), clear the intent. A fence check before every write; a client fenced after its
/// insert withdraws the slot without its payload (`withdraw_unsealed`: the reaper may have taken
/// the intent and freed the block before the slot named it, and someone may hold it now), waking
/// waiters with `wake`. A failed insert clears the intent before `free`s the block: dying in
/// between leaks it (the orphan collector frees it) instead of letting a reaper free it a second
/// time after someone reused it.
///
/// # Errors
/// [`Unpublished`].
#[allow(clippy::too_many_arguments)]
pub fn publish_allocation(
    reg: &Registered<'_>,
    dir: &Directory<'_>,
    id: &ObjectId,
    owner: u16,
    (offset, size): (u64, u64),
    before_insert: impl FnOnce(),
    init: impl FnOnce(&Slot),
    free: impl FnOnce(u64, u64),
    wake: impl FnOnce(&Slot),
) -> std::result::Result<Inserted, Unpublished> {
    reg.record_intent(offset, size)
        .map_err(|_| Unpublished::Fenced)?;
    crate::crash_point!("create.intent_recorded");
    before_insert();
    // Fenced while recording (a pause past the lease and grace): the reaper may have taken the
    // intent and freed the block; a slot must not name it.
    if reg.fenced() {
        return Err(Unpublished::Fenced);
    }
    let inserted = match dir.insert(id, owner, init) {
        Ok(i) => i,
        Err(err) => {
            // Fenced meanwhile: the reaper took (and freed) our intent, and the entry may be
            // someone else's; neither is ours to touch (review follow-up R2).
            reg.clear_intent().map_err(|_| Unpublished::Fenced)?;
            free(offset, size);
            return Err(Unpublished::Insert(err));
        }
    };
    crate::crash_point!("create.inserted");
    // The slot names the allocation now; the intent may go.
    if reg.clear_intent().is_err() {
        withdraw_unsealed(dir, inserted.index, inserted.word, wake);
        return Err(Unpublished::Fenced);
    }
    crate::crash_point!("create.intent_cleared");
    Ok(inserted)
}

/// A client entry a reaper fenced: `DEAD` at the epoch it was judged dead with.
pub struct DeadEntry<'a> {
    entry: &'a ClientEntry,
    dead: EntryWord,
}

impl<'a> DeadEntry<'a> {
    /// Fences `entry`, judged dead with word `judged`: `ACTIVE(e)` or `QUARANTINED(e)` `→ DEAD(e)`
    /// by a CAS from exactly `judged`; a `DEAD(e)` judgement (an interrupted reap) is taken as it
    /// is if the word still shows it. `None` if the entry is no longer `judged` (reaped,
    /// reclaimed or re-registered meanwhile: never reap a new client), or `judged` is no state a
    /// reap starts from.
    pub fn fence(entry: &'a ClientEntry, judged: EntryWord) -> Option<DeadEntry<'a>> {
        let dead = EntryWord {
            status: status::DEAD,
            ..judged
        };
        match judged.status {
            // AcqRel: pairs with the client's own Release/AcqRel updates of its word (`connect`)
            // and with the SeqCst fence and word reload in `check_fenced` and
            // `Registered::add_ref`/`after_drop`: Acquire makes the client's last writes (slots,
            // table, intent) visible to us; the change of word is what fences the client. From
            // exactly the judged word: a reused entry (new epoch) is another client.
            status::ACTIVE | status::QUARANTINED => {
                entry
                    .word
                    .compare_exchange(
                        judged.pack(),
                        dead.pack(),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .ok()?;
                crate::crash_point!("reap.fenced");
            }
            status::DEAD => {
                // Acquire: as above, for the interrupted reaper's writes (pairs with its AcqRel
                // CAS to DEAD).
                if entry.word.load(Ordering::Acquire) != dead.pack() {
                    return None;
                }
            }
            _ => return None,
        }
        Some(DeadEntry { entry, dead })
    }

    /// The `DEAD` word.
    pub fn word(&self) -> EntryWord {
        self.dead
    }

    /// The fenced entry.
    pub fn entry(&self) -> &'a ClientEntry {
        self.entry
    }

    /// Whether the entry is still exactly `DEAD` at the judged epoch: a reaper that lost its
    /// maintenance lock may find the reap finished by another, and the entry claimed by a new
    /// client. Checked right before every step that writes the entry or acts for it.
    pub fn still_dead(&self) -> bool {
        // Acquire: pairs with the Release CAS to FREE of a maintainer that finished the reap
        // before us (and with the AcqRel CAS to DEAD of the one that started it).
        self.entry.word.load(Ordering::Acquire) == self.dead.pack()
    }

    /// The dead client's in-flight allocation (`Store::reap_client` step 3), taken out of the
    /// entry first. A maintainer killed after this and before the free leaks the block (the
    /// orphan collector finds it) instead of leaving the intent for the next one to free a second
    /// time (after a slot that reached it freed it, and maybe after a reuse). The caller frees it
    /// unless a slot of the client names it.
    pub fn take_intent(&self) -> TakenIntent {
        let e = self.entry;
        // SeqCst fence: pairs with the fence in `Registered::clear_intent` (after the creator's
        // insert, before its reload of the word): our fence CAS came before it, our swap and the
        // scan of the directory after; either the scan sees the committed slot, or the creator
        // sees the fence (and withdraws the slot). The loom model of steps 2 and 3 fails
        // without either fence.
        fence(Ordering::SeqCst);
        // AcqRel: the Acquire half pairs with the client's Release store of ALLOCATED in
        // `Registered::record_intent` (its offset and size); the Release half orders this take
        // before our frees.
        let kind = e.intent.swap(intent::NONE, Ordering::AcqRel);
        crate::crash_point!("reap.intent_taken");
        match kind {
            intent::NONE => TakenIntent::None,
            intent::ALLOCATED => TakenIntent::Allocated {
                offset: e.intent_offset.load(Ordering::Relaxed),
                size: e.intent_size.load(Ordering::Relaxed),
            },
            other => TakenIntent::Unknown(other),
        }
    }

    /// The dead client's references (`table`, its reference table): erased, then every object
    /// whose delete was pending on them is deleted. `names_slot(slot, g16)` gives the slot and
    /// its current word if a table entry's generation still names the slot's object; `refcount`
    /// sums the references on `(slot, gen)` of every live client (run by `begin_delete` after the
    /// erasure, so ours do not count); `dies_with_victim(slot, word)` says whether a sealed object
    /// it held dies with it (created by it with `CreateInfo::dies_with_creator`): deleted now as
    /// well, deferred while others hold it; `complete(slot, deleting)` finishes a delete
    /// `begin_delete` handed to us (as maintainer `reaper`). Returns the references released.
    #[allow(clippy::too_many_arguments)]
    pub fn release_references<'s>(
        &self,
        c: &Coherence,
        table: RefTable<'_>,
        names_slot: impl Fn(u32, u16) -> Option<(&'s Slot, Word)>,
        reaper: u16,
        refcount: impl Fn(u32, u32) -> u32,
        dies_with_victim: impl Fn(&Slot, Word) -> bool,
        mut complete: impl FnMut(u32, Word),
    ) -> u64 {
        let held = table.held();
        table.clear();
        crate::crash_point!("reap.references_cleared");
        // SeqCst fence: as in `after_release` — the erased references come before our reads of
        // the slot words; pairs with `begin_delete`'s fence after it sets DELETE_PENDING (one of
        // us sees the other).
        fence(Ordering::SeqCst);
        let mut released = 0;
        for (slot_index, g16, count) in held {
            released += u64::from(count);
            let Some((slot, w)) = names_slot(slot_index, g16) else {
                continue;
            };
            if w.state == state::SEALED
                && (w.flags & flags::DELETE_PENDING != 0 || dies_with_victim(slot, w))
            {
                if let Some(deleting) =
                    begin_delete(c, slot, w, reaper, || refcount(slot_index, w.gen))
                {
                    complete(slot_index, deleting);
                }
            }
        }
        released
    }

    /// Frees the entry: `op_seq` made even (a client killed inside an operation left it odd, and
    /// every later occupant would look permanently busy to the orphan collector), then CAS
    /// `DEAD(e) → FREE(e)` (the next claim bumps the epoch). A CAS: an entry another maintainer
    /// finished, and a new client claimed, is left alone.
    pub fn free(self) {
        let e = self.entry;
        let seq = e.op_seq.load(Ordering::Relaxed);
        if op_seq::in_operation(seq) {
            // A CAS: the fenced client's own guard may end meanwhile, making it even just as
            // this would (the entry is DEAD, so nobody else writes it).
            let _ = e.op_seq.compare_exchange(
                seq,
                op_seq::bump(seq),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let free = EntryWord {
            status: status::FREE,
            ..self.dead
        };
        // Release: pairs with the AcqRel CAS of the entry's next claimer in `Claim::take`:
        // everything the reap did happens before the entry can be claimed again.
        let _ = e.word.compare_exchange(
            self.dead.pack(),
            free.pack(),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}
