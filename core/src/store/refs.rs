//! Per-client reference tables: who holds which object.
//!
//! Plasma keeps one reference count per object inside its single store process. A store shared by
//! many processes on many hosts cannot: a process killed between "count + 1" and "remember that I
//! hold it" would leave a count nobody can ever give back. Instead each client owns a table in the
//! region recording, per directory slot, how many references *it* holds. The table is written only
//! by its client; anyone may read it. An object's reference count is the sum over live clients,
//! computed when it matters (delete, eviction, spillability, `ls`). A dead client's references
//! vanish by erasing its table — there is nothing to reconcile.
//!
//! Entries are one word, `(slot + 1):32 | gen:16 | count:16` (the low 16 bits of the slot's
//! generation, which cannot wrap while the reference pins the slot). The table is open-addressed
//! by slot index with linear probing; a probe stops at an empty word. An entry whose count drops to
//! zero stays as a tombstone that the next insert of that slot reuses; tombstones followed by an
//! empty word are cleared, which only ever shortens probe chains that readers would end anyway.
//!
//! # Ordering against deletion (a Dekker pair)
//!
//! A getter stores its count (`+1`), issues `fence(SeqCst)`, then reloads the slot's state word;
//! a deleter CASes the slot to `DELETING`, issues `fence(SeqCst)`, then reads every client's entry.
//! With both fences, at least one side sees the other's write: either the getter sees `DELETING`
//! (and backs out) or the deleter sees the reference (and defers the delete). The fences carry the
//! whole ordering: two SeqCst fences order a Relaxed store before one and a Relaxed load after the
//! other, so the table's stores and the deleter's loads are Relaxed (core review L12: a SeqCst
//! store is itself a full barrier, which the get and release hot paths paid on top of the fence).
//! Every writer of a table entry that another party's decision depends on fences after it: `add`
//! in `Registered::add_ref`, `remove`/`remove_all` in `Registered::after_drop`
//! (`fencing.rs`), `clear` in the reaper's `DeadEntry::release_references`; and every reader that
//! decides fences before it (`directory::settle`, `begin_delete`, `after_release`, the reaper's
//! `resume_delete`).

use crate::sync::{AtomicU64, Ordering};

/// Why a reference could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("this client holds too many distinct objects ({capacity}); release some first")]
    TableFull { capacity: usize },
    #[error("this client holds an object 65535 times; release it first")]
    CountOverflow,
}

const fn pack(slot: u32, gen: u32, count: u16) -> u64 {
    ((slot as u64) + 1) << 32 | ((gen & 0xffff) as u64) << 16 | count as u64
}

fn key_of(w: u64) -> u64 {
    w >> 16
}

fn count_of(w: u64) -> u16 {
    w as u16
}

/// One client's table: a power-of-two array of words.
pub struct RefTable<'a> {
    entries: &'a [AtomicU64],
    mask: usize,
}

