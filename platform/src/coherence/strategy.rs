//! Which instructions a [`Coherence`](super::Coherence) uses: detected from CPUID, then narrowed
//! by environment variables, PMDK-style.
//!
//! # Selection
//!
//! * Write back ([`CopyStrategy::flush`]): `clwb`, else `clflushopt`, else `clflush` — the same
//!   order as PMDK (`libpmem2/x86_64/init.c`). `clwb` may leave the line cached, which is fine for
//!   a writer: memory holds the bytes either way.
//! * Invalidate ([`CopyStrategy::invalidate`]): `clflushopt`, else `clflush`. Never `clwb`: a
//!   reader needs the line *gone* from its caches so that its next load goes to memory.
//! * Non-temporal stores ([`CopyStrategy::nt`]): AVX-512F (one 64-byte store per line), else AVX2
//!   (two 32-byte stores), else SSE2 (four 16-byte stores).
//! * [`CopyStrategy::nt_threshold`]: copies of at least this many bytes use non-temporal stores;
//!   shorter ones copy with ordinary stores and then write the lines back. The default,
//!   [`DEFAULT_NT_THRESHOLD`], was measured on the development machine (`docs/coherence.md`).
//!
//! # Environment overrides
//!
//! Read by [`CopyStrategy::with_env_overrides`] (which [`Coherence::new`](super::Coherence::new)
//! applies). A flag is on when its value is exactly `1` (surrounding spaces ignored); any other
//! value, including `0`, an empty string or text, leaves the detected choice alone. Overrides only
//! ever *narrow* the choice: none of them makes the strategy use an instruction the CPU lacks.
//!
//! | variable                  | effect                                                          |
//! |---------------------------|-----------------------------------------------------------------|
//! | `GISMO_NO_CLWB=1`         | write back with `clflushopt` (or `clflush`) instead of `clwb`    |
//! | `GISMO_NO_CLFLUSHOPT=1`   | use `clflush` where `clflushopt` would be used (both directions) |
//! | `GISMO_NO_MOVNT=1`        | never use non-temporal stores: every copy is copy + write back   |
//! | `GISMO_NO_AVX512=1`       | non-temporal stores with AVX2 (or SSE2) instead of AVX-512       |
//! | `GISMO_MOVNT_THRESHOLD=N` | non-temporal stores from `N` bytes (decimal) instead of the default; a value that does not parse as a `usize` is ignored |
//! | `GISMO_WC_WORKAROUND=1`   | `sfence` every 768 bytes in the SSE2/AVX2 kernels (PMDK's write-combining workaround; off by default, see `x86_64.rs`). Read once per process, not part of [`CopyStrategy`] |

use std::fmt;

use super::cpu::CpuFeatures;

/// Default [`CopyStrategy::nt_threshold`], in bytes: measured crossover between "copy, then write
/// back" and non-temporal stores on the development machine (see `docs/coherence.md`).
pub const DEFAULT_NT_THRESHOLD: usize = 256;

/// An instruction that pushes a cache line to memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlushInstr {
    /// `clwb`: write the line back; it may stay cached (valid for writers only).
    Clwb,
    /// `clflushopt`: write back and invalidate; weakly ordered, completed by a fence.
    Clflushopt,
    /// `clflush`: write back and invalidate; ordered with respect to stores.
    Clflush,
    /// No instruction: nothing is written back (the portable fallback, or a measurement baseline).
    None,
}

/// The non-temporal store kernel used for large copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NtStores {
    /// `vmovntdq` with 64-byte ZMM registers: one store per line.
    Avx512,
    /// `vmovntdq` with 32-byte YMM registers.
    Avx2,
    /// `movntdq` with 16-byte XMM registers.
    Sse2,
    /// No non-temporal stores: every copy is an ordinary copy followed by a write back.
    None,
}

impl fmt::Display for FlushInstr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FlushInstr::Clwb => "clwb",
            FlushInstr::Clflushopt => "clflushopt",
            FlushInstr::Clflush => "clflush",
            FlushInstr::None => "none",
        })
    }
}

impl fmt::Display for NtStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NtStores::Avx512 => "avx512",
            NtStores::Avx2 => "avx2",
            NtStores::Sse2 => "sse2",
            NtStores::None => "none",
        })
    }
}

