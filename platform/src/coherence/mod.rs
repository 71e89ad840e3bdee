//! Coherence: how payload bytes written by one host become visible to the others.
//!
//! # The problem
//!
//! Every host maps the same region. With a *hardware-coherent* device (one host, or CXL memory
//! whose coherence the hardware maintains) a plain store is visible to every other host as soon as
//! the usual `Release`/`Acquire` pairing says so. With *non-coherent* sharing, a store sits in the
//! writer's cache until the line is written back, and a reader may keep serving an old copy of a
//! line from its own cache. Two duties follow:
//!
//! * the **writer** writes every payload line back to memory before it publishes the object
//!   (the seal), and fences so that the write backs complete before the publishing store;
//! * the **reader**, after it has seen the publication, drops the payload's lines from its own
//!   caches so that its loads go to memory.
//!
//! # Modes
//!
//! [`CoherenceMode`] is recorded in the region's superblock; every host uses the same one.
//!
//! * [`CoherenceMode::Hardware`]: [`Coherence::memory_copy`] is `copy_nonoverlapping`;
//!   [`Coherence::flush`] and [`Coherence::invalidate`] do nothing.
//! * [`CoherenceMode::Flush`]: [`Coherence::memory_copy`] returns only when every destination
//!   line has been written back (by ordinary stores + `clwb`/`clflushopt`/`clflush`, or by
//!   non-temporal stores) and an `sfence` has been issued; [`Coherence::flush`] writes back lines
//!   written in place; [`Coherence::invalidate`] evicts lines with `clflushopt`/`clflush` (never
//!   `clwb`, which may keep the line) between two `mfence`s.
//!
//! # The store's protocol in `Flush` mode
//!
//! 1. *Create*: the metadata bytes are copied in with `memory_copy` (written back at once).
//! 2. *Write*: `write_at` copies with `memory_copy`; bytes written through the raw buffer are
//!    written back by `flush` of the whole payload at seal (the store tracks which happened).
//! 3. *Seal*: after the write backs, the state word is CAS'd to `SEALED` (`Release`).
//! 4. *Get*: after the `Acquire` load that sees `SEALED` and the reference is taken, `invalidate`
//!    drops the payload's lines; sealed objects are immutable, so nothing is lost.
//!
//! Metadata — the directory's state words, references, allocator bitmaps, the client table — is
//! never flushed: it is accessed only with atomic loads, stores and read-modify-writes in the
//! region, and the model **assumes those atomics are coherent across hosts** (CXL memory with
//! hardware coherence for that range, a host-coherent metadata device, or one host). Flush mode
//! relaxes coherence for payload bytes only. See `docs/coherence.md`.
//!
//! # Files
//!
//! * `strategy.rs` — [`CopyStrategy`]: which instructions, chosen from CPUID, with `GISMO_*`
//!   environment overrides.
//! * `cpu.rs` — [`CpuFeatures`]: the CPUID bits, and [`cpu_model`] for benchmark output.
//! * `x86_64.rs` — the kernels: copy + write back, non-temporal copies (AVX-512, AVX2, SSE2),
//!   write back, invalidate.
//! * `portable.rs` — other architectures: plain copies and a `SeqCst` fence, which guarantee
//!   nothing beyond coherent memory.
//! * `emulation.rs` — [`EmulatedHost`] (feature `emulation`): a private view per host that makes
//!   a missing write back or invalidate visible in a one-machine test.
//! * `counting.rs`, `tests.rs` — test-only: a recorder of the lines each kernel touched, and the
//!   unit tests.

mod cpu;
#[cfg(feature = "emulation")]
mod emulation;
mod portable;
mod strategy;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(all(test, target_arch = "x86_64"))]
mod counting;
#[cfg(test)]
mod tests;

#[cfg(not(target_arch = "x86_64"))]
use portable as arch;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

use std::fmt;
use std::ptr;
use std::str::FromStr;
use std::sync::Arc;

use crate::emulation::HostView;
use crate::region::Region;
pub use cpu::{cpu_model, CpuFeatures, CACHE_LINE};
#[cfg(feature = "emulation")]
pub use emulation::EmulatedHost;

