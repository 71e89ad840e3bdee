//! A published record: a few words that one host writes and every host reads, validated by a
//! sequence word (a seqlock whose halves are written back and evicted explicitly).
//!
//! # Protocol
//!
//! Writer (one writer at a time; several processes of the writer host must exclude each other
//! themselves, e.g. with a host-local CAS):
//!
//! 1. `seq := odd` (the next odd value), write back the seq line, `sfence`. The odd value reaches
//!    memory before any body line can: a cache may write a body line back at any moment
//!    (eviction, a spontaneous write-back), and a reader must not mistake such a line for a
//!    finished write.
//! 2. Store the body words, write back their lines.
//! 3. `seq := odd + 1` (even), write back.
//!
//! Reader: evict the seq line and load it (odd: a write is in progress, retry); evict the body
//! lines and load them; evict the seq line again and reload it. The same even value both times
//! means the body is one writer's complete write: every body store of a later write is ordered
//! after that write's odd seq reached memory, and the second seq load reads memory after the body
//! loads did.
//!
//! A writer that dies between steps 1 and 3 leaves the seq odd: readers get [`Busy`] until the
//! record's writer (or the host that takes its role over) writes it again; a write starts from an
//! odd seq as from the even one before it.
//!
//! # Orderings
//!
//! With `hardware` coherence the write-backs and evictions are no-ops and this is a classic
//! seqlock: the writer's Release fence after the odd store keeps the body stores after it, the
//! even store is Release; the reader's first load is Acquire and an Acquire fence precedes the
//! re-load. On non-coherent memory the write-backs (`clwb` + `sfence`) and evictions (`clflushopt`
//! between `mfence`s) order the transfers to and from memory the same way.
//!
//! [`Busy`]: RecordError::Busy

use crate::coherence::Coherence;
use crate::sync::{fence, AtomicU64, Ordering};

use super::lines::{evict, write_back};

/// Attempts a reader makes before giving up with [`RecordError::Busy`].
pub const READ_ATTEMPTS: u32 = 64;

/// Why a record could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Every attempt met a write in progress (odd seq) or a changed seq: a writer is writing
    /// continuously, or died mid write.
    #[error("record busy: seq {seq} still changing after {READ_ATTEMPTS} attempts")]
    Busy { seq: u64 },
    /// The caller's buffer is not as long as the record's body.
    #[error("record body has {expected} words, buffer {got}")]
    WrongLength { expected: usize, got: usize },
}

/// A view of one record in the region: its sequence word and its body words.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    seq: &'a AtomicU64,
    body: &'a [AtomicU64],
}

impl<'a> Record<'a> {
    /// The record whose sequence word is `seq` and whose body is `body` (both in the region; the
    /// seq may share a line with the body or have its own).
    pub fn new(seq: &'a AtomicU64, body: &'a [AtomicU64]) -> Record<'a> {
        Record { seq, body }
    }

    /// Number of body words.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Writes `values` as the record's new body; returns the new (even) seq.
    ///
    /// # Errors
    /// [`RecordError::WrongLength`] if `values` is not as long as the body (nothing written).
    pub fn write(&self, c: &Coherence, values: &[u64]) -> Result<u64, RecordError> {
        if values.len() != self.body.len() {
            return Err(RecordError::WrongLength {
                expected: self.body.len(),
                got: values.len(),
            });
        }
        let s = self.seq.load(Ordering::Relaxed);
        let odd = s | 1;
        self.seq.store(odd, Ordering::Relaxed);
        write_back(c, std::slice::from_ref(self.seq));
        // Release fence: the body stores below are ordered after the odd seq for a same-host (or
        // coherent) reader, whose Acquire fence before its re-load pairs with this.
        fence(Ordering::Release);
        for (w, &v) in self.body.iter().zip(values) {
            w.store(v, Ordering::Relaxed);
        }
        write_back(c, self.body);
        let even = odd.wrapping_add(1);
        // Release: pairs with the reader's Acquire load of the seq; publishes the body to a
        // reader that finds `even`.
        self.seq.store(even, Ordering::Release);
        write_back(c, std::slice::from_ref(self.seq));
        Ok(even)
    }

    /// Reads a consistent body into `out`; returns its (even) seq.
    ///
    /// # Errors
    /// [`RecordError::Busy`] after [`READ_ATTEMPTS`] inconsistent attempts;
    /// [`RecordError::WrongLength`] if `out` is not as long as the body.
    pub fn read(&self, c: &Coherence, out: &mut [u64]) -> Result<u64, RecordError> {
        if out.len() != self.body.len() {
            return Err(RecordError::WrongLength {
                expected: self.body.len(),
                got: out.len(),
            });
        }
        let mut last = 0;
        for attempt in 0..READ_ATTEMPTS {
            if attempt > 0 {
                std::hint::spin_loop();
            }
            evict(c, std::slice::from_ref(self.seq));
            // Acquire: pairs with the writer's Release store of the even seq.
            let s1 = self.seq.load(Ordering::Acquire);
            last = s1;
            if s1 & 1 == 1 {
                continue;
            }
            evict(c, self.body);
            for (o, w) in out.iter_mut().zip(self.body) {
                *o = w.load(Ordering::Relaxed);
            }
            evict(c, std::slice::from_ref(self.seq));
            // Acquire fence: pairs with the writer's Release fence after its odd store; orders
            // the body loads above before the re-load (seqlock validation).
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Ok(s1);
            }
        }
        Err(RecordError::Busy { seq: last })
    }

    /// The body as memory holds it (evicted first), whatever the seq says: for the taker of a
    /// record whose writer died mid-write (odd seq for ever), which must still learn what it can
    /// (the caller validates: a torn body fails its own check).
    ///
    /// # Errors
    /// [`RecordError::WrongLength`] if `out` is not as long as the body.
    pub fn read_unvalidated(&self, c: &Coherence, out: &mut [u64]) -> Result<(), RecordError> {
        if out.len() != self.body.len() {
            return Err(RecordError::WrongLength {
                expected: self.body.len(),
                got: out.len(),
            });
        }
        evict(c, self.body);
        for (o, w) in out.iter_mut().zip(self.body) {
            *o = w.load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// The current seq as memory holds it (evicted first): even when no write is in progress.
    pub fn seq(&self, c: &Coherence) -> u64 {
        evict(c, std::slice::from_ref(self.seq));
        // Acquire: pairs with the writer's Release store of the even seq (as in `read`).
        self.seq.load(Ordering::Acquire)
    }
}
