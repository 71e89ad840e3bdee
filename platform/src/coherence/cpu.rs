//! What the processor offers for writing lines back to memory: read once from CPUID.
//!
//! | feature     | how it is detected                                   | used for                      |
//! |-------------|------------------------------------------------------|-------------------------------|
//! | CLFLUSH     | CPUID leaf 1, EDX bit 19                             | write back + invalidate       |
//! | CLFLUSHOPT  | CPUID leaf 7 (sub-leaf 0), EBX bit 23                | write back + invalidate       |
//! | CLWB        | CPUID leaf 7 (sub-leaf 0), EBX bit 24                | write back (line may stay)    |
//! | SSE2        | `is_x86_feature_detected!("sse2")`                   | 16-byte non-temporal stores   |
//! | AVX2        | `is_x86_feature_detected!("avx2")`                   | 32-byte non-temporal stores   |
//! | AVX-512F    | `is_x86_feature_detected!("avx512f")`                | 64-byte non-temporal stores   |
//!
//! The vector features go through `is_x86_feature_detected!` because using them also needs the
//! operating system's consent (XCR0 must enable the YMM/ZMM state); the flush instructions need
//! no OS state, so their CPUID bits are read directly (the standard library does not detect them).
//! The CLFLUSH line size (leaf 1, EBX bits 15..8, in 8-byte units) is recorded so that a CPU with a
//! line other than 64 bytes can be refused instead of silently flushed at the wrong stride.
//!
//! On other architectures every feature is reported absent and [`cpu_model`] reads
//! `/proc/cpuinfo`.

use std::sync::OnceLock;

/// Cache-line size every flush loop in this module steps by.
pub const CACHE_LINE: usize = 64;

/// Processor features relevant to coherence, as detected on this machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// `clflush` (write back and invalidate; ordered with stores, no fence needed for ordering).
    pub clflush: bool,
    /// `clflushopt` (write back and invalidate, weakly ordered: needs a fence).
    pub clflushopt: bool,
    /// `clwb` (write back; the line may stay cached; weakly ordered: needs a fence).
    pub clwb: bool,
    /// SSE2 (`movntdq xmm`), architecturally always present on x86-64.
    pub sse2: bool,
    /// AVX2 (`vmovntdq ymm`), with OS support for the YMM state.
    pub avx2: bool,
    /// AVX-512 Foundation (`vmovntdq zmm`), with OS support for the ZMM state.
    pub avx512f: bool,
    /// The vendor string is `GenuineIntel` (PMDK's condition for its write-combining workaround,
    /// which gismo leaves opt-in: `GISMO_WC_WORKAROUND`).
    pub genuine_intel: bool,
    /// Line size `clflush` operates on, in bytes (0 if unknown).
    pub clflush_line: usize,
}

impl CpuFeatures {
    /// The features of the processor this process runs on (detected once, then cached).
    pub fn get() -> CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        *FEATURES.get_or_init(detect)
    }

    /// Whether flush loops stepping by [`CACHE_LINE`] cover every line: true when the CPU reports
    /// a 64-byte CLFLUSH line (or reports none, in which case no flush instruction is used).
    pub fn line_size_ok(&self) -> bool {
        self.clflush_line == CACHE_LINE || !self.clflush
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    use std::arch::x86_64::{__cpuid, __cpuid_count, __get_cpuid_max};

    let (max_leaf, _) = __get_cpuid_max(0);
    let vendor = __cpuid(0);
    let genuine_intel =
        (vendor.ebx, vendor.edx, vendor.ecx) == (0x756e_6547, 0x4965_6e69, 0x6c65_746e);
    let leaf1 = __cpuid(1);
    let clflush = leaf1.edx & (1 << 19) != 0;
    let clflush_line = ((leaf1.ebx >> 8) & 0xff) as usize * 8;
    let (clflushopt, clwb) = if max_leaf >= 7 {
        let leaf7 = __cpuid_count(7, 0);
        (leaf7.ebx & (1 << 23) != 0, leaf7.ebx & (1 << 24) != 0)
    } else {
        (false, false)
    };
    CpuFeatures {
        clflush,
        clflushopt,
        clwb,
        sse2: std::arch::is_x86_feature_detected!("sse2"),
        avx2: std::arch::is_x86_feature_detected!("avx2"),
        avx512f: std::arch::is_x86_feature_detected!("avx512f"),
        genuine_intel,
        clflush_line,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

/// A one-line description of the processor, for benchmark and diagnostic output: the brand
/// string, then vendor, family, model and stepping (e.g. `Intel(R) Xeon(R) Processor (GenuineIntel
/// family 6 model 143 stepping 8)`).
pub fn cpu_model() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        x86_model()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        proc_cpuinfo_model().unwrap_or_else(|| std::env::consts::ARCH.to_string())
    }
}

#[cfg(target_arch = "x86_64")]
fn x86_model() -> String {
    use std::arch::x86_64::{__cpuid, __get_cpuid_max};

    let regs = |r: std::arch::x86_64::CpuidResult| {
        [r.eax, r.ebx, r.ecx, r.edx]
            .into_iter()
            .flat_map(u32::to_le_bytes)
            .collect::<Vec<u8>>()
    };
    let v = __cpuid(0);
    let vendor: Vec<u8> = [v.ebx, v.edx, v.ecx]
        .into_iter()
        .flat_map(u32::to_le_bytes)
        .collect();
    let vendor = String::from_utf8_lossy(&vendor).into_owned();
    let sig = __cpuid(1).eax;
    let base_family = (sig >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((sig >> 20) & 0xff)
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        ((sig >> 12) & 0xf0) | ((sig >> 4) & 0xf)
    } else {
        (sig >> 4) & 0xf
    };
    let stepping = sig & 0xf;
    let (max_ext, _) = __get_cpuid_max(0x8000_0000);
    let brand = if max_ext >= 0x8000_0004 {
        let bytes: Vec<u8> = (0x8000_0002..=0x8000_0004u32)
            .flat_map(|leaf| regs(__cpuid(leaf)))
            .take_while(|b| *b != 0)
            .collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    } else {
        String::from("unknown x86-64 processor")
    };
    format!("{brand} ({vendor} family {family} model {model} stepping {stepping})")
}

#[cfg(not(target_arch = "x86_64"))]
fn proc_cpuinfo_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| {
            l.starts_with("model name") || l.starts_with("Hardware") || l.starts_with("cpu\t")
        })
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}