pub use strategy::{CopyStrategy, FlushInstr, NtStores, DEFAULT_NT_THRESHOLD};

/// Copies of at least this many bytes use non-temporal stores in Hardware mode as well.
pub const HARDWARE_NT_MIN: usize = 256 * 1024;

/// How payload writes become visible to other hosts. Stored in the superblock as its `u32` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CoherenceMode {
    /// Coherent memory (one host, or CXL with hardware coherence): plain copies.
    Hardware = 1,
    /// Non-coherent sharing: written lines are written back (or written non-temporally) before
    /// publication, and readers invalidate before reading.
    Flush = 2,
}

impl CoherenceMode {
    /// The mode with this superblock value, if any.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(CoherenceMode::Hardware),
            2 => Some(CoherenceMode::Flush),
            _ => None,
        }
    }
}

/// A coherence mode name that is neither `hardware` nor `flush`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown coherence mode {0:?} (expected hardware or flush)")]
pub struct ParseCoherenceModeError(pub String);

impl FromStr for CoherenceMode {
    type Err = ParseCoherenceModeError;

    /// Parses `hardware` or `flush` (exactly, lowercase).
    fn from_str(s: &str) -> Result<Self, ParseCoherenceModeError> {
        match s {
            "hardware" => Ok(CoherenceMode::Hardware),
            "flush" => Ok(CoherenceMode::Flush),
            _ => Err(ParseCoherenceModeError(s.to_string())),
        }
    }
}

impl fmt::Display for CoherenceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CoherenceMode::Hardware => "hardware",
            CoherenceMode::Flush => "flush",
        })
    }
}

/// One host's (process's) coherence: the mode, and in `Flush` mode the instructions it uses.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Coherence {
    mode: CoherenceMode,
    /// Always `is_supported()` (every constructor narrows it): the kernels rely on it.
    strategy: CopyStrategy,
    #[cfg(feature = "emulation")]
    emulated: Option<Arc<EmulatedHost>>,
    /// The whole-region emulated host this process is ([`crate::emulation`]): every line moves
    /// between its view and the device only by `memory_copy`, `flush` and `invalidate` (and the
    /// emulator's spontaneous events).
    host_view: Option<Arc<HostView>>,
    /// A model of this host's cache ([`LineModel`]), for model checkers: when set, every
    /// write-back and eviction is its line transfer instead.
    line_model: Option<Arc<dyn LineModel>>,
}

/// One host's cache as a model checker sees it: write-back and eviction of the lines holding a
/// range, done as line copies between the host's view and a shared device (the whole-region
/// emulator's semantics, [`crate::emulation`]), but over memory the model owns. The `loom` models
/// of the cross-host protocols (`core/tests/loom.rs`) give each emulated host a [`Coherence`]
/// made by [`Coherence::with_line_model`], so that a write-back or an eviction the protocol
/// leaves out makes the model fail.
///
/// `ptr`/`len` are what the protocol code passes to [`Coherence::flush`] and
/// [`Coherence::invalidate`]: `words.as_ptr()` and `size_of_val(words)` of a slice of the
/// host's view.
pub trait LineModel: Send + Sync + fmt::Debug {
    /// Writes back the lines holding `ptr..ptr+len` (`clwb` + `sfence`).
    fn write_back(&self, ptr: *const u8, len: usize);
    /// Evicts the lines holding `ptr..ptr+len`, writing back a dirty one first (`clflushopt`).
    fn evict(&self, ptr: *const u8, len: usize);
}

impl Coherence {
    /// The coherence for `mode` with the strategy detected from CPUID, then narrowed by the
    /// `GISMO_*` environment overrides ([`CopyStrategy::with_env_overrides`]).
    pub fn new(mode: CoherenceMode) -> Self {
        Coherence::with_strategy(mode, CopyStrategy::detect().with_env_overrides())
    }

    /// The coherence for `mode` with an explicit strategy (for tests and benchmarks), narrowed to
    /// what this CPU supports ([`CopyStrategy::supported`]).
    pub fn with_strategy(mode: CoherenceMode, strategy: CopyStrategy) -> Self {
        Coherence {
            mode,
            strategy: strategy.supported(),
            #[cfg(feature = "emulation")]
            emulated: None,
            host_view: None,
            line_model: None,
        }
    }

