//! The client table: one entry per attached client, in the region.
//!
//! An entry records who the client is (host identity, pid, process start time), an **epoch**
//! bumped every time the entry is (re)claimed, a heartbeat, and the client's in-flight **intent**
//! (the allocation it holds but has not yet recorded in a directory slot). The reaper uses these to
//! find dead clients and reclaim what they held; a client checks its own entry's epoch at every
//! operation and fails with `Fenced` if it was declared dead meanwhile.
//!
//! Entry word: `epoch:32 | status:8 | 0:24`.

use crate::sync::{AtomicU64, Ordering};

pub mod status {
    pub const FREE: u8 = 0;
    pub const ACTIVE: u8 = 1;
    /// Declared dead; the reaper is reclaiming what it held.
    pub const DEAD: u8 = 2;
    /// Claimed by `connect`, which is writing the identity fields; `ACTIVE` once they are
    /// written. The reaper never judges such an entry by its fields (they may still be the
    /// previous occupant's); one left `CONNECTING` for longer than the lease is reclaimed.
    pub const CONNECTING: u8 = 3;
}

/// Intent kinds (the low byte of `intent`).
pub mod intent {
    pub const NONE: u64 = 0;
    /// `intent_offset`/`intent_size` name an allocation not yet recorded in a slot.
    pub const ALLOCATED: u64 = 1;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryWord {
    pub epoch: u32,
    pub status: u8,
}

impl EntryWord {
    pub fn pack(self) -> u64 {
        u64::from(self.epoch) << 32 | u64::from(self.status) << 24
    }
    pub fn unpack(w: u64) -> EntryWord {
        EntryWord {
            epoch: (w >> 32) as u32,
            status: (w >> 24) as u8,
        }
    }
}

/// One client table entry: 128 bytes.
#[repr(C)]
pub struct ClientEntry {
    pub word: AtomicU64,
    pub pid: AtomicU64,
    /// Process start time (clock ticks since boot, from /proc/PID/stat), to tell a reused pid.
    pub start_time: AtomicU64,
    pub heartbeat_ms: AtomicU64,
    pub attached_ms: AtomicU64,
    /// Hash of the host identity (host name + boot id).
    pub host_hash: AtomicU64,
    /// Host table index of the client's host.
    pub host_index: AtomicU64,
    pub intent: AtomicU64,
    pub intent_offset: AtomicU64,
    pub intent_size: AtomicU64,
    /// Odd while a create is between its allocation and its directory slot; bumped at both
    /// ends. The orphan collector waits for every client to move past the operations that were
    /// in flight when it first looked.
    pub op_seq: AtomicU64,
    /// Up to 40 bytes of a human-readable name.
    pub name: [AtomicU64; 5],
}

#[cfg(not(loom))]
static_assertions::const_assert_eq!(
    std::mem::size_of::<ClientEntry>() as u64,
    crate::format::layout::CLIENT_ENTRY_SIZE
);
// SAFETY: repr(C), integer atomics only, every bit pattern valid, no pointers.
#[cfg(not(loom))]
unsafe impl crate::shm::RegionSafe for ClientEntry {}

impl ClientEntry {
    pub fn load_word(&self) -> EntryWord {
        // Acquire: pairs with the Release store that published the entry's fields.
        EntryWord::unpack(self.word.load(Ordering::Acquire))
    }

    pub fn set_name(&self, name: &str) {
        let mut bytes = [0u8; 40];
        let n = name.len().min(40);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        for (i, w) in self.name.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    pub fn name(&self) -> String {
        let mut bytes = Vec::with_capacity(40);
        for w in &self.name {
            bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }
}

/// This process's identity as the client table records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIdentity {
    /// Host name (or `GISMO_HOST`, which tests use to emulate several hosts on one machine).
    pub name: String,
    /// `/proc/sys/kernel/random/boot_id`, or empty.
    pub boot_id: String,
}

impl HostIdentity {
    pub fn current() -> HostIdentity {
        let name = std::env::var("GISMO_HOST")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            });
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        HostIdentity { name, boot_id }
    }

    /// A stable 64-bit hash (FNV-1a) of name and boot id; never 0.
    pub fn hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.name.bytes().chain([0u8]).chain(self.boot_id.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h.max(1)
    }
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start_time` is still running on this host.
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    match process_start_time(pid) {
        Some(t) => t == start_time,
        None => false,
    }
}
