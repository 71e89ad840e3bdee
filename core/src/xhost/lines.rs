//! Write-back and eviction of region words, as safe calls.

use crate::coherence::Coherence;
use crate::sync::AtomicU64;

/// Writes back the lines holding `words` (`clwb` + `sfence`; a line copy under emulation;
/// nothing with `hardware` coherence).
pub fn write_back(c: &Coherence, words: &[AtomicU64]) {
    // SAFETY: `words` is a live reference, so its bytes are mapped; under emulation they must be
    // in the host's view, which they are when they were taken from the store's region.
    unsafe { c.flush_metadata(words.as_ptr().cast(), std::mem::size_of_val(words)) }
}

/// Evicts the lines holding `words` (`mfence` + `clflushopt` + `mfence`; a refetch under
/// emulation; nothing with `hardware` coherence), so the next loads read memory.
///
/// A line this host wrote and did not write back is written back first (as `clflushopt` does),
/// so evicting never loses this host's stores.
pub fn evict(c: &Coherence, words: &[AtomicU64]) {
    // SAFETY: as in `write_back`. Evicting a line this host dirtied writes it back first, on
    // hardware (`clflushopt`) and in the emulator alike, so no store of this host is lost.
    unsafe { c.invalidate_metadata(words.as_ptr().cast(), std::mem::size_of_val(words)) }
}