/// The instructions a [`Coherence`](super::Coherence) in `Flush` mode copies, writes back and
/// invalidates with. Construct with [`detect`](Self::detect) (or through
/// [`Coherence::new`](super::Coherence::new)); a hand-built value is narrowed to what the CPU
/// supports by [`supported`](Self::supported) before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CopyStrategy {
    /// How lines written with ordinary stores are written back.
    pub flush: FlushInstr,
    /// How a reader drops possibly stale lines. Never [`FlushInstr::Clwb`] after
    /// [`supported`](Self::supported).
    pub invalidate: FlushInstr,
    /// Which non-temporal stores large copies use.
    pub nt: NtStores,
    /// Copies of at least this many bytes use [`nt`](Self::nt); shorter ones copy + write back.
    pub nt_threshold: usize,
}

impl CopyStrategy {
    /// The best strategy this CPU supports (no environment overrides).
    pub fn detect() -> Self {
        CopyStrategy {
            flush: FlushInstr::Clwb,
            invalidate: FlushInstr::Clflushopt,
            nt: NtStores::Avx512,
            nt_threshold: DEFAULT_NT_THRESHOLD,
        }
        .supported()
    }

    /// The strategy with no instructions at all: plain copies and a `SeqCst` fence. What
    /// [`detect`](Self::detect) returns on architectures other than x86-64.
    pub fn portable() -> Self {
        CopyStrategy {
            flush: FlushInstr::None,
            invalidate: FlushInstr::None,
            nt: NtStores::None,
            nt_threshold: usize::MAX,
        }
    }

    /// Applies the `GISMO_*` environment overrides (see the module docs).
    pub fn with_env_overrides(self) -> Self {
        self.with_overrides(|name| std::env::var(name).ok())
    }

    /// Applies the overrides with variables looked up through `var` instead of the process
    /// environment (tests use this; it is also handy for configuration files).
    pub fn with_overrides(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let on = |name: &str| var(name).is_some_and(|v| v.trim() == "1");
        if on("GISMO_NO_CLWB") && self.flush == FlushInstr::Clwb {
            self.flush = FlushInstr::Clflushopt;
        }
        if on("GISMO_NO_CLFLUSHOPT") {
            for instr in [&mut self.flush, &mut self.invalidate] {
                if *instr == FlushInstr::Clflushopt {
                    *instr = FlushInstr::Clflush;
                }
            }
        }
        if on("GISMO_NO_AVX512") && self.nt == NtStores::Avx512 {
            self.nt = NtStores::Avx2;
        }
        if on("GISMO_NO_MOVNT") {
            self.nt = NtStores::None;
        }
        if let Some(n) = var("GISMO_MOVNT_THRESHOLD").and_then(|v| v.trim().parse().ok()) {
            self.nt_threshold = n;
        }
        self.supported()
    }

    /// This strategy with every instruction the CPU lacks replaced by the next weaker one
    /// (`clwb` → `clflushopt` → `clflush` → none; AVX-512 → AVX2 → SSE2 → none), and a `clwb`
    /// invalidate replaced by `clflushopt` (`clwb` cannot invalidate). Also drops every
    /// instruction when the CPU's CLFLUSH line is not 64 bytes (no such x86-64 CPU is known).
    pub fn supported(self) -> Self {
        let cpu = CpuFeatures::get();
        if !cpu.line_size_ok() {
            return CopyStrategy::portable();
        }
        let flush = |mut f: FlushInstr| {
            if f == FlushInstr::Clwb && !cpu.clwb {
                f = FlushInstr::Clflushopt;
            }
            if f == FlushInstr::Clflushopt && !cpu.clflushopt {
                f = FlushInstr::Clflush;
            }
            if f == FlushInstr::Clflush && !cpu.clflush {
                f = FlushInstr::None;
            }
            f
        };
        let mut nt = self.nt;
        if nt == NtStores::Avx512 && !cpu.avx512f {
            nt = NtStores::Avx2;
        }
        if nt == NtStores::Avx2 && !cpu.avx2 {
            nt = NtStores::Sse2;
        }
        if nt == NtStores::Sse2 && !cpu.sse2 {
            nt = NtStores::None;
        }
        let invalidate = match self.invalidate {
            FlushInstr::Clwb => FlushInstr::Clflushopt,
            other => other,
        };
        CopyStrategy {
            flush: flush(self.flush),
            invalidate: flush(invalidate),
            nt,
            nt_threshold: self.nt_threshold,
        }
    }

    /// Whether every instruction this strategy names can run on this CPU (and `invalidate` is
    /// not `clwb`), i.e. `self == self.supported()`.
    pub fn is_supported(&self) -> bool {
        *self == self.supported()
    }
}

impl fmt::Display for CopyStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flush={} invalidate={} nt={} nt_threshold={}",
            self.flush, self.invalidate, self.nt, self.nt_threshold
        )
    }
}