impl<'a> RefTable<'a> {
    pub fn new(entries: &'a [AtomicU64]) -> RefTable<'a> {
        assert!(entries.len().is_power_of_two());
        RefTable {
            entries,
            mask: entries.len() - 1,
        }
    }

    fn start(&self, slot: u32) -> usize {
        (slot as usize).wrapping_mul(0x9e37_79b9) & self.mask
    }

    /// References held on `(slot, gen)` by this table's client. Usable by anyone.
    pub fn count(&self, slot: u32, gen: u32) -> u16 {
        let key = key_of(pack(slot, gen, 0));
        let mut i = self.start(slot);
        for _ in 0..self.entries.len() {
            // Relaxed: a deleter's decision is ordered by its SeqCst fence before this call (the
            // second half of the Dekker pair, see module docs); other readers (statistics, the
            // owner itself) need no ordering.
            let w = self.entries[i].load(Ordering::Relaxed);
            if w == 0 {
                return 0;
            }
            if key_of(w) == key && count_of(w) > 0 {
                return count_of(w);
            }
            i = (i + 1) & self.mask;
        }
        0
    }

    /// Adds one reference (owner only). Returns the new count.
    ///
    /// # Errors
    /// [`RefError::TableFull`] / [`RefError::CountOverflow`]; the table is unchanged then.
    pub fn add(&self, slot: u32, gen: u32) -> Result<u16, RefError> {
        let key = key_of(pack(slot, gen, 0));
        let mut i = self.start(slot);
        let mut reuse: Option<usize> = None;
        for _ in 0..self.entries.len() {
            let w = self.entries[i].load(Ordering::Relaxed);
            if w == 0 {
                break;
            }
            if key_of(w) == key && count_of(w) > 0 {
                let c = count_of(w).checked_add(1).ok_or(RefError::CountOverflow)?;
                // Relaxed: the caller's SeqCst fence after it orders it (module docs).
                self.entries[i].store(pack(slot, gen, c), Ordering::Relaxed);
                return Ok(c);
            }
            if count_of(w) == 0 && reuse.is_none() {
                reuse = Some(i);
            }
            i = (i + 1) & self.mask;
        }
        let at = match reuse {
            Some(r) => r,
            None if self.entries[i].load(Ordering::Relaxed) == 0 => i,
            None => {
                self.sweep_tombstones();
                return self.add_after_sweep(slot, gen);
            }
        };
        // Relaxed: first half of the Dekker pair, ordered by the caller's SeqCst fence before it
        // re-checks the slot (module docs).
        self.entries[at].store(pack(slot, gen, 1), Ordering::Relaxed);
        Ok(1)
    }

    fn add_after_sweep(&self, slot: u32, gen: u32) -> Result<u16, RefError> {
        let mut i = self.start(slot);
        for _ in 0..self.entries.len() {
            let w = self.entries[i].load(Ordering::Relaxed);
            if w == 0 || count_of(w) == 0 {
                // Relaxed: as in `add`.
                self.entries[i].store(pack(slot, gen, 1), Ordering::Relaxed);
                return Ok(1);
            }
            i = (i + 1) & self.mask;
        }
        Err(RefError::TableFull {
            capacity: self.entries.len(),
        })
    }

    /// Drops one reference (owner only). Returns the remaining count, or `None` if this client
    /// held none.
    pub fn remove(&self, slot: u32, gen: u32) -> Option<u16> {
        let key = key_of(pack(slot, gen, 0));
        let mut i = self.start(slot);
        for _ in 0..self.entries.len() {
            let w = self.entries[i].load(Ordering::Relaxed);
            if w == 0 {
                return None;
            }
            if key_of(w) == key && count_of(w) > 0 {
                let c = count_of(w) - 1;
                // Relaxed: ordered by the caller's SeqCst fence after it
                // (`Registered::after_drop`), before it looks for a pending delete (module docs).
                self.entries[i].store(pack(slot, gen, c), Ordering::Relaxed);
                if c == 0 {
                    self.trim_before_empty(i);
                }
                return Some(c);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Drops every reference on `(slot, gen)` at once (owner only): one store however large the
    /// count, so a corrupt count costs nothing. Returns the count dropped, or `None` if this client
    /// held none.
    pub fn remove_all(&self, slot: u32, gen: u32) -> Option<u16> {
        let key = key_of(pack(slot, gen, 0));
        let mut i = self.start(slot);
        for _ in 0..self.entries.len() {
            let w = self.entries[i].load(Ordering::Relaxed);
            if w == 0 {
                return None;
            }
            if key_of(w) == key && count_of(w) > 0 {
                // Relaxed: as in `remove`.
                self.entries[i].store(pack(slot, gen, 0), Ordering::Relaxed);
                self.trim_before_empty(i);
                return Some(count_of(w));
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// If the entry after `i` is empty, clears the tombstones ending at `i` (owner only): they end
    /// a probe chain, so readers would stop right after them anyway. Keeps chains short under
    /// create/release churn without a full sweep.
    fn trim_before_empty(&self, i: usize) {
        if self.entries[(i + 1) & self.mask].load(Ordering::Relaxed) != 0 {
            return;
        }
        let mut j = i;
        for _ in 0..self.entries.len() {
            let w = self.entries[j].load(Ordering::Relaxed);
            if w == 0 || count_of(w) != 0 {
                return;
            }
            self.entries[j].store(0, Ordering::Relaxed);
            j = (j + self.entries.len() - 1) & self.mask;
        }
    }

    /// Clears tombstones that end a probe chain (owner only).
    fn sweep_tombstones(&self) {
        let n = self.entries.len();
        // Walk backwards from every empty word, clearing the tombstones just before it.
        for start in 0..n {
            if self.entries[start].load(Ordering::Relaxed) != 0 {
                continue;
            }
            let mut j = (start + n - 1) & self.mask;
            while j != start {
                let w = self.entries[j].load(Ordering::Relaxed);
                if w == 0 || count_of(w) != 0 {
                    break;
                }
                self.entries[j].store(0, Ordering::Relaxed);
                j = (j + n - 1) & self.mask;
            }
        }
        // A table with no empty word at all and only tombstones: clear them all.
        if self.entries.iter().all(|e| {
            let w = e.load(Ordering::Relaxed);
            w != 0 && count_of(w) == 0
        }) {
            for e in self.entries {
                e.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Every `(slot, gen16, count)` with a positive count (reaper, disconnect, statistics).
    pub fn held(&self) -> Vec<(u32, u16, u16)> {
        self.entries
            .iter()
            .filter_map(|e| {
                // Relaxed: as in `count` (a reaper reads the table of a client it fenced, after
                // its AcqRel CAS of the entry word).
                let w = e.load(Ordering::Relaxed);
                // Checked: a corrupt word with slot field 0 names no slot (skipped, not wrapped).
                let slot = (w >> 32).checked_sub(1)?;
                (count_of(w) > 0).then(|| (slot as u32, (w >> 16) as u16, count_of(w)))
            })
            .collect()
    }

    /// Whether every word of the table is zero (what a previous occupant leaves behind).
    pub fn is_clear(&self) -> bool {
        // Relaxed: the caller (connect) synchronized with the entry's previous owner through
        // the entry word's Acquire load; this is only a check before an optional clear.
        self.entries.iter().all(|e| e.load(Ordering::Relaxed) == 0)
    }

    /// Erases the table (owner at registration, if a previous occupant left words; reaper and
    /// disconnect for the owner they free).
    pub fn clear(&self) {
        for e in self.entries {
            // Relaxed: the reaper's SeqCst fence after `clear` orders these erasures before its
            // reads of the slot words (module docs).
            e.store(0, Ordering::Relaxed);
        }
    }
}

/// Whether the low 16 bits of `gen` match a table entry's generation.
pub fn gen_matches(entry_gen: u16, gen: u32) -> bool {
    entry_gen == (gen & 0xffff) as u16
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn add_remove_count() {
        let words: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(0)).collect();
        let t = RefTable::new(&words);
        assert_eq!(t.add(5, 9).unwrap(), 1);
        assert_eq!(t.add(5, 9).unwrap(), 2);
        assert_eq!(t.count(5, 9), 2);
        assert_eq!(t.count(5, 10), 0);
        assert_eq!(t.remove(5, 9), Some(1));
        assert_eq!(t.remove(5, 9), Some(0));
        assert_eq!(t.remove(5, 9), None);
        assert_eq!(t.count(5, 9), 0);
    }

    #[test]
    fn churn_never_fills_a_table_with_tombstones() {
        let words: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(0)).collect();
        let t = RefTable::new(&words);
        for i in 0..10_000u32 {
            t.add(i, i).unwrap();
            t.add(i + 1_000_000, 1).unwrap();
            assert_eq!(t.count(i, i), 1);
            t.remove(i, i).unwrap();
            t.remove(i + 1_000_000, 1).unwrap();
        }
        for i in 0..16u32 {
            t.add(i * 16, 0).unwrap();
        }
        assert!(matches!(t.add(999, 0), Err(RefError::TableFull { .. })));
        assert_eq!(t.held().len(), 16);
    }
}