    /// The coherence of one host of a model ([`LineModel`]): `flush`, `invalidate` and the
    /// write-back half of `memory_copy` are the model's line transfers, in either mode.
    pub fn with_line_model(mode: CoherenceMode, model: Arc<dyn LineModel>) -> Self {
        Coherence {
            line_model: Some(model),
            ..Coherence::with_strategy(mode, CopyStrategy::portable())
        }
    }

    /// The coherence for `mode` on `region`: [`Coherence::new`], acting on the region's emulated
    /// host when the process is one ([`Region::emulated_host`]). An emulated host is
    /// non-coherent memory, so its write-backs and evictions act in either mode.
    pub fn for_region(mode: CoherenceMode, region: &Region) -> Self {
        let mut coherence = Coherence::new(mode);
        coherence.host_view = region.emulated_host().cloned();
        coherence
    }

    /// The whole-region emulated host this coherence acts on, if any.
    pub fn host_view(&self) -> Option<&Arc<HostView>> {
        self.host_view.as_ref()
    }

    /// The mode.
    pub fn mode(&self) -> CoherenceMode {
        self.mode
    }

    /// The instructions used in `Flush` mode (also reported, unused, in `Hardware` mode).
    pub fn strategy(&self) -> &CopyStrategy {
        &self.strategy
    }

    /// Where this host reads and writes payloads: `region_base` itself, except for an emulated
    /// host in `Flush` mode, whose private view it returns.
    ///
    /// # Panics
    /// Emulated only: if `region_base` is not the start of the range the host mirrors.
    pub fn payload_base(&self, region_base: *mut u8) -> *mut u8 {
        #[cfg(feature = "emulation")]
        if let Some(host) = &self.emulated {
            return emulation::private_base(host, region_base);
        }
        region_base
    }

