//! STUB — being replaced by the full coherence module (CPUID-selected flush / non-temporal copies,
//! invalidate, non-coherent emulation). The API below is the contract the rest of the crate uses.

/// How payload writes become visible to other hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CoherenceMode {
    /// Coherent memory (same host, or CXL with hardware coherence): plain copies.
    Hardware = 1,
    /// Non-coherent sharing: written lines are flushed (or written non-temporally) before publish.
    Flush = 2,
}

impl CoherenceMode {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(CoherenceMode::Hardware),
            2 => Some(CoherenceMode::Flush),
            _ => None,
        }
    }
}

impl std::str::FromStr for CoherenceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hardware" => Ok(CoherenceMode::Hardware),
            "flush" => Ok(CoherenceMode::Flush),
            _ => Err(format!(
                "unknown coherence mode {s:?} (expected hardware or flush)"
            )),
        }
    }
}

impl std::fmt::Display for CoherenceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoherenceMode::Hardware => "hardware",
            CoherenceMode::Flush => "flush",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Coherence {
    mode: CoherenceMode,
}

impl Coherence {
    pub fn new(mode: CoherenceMode) -> Self {
        Coherence { mode }
    }
    pub fn mode(&self) -> CoherenceMode {
        self.mode
    }
    /// Where this host reads and writes payloads: the region itself, except under emulation.
    pub fn payload_base(&self, region_base: *mut u8) -> *mut u8 {
        region_base
    }
    /// # Safety
    /// `src..src+len` readable, `dst..dst+len` writable, not overlapping.
    pub unsafe fn memory_copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }
    /// # Safety
    /// `ptr..ptr+len` lies in mapped memory.
    pub unsafe fn flush(&self, _ptr: *const u8, _len: usize) {}
    /// # Safety
    /// `ptr..ptr+len` lies in mapped memory.
    pub unsafe fn invalidate(&self, _ptr: *const u8, _len: usize) {}
}