    /// Copies `len` bytes from `src` to `dst`.
    ///
    /// * `Hardware`: a plain copy.
    /// * `Flush`: when it returns, every line of `dst..dst+len` has been written back to memory
    ///   (ordinary stores + write back below [`CopyStrategy::nt_threshold`], non-temporal stores
    ///   for the whole lines at and above it, ordinary stores + write back for partial lines at
    ///   either end) and an `sfence` has been issued. Nothing happens when `len` is 0.
    /// * Emulated `Flush`: writes the private view, then copies the touched lines to the shared
    ///   range.
    ///
    /// # Safety
    /// `src..src+len` is readable and `dst..dst+len` writable (and inside the payload view under
    /// emulation); the two ranges do not overlap.
    ///
    /// # Panics
    /// Emulated only: if `dst..dst+len` is outside the private view.
    pub unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        if let Some(model) = &self.line_model {
            // SAFETY: forwarded from this function's contract.
            unsafe { ptr::copy_nonoverlapping(src, dst, len) };
            model.write_back(dst, len);
            return;
        }
        if let Some(host) = &self.host_view {
            // SAFETY: forwarded from this function's contract.
            return unsafe { host.memory_copy(dst, src, len) };
        }
        #[cfg(feature = "emulation")]
        if let Some(host) = &self.emulated {
            // SAFETY: forwarded from this function's contract.
            return unsafe { host.memory_copy(dst, src, len) };
        }
        match self.mode {
            // Large copies into coherent memory: non-temporal stores are the faster copy into
            // memory that is not in cache (a fresh object), 1.8–2.3× a cached copy in the put
            // benchmark (`docs/benchmarks.md`), so Hardware mode uses them above
            // `HARDWARE_NT_MIN` too; smaller objects stay cache-hot for same-host readers.
            CoherenceMode::Hardware
                if len >= HARDWARE_NT_MIN
                    && self.strategy.nt != NtStores::None
                    && !self.without_instructions() =>
            {
                // SAFETY: forwarded from this function's contract; the strategy is supported.
                unsafe { arch::copy_written_back(&self.strategy, dst, src, len) }
            }
            // SAFETY: forwarded from this function's contract.
            CoherenceMode::Hardware => unsafe { ptr::copy_nonoverlapping(src, dst, len) },
            CoherenceMode::Flush if self.without_instructions() => {
                // SAFETY: forwarded from this function's contract.
                unsafe { portable::copy_fenced(dst, src, len) }
            }
            // SAFETY: forwarded from this function's contract; `self.strategy` is supported
            // (every constructor narrows it).
            CoherenceMode::Flush => unsafe {
                arch::copy_written_back(&self.strategy, dst, src, len)
            },
        }
    }

    /// Writes back the lines of `ptr..ptr+len` that were written in place (through a raw buffer
    /// rather than [`memory_copy`](Self::memory_copy)), then `sfence`. Nothing in `Hardware` mode.
    ///
    /// # Safety
    /// `ptr..ptr+len` is mapped (and inside the payload view under emulation).
    ///
    /// # Panics
    /// Emulated only: if the range is outside the private view.
    pub unsafe fn flush(&self, ptr: *const u8, len: usize) {
        if let Some(model) = &self.line_model {
            model.write_back(ptr, len);
            return;
        }
        if let Some(host) = &self.host_view {
            host.write_back(host.offset_of(ptr, len), len);
            return;
        }
        #[cfg(feature = "emulation")]
        if let Some(host) = &self.emulated {
            host.write_back(ptr, len);
            return;
        }
        if self.mode == CoherenceMode::Flush {
            // SAFETY: forwarded from this function's contract; the strategy is supported.
            unsafe { arch::write_back(&self.strategy, ptr, len) }
        }
    }

    /// Reader side: drops the lines of `ptr..ptr+len` from this CPU's caches (`clflushopt` or
    /// `clflush`, between two `mfence`s) so that the next loads read memory. Call it after the
    /// `Acquire` load that observed the publication. Nothing in `Hardware` mode.
    ///
    /// # Safety
    /// `ptr..ptr+len` is mapped (and inside the payload view under emulation). This host must not
    /// have written these lines without writing them back: on hardware, `clflushopt` would write
    /// its stale version over memory; under emulation the bytes are discarded. (A reader never
    /// writes a sealed payload, so the store meets this by construction.)
    ///
    /// # Panics
    /// Emulated only: if the range is outside the private view.
    pub unsafe fn invalidate(&self, ptr: *const u8, len: usize) {
        if let Some(model) = &self.line_model {
            model.evict(ptr, len);
            return;
        }
        if let Some(host) = &self.host_view {
            host.evict(host.offset_of(ptr, len), len);
            return;
        }
        #[cfg(feature = "emulation")]
        if let Some(host) = &self.emulated {
            host.refresh(ptr, len);
            return;
        }
        if self.mode == CoherenceMode::Flush {
            // SAFETY: forwarded from this function's contract; the strategy is supported.
            unsafe { arch::invalidate(&self.strategy, ptr, len) }
        }
    }

    /// [`flush`](Self::flush) for words of the region's metadata (protocol v2's single-writer
    /// lines: a directory slot's word, a pin, a ring cell). The same, except under the
    /// payload-only emulator ([`EmulatedHost`], feature `emulation`), which emulates payloads in a
    /// private view and leaves the metadata in the shared mapping, coherent: there, nothing.
    ///
    /// # Safety
    /// `ptr..ptr+len` is mapped (inside the host's view under the whole-region emulator).
    pub unsafe fn flush_metadata(&self, ptr: *const u8, len: usize) {
        #[cfg(feature = "emulation")]
        if self.emulated.is_some() {
            return;
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { self.flush(ptr, len) }
    }

    /// [`invalidate`](Self::invalidate) for words of the region's metadata; nothing under the
    /// payload-only emulator (see [`flush_metadata`](Self::flush_metadata)).
    ///
    /// # Safety
    /// As [`invalidate`](Self::invalidate).
    pub unsafe fn invalidate_metadata(&self, ptr: *const u8, len: usize) {
        #[cfg(feature = "emulation")]
        if self.emulated.is_some() {
            return;
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { self.invalidate(ptr, len) }
    }

    /// Whether the strategy has neither write back nor non-temporal stores (the portable one).
    fn without_instructions(&self) -> bool {
        self.strategy.flush == FlushInstr::None && self.strategy.nt == NtStores::None
    }
}
