//! The client table: one entry per attached client, in the region.
//!
//! An entry records who the client is (host identity, pid, process start time), an **epoch**
//! bumped every time the entry is (re)claimed, a heartbeat, and the client's in-flight **intent**
//! (the allocation it holds but has not yet recorded in a directory slot). The reaper uses these to
//! find dead clients and reclaim what they held; a client checks its own entry's epoch at every
//! operation and fails with `Fenced` if it was declared dead meanwhile.
//!
//! Entry word: `epoch:32 | status:8 | 0:24`.

use crate::store::refs::RefTable;
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
    /// Declared dead **by lease** (its process could not be checked) and fenced: its operations
    /// fail with `Fenced`, but what it held is kept for a grace period (its references still
    /// count, its unsealed objects and intent stay allocated), so a client that was only paused
    /// does not see its views reused right away. The maintainer reaps it (via `DEAD`) once the
    /// grace period has passed on its own monotonic clock (`docs/store.md`, "Pauses and fencing").
    pub const QUARANTINED: u8 = 4;

    /// Whether an entry in status `s` still holds what its client allocated and referenced
    /// (fsck and the orphan collector must count it as an owner).
    pub fn holds_resources(s: u8) -> bool {
        s == ACTIVE || s == QUARANTINED
    }
}

/// Intent kinds (the low byte of `intent`).
pub mod intent {
    pub const NONE: u64 = 0;
    /// `intent_offset`/`intent_size` name an allocation not yet recorded in a slot.
    pub const ALLOCATED: u64 = 1;
}

/// Bits of [`ClientEntry::reap_flags`]: what a reaper cannot find from the client's own entry and
/// reference table, so that reaping it needs a directory scan. Sticky until the entry is reused;
/// a reap is targeted only when the word is exactly [`TRACKED`](reap_flags::TRACKED) (any other
/// bit, also an unknown one in a corrupt entry, or `TRACKED` missing, makes it scan).
pub mod reap_flags {
    /// An unsealed object of this client lost its last reference of the client's (released
    /// before its seal): it is in no table of the client's any more.
    pub const UNREFERENCED_UNSEALED: u64 = 1;
    /// The client holds, or held and lost, the maintenance lock: slots it took over while
    /// reaping may be `DELETING` under its tag. Cleared when it gives the lock back normally.
    pub const MAINTAINING: u64 = 2;
    /// Written alone by `connect` of a build that keeps what a targeted reap relies on (every
    /// step that leaves state outside the client's table runs inside its operation guard, and the
    /// bits above are kept). An entry without it (written by an older build, whose clients keep
    /// no such promise, or corrupt) is reaped with a directory scan.
    pub const TRACKED: u64 = 1 << 63;
}

/// The layout of a client entry's `op_seq`: the epoch of the occupant that owns it in the high
/// 32 bits, a counter in the low 32 bits, odd while the occupant is inside an operation guard.
///
/// The epoch makes every write to it a CAS that only its owner can win: a client paused past
/// its reap, whose entry then went to a new occupant (a new epoch, set at connect), fails its
/// CAS instead of changing the new occupant's parity (review of the targeted reap, F6).
pub mod op_seq {
    /// The counter of a new occupant at `epoch`: idle.
    pub fn fresh(epoch: u32) -> u64 {
        u64::from(epoch) << 32
    }

    /// The epoch of the occupant that owns `v`.
    pub fn epoch(v: u64) -> u32 {
        (v >> 32) as u32
    }

    /// Whether `v` marks an operation in flight.
    pub fn in_operation(v: u64) -> bool {
        v & 1 == 1
    }

    /// `v` with its counter advanced by one (wrapping within the low half; the epoch stays).
    pub fn bump(v: u64) -> u64 {
        v & !u64::from(u32::MAX) | u64::from((v as u32).wrapping_add(1))
    }
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
    /// Hash of the client's liveness identity (host name + boot id + pid namespace, see
    /// [`HostIdentity::liveness_hash`]): equal to the reaper's own means "its pid can be checked
    /// here".
    pub host_hash: AtomicU64,
    /// Host table index of the client's host.
    pub host_index: AtomicU64,
    pub intent: AtomicU64,
    pub intent_offset: AtomicU64,
    pub intent_size: AtomicU64,
    /// The occupant's operation counter ([`op_seq`] layout: its epoch in the high half, odd
    /// while it is inside an operation guard). The orphan collector waits for every client to
    /// move past the operations that were in flight when it first looked.
    pub op_seq: AtomicU64,
    /// [`reap_flags`] bits.
    pub reap_flags: AtomicU64,
    /// Up to 32 bytes of a human-readable name.
    pub name: [AtomicU64; 4],
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
    /// An entry outside any region, all zero (`FREE` at epoch 0): for the loom models and tests,
    /// which run the table's protocols over entries on the heap.
    pub fn new_free() -> ClientEntry {
        let zero = AtomicU64::new;
        ClientEntry {
            word: zero(0),
            pid: zero(0),
            start_time: zero(0),
            heartbeat_ms: zero(0),
            attached_ms: zero(0),
            host_hash: zero(0),
            host_index: zero(0),
            intent: zero(0),
            intent_offset: zero(0),
            intent_size: zero(0),
            op_seq: zero(0),
            reap_flags: zero(0),
            name: [zero(0), zero(0), zero(0), zero(0)],
        }
    }

    pub fn load_word(&self) -> EntryWord {
        // Acquire: pairs with the Release store that published the entry's fields.
        EntryWord::unpack(self.word.load(Ordering::Acquire))
    }

    pub fn set_name(&self, name: &str) {
        let mut bytes = [0u8; 32];
        let n = name.len().min(32);
        bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        for (i, w) in self.name.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    pub fn name(&self) -> String {
        let mut bytes = Vec::with_capacity(32);
        for w in &self.name {
            bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }
}

/// References held on `(slot, gen)` by the clients of `holders` (each entry with its reference
/// table), counting every entry that is not `FREE`: a `DEAD` or `QUARANTINED` client's references
/// count until its reaper erases them, and a `FREE` entry's table holds none that matter (only
/// words a fenced client stored after its reaper erased the table, which the next `connect`
/// clears). What `Store::refcount` sums over the table, and what a deleter's reference check
/// (`begin_delete`) runs after its SeqCst fence.
pub fn count_references<'a>(
    holders: impl IntoIterator<Item = (&'a ClientEntry, RefTable<'a>)>,
    slot: u32,
    gen: u32,
) -> u32 {
    holders
        .into_iter()
        .filter(|(e, _)| e.load_word().status != status::FREE)
        .map(|(_, table)| u32::from(table.count(slot, gen)))
        .sum()
}

/// This process's identity as the client table records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIdentity {
    /// Host name (or `GISMO_HOST`, which tests use to emulate several hosts on one machine).
    pub name: String,
    /// `/proc/sys/kernel/random/boot_id`, or empty.
    pub boot_id: String,
    /// Inode of `/proc/self/ns/pid` (this process's pid namespace), or 0 when unreadable.
    pub pid_ns: u64,
}

/// The name a host goes by in the host table. A host without a name of its own (the kernel's
/// `(none)`, or empty: e.g. VM guests booted from an initramfs) is named after its boot id, so
/// that two such machines never look like two boots of one host — which would let either one
/// reclaim, or fsck flag, the other's live host entry as "past its boot". The price: a past boot
/// of an unnamed host is not recognized as one, so its entry is never reclaimed; give hosts that
/// reboot often a name (or `GISMO_HOST`).
pub fn host_name(hostname: &str, boot_id: &str) -> String {
    if hostname.is_empty() || hostname == "(none)" {
        format!("(none):{boot_id}")
    } else {
        hostname.to_string()
    }
}

impl HostIdentity {
    pub fn current() -> HostIdentity {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let name = std::env::var("GISMO_HOST")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                host_name(&raw, &boot_id)
            });
        let pid_ns = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        HostIdentity {
            name,
            boot_id,
            pid_ns,
        }
    }

    /// The identity under which a client's pid can be checked by another process: host, boot
    /// **and pid namespace** (a pid means nothing in another namespace, even on the same machine:
    /// containers sharing the host's network and hostname). Never 0, and never equal for two
    /// processes whose pid namespace is unknown (then the pid cannot be trusted: the lease
    /// judges). Recorded in the client entry's `host_hash`.
    pub fn liveness_hash(&self) -> u64 {
        if self.pid_ns == 0 {
            // Unknown namespace: a value no reaper computes for itself (its own would differ by
            // its pid), so nobody judges us by pid.
            return fnv(self.hash(), &u64::from(std::process::id()).to_le_bytes()) | 1 << 63;
        }
        fnv(self.hash(), &self.pid_ns.to_le_bytes()).max(1) & !(1 << 63)
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

fn fnv(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), if it exists.
pub fn process_start_time(pid: u32) -> Option<u64> {
    read_stat(pid).ok().map(|(_, start)| start)
}

/// State letter (field 3) and start time (field 22) of `pid`, or why they could not be read
/// (`ErrorKind::NotFound` means the process is gone; anything else means "unknown": fd limits,
/// `hidepid`, no /proc).
fn read_stat(pid: u32) -> std::io::Result<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable stat");
    let state = state_of(&stat).ok_or_else(bad)?;
    let start = after_comm(&stat)
        .ok_or_else(bad)?
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .ok_or_else(bad)?;
    Ok((state, start))
}

/// A `/proc/.../stat` line from field 3 on: the command name (field 2) may contain spaces and
/// parentheses, so this skips past the last ')'.
fn after_comm(stat: &str) -> Option<&str> {
    stat.get(stat.rfind(')')? + 2..)
}

/// The state letter (field 3) of a `/proc/.../stat` line.
fn state_of(stat: &str) -> Option<char> {
    after_comm(stat)?.chars().next()
}

/// What a process check on this host concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The process runs (with the recorded start time, when one was recorded).
    Alive,
    /// Certainly gone: no such pid (`ESRCH`, `ENOENT`), or the pid runs another process (a
    /// different start time).
    Gone,
    /// Could not tell (`EMFILE`, `EACCES`, `ENOMEM`, /proc unreadable, no start time recorded):
    /// the caller falls back to the lease.
    Unknown,
}

/// The liveness decision from its two inputs, separated for testing: `signal` is the result of
/// `kill(pid, 0)` (`Err(errno)`), `stat` the start time read from `/proc/PID/stat`, `recorded` the
/// start time the client recorded at connect (0: it could not read its own).
pub fn decide_liveness(
    signal: Result<(), i32>,
    stat: std::io::Result<u64>,
    recorded: u64,
) -> Liveness {
    match signal {
        Ok(()) | Err(libc::EPERM) => {} // it exists (EPERM: another user's process)
        Err(libc::ESRCH) => return Liveness::Gone,
        Err(_) => return Liveness::Unknown,
    }
    match stat {
        Ok(_) if recorded == 0 => Liveness::Unknown,
        Ok(t) if t == recorded => Liveness::Alive,
        Ok(_) => Liveness::Gone, // the pid was reused
        // Exited between the signal and the read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Liveness::Gone,
        Err(_) => Liveness::Unknown,
    }
}

/// Whether the process `pid` that started at `start_time` still runs in this pid namespace.
pub fn process_liveness(pid: u32, start_time: u64) -> Liveness {
    let Ok(raw) = i32::try_from(pid) else {
        return Liveness::Unknown;
    };
    if raw <= 0 {
        return Liveness::Unknown; // 0 and negatives name process groups, not a process
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled; it sends nothing.
    let rc = unsafe { libc::kill(raw, 0) };
    let signal = if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    };
    let stat = read_stat(pid);
    let leader_exited = matches!(stat, Ok(('Z' | 'X', _)));
    match decide_liveness(signal, stat.map(|(_, start)| start), start_time) {
        // An exited process its parent has not waited for yet (a zombie) still answers
        // `kill(pid, 0)` and keeps its /proc entry and start time, but it cannot touch the region
        // any more (core review L7). Gone only when every thread of it has exited: a process
        // whose main thread ended while others run shows its leader as a zombie too.
        Liveness::Alive if leader_exited && matches!(all_threads_exited(pid), Ok(true)) => {
            Liveness::Gone
        }
        other => other,
    }
}

/// Whether every thread of `pid` is a zombie or dead (state `Z` or `X` in
/// `/proc/PID/task/TID/stat`); an error (the process went meanwhile, no /proc) says nothing.
fn all_threads_exited(pid: u32) -> std::io::Result<bool> {
    let mut threads = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(entry?.path().join("stat"))?;
        threads += 1;
        if !matches!(state_of(&stat), Some('Z' | 'X')) {
            return Ok(false);
        }
    }
    Ok(threads > 0)
}

/// Whether the process `pid` that started at `start_time` is still running on this host; an
/// undecidable check counts as alive (the lease decides then).
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    process_liveness(pid, start_time) != Liveness::Gone
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn unnamed_hosts_are_told_apart_by_their_boot() {
        assert_eq!(host_name("node-1", "b1"), "node-1");
        assert_ne!(host_name("(none)", "b1"), host_name("(none)", "b2"));
        assert_ne!(host_name("", "b1"), host_name("", "b2"));
        assert_eq!(host_name("(none)", "b1"), host_name("(none)", "b1"));
    }

    #[test]
    fn only_esrch_and_enoent_mean_gone() {
        let ok = |t| -> std::io::Result<u64> { Ok(t) };
        assert_eq!(decide_liveness(Ok(()), ok(7), 7), Liveness::Alive);
        assert_eq!(decide_liveness(Err(libc::EPERM), ok(7), 7), Liveness::Alive);
        assert_eq!(decide_liveness(Err(libc::ESRCH), ok(7), 7), Liveness::Gone);
        assert_eq!(
            decide_liveness(Ok(()), ok(8), 7),
            Liveness::Gone,
            "pid reused"
        );
        assert_eq!(
            decide_liveness(Ok(()), Err(Error::from(ErrorKind::NotFound)), 7),
            Liveness::Gone
        );
        for errno in [libc::EMFILE, libc::ENFILE, libc::EACCES, libc::ENOMEM] {
            assert_eq!(
                decide_liveness(Ok(()), Err(Error::from_raw_os_error(errno)), 7),
                Liveness::Unknown,
                "errno {errno} reading /proc"
            );
            assert_eq!(
                decide_liveness(Err(errno), ok(7), 7),
                Liveness::Unknown,
                "errno {errno} from kill"
            );
        }
        assert_eq!(
            decide_liveness(Ok(()), Err(Error::from(ErrorKind::PermissionDenied)), 7),
            Liveness::Unknown,
            "hidepid"
        );
        assert_eq!(
            decide_liveness(Ok(()), ok(7), 0),
            Liveness::Unknown,
            "a client that could not read its own start time is never judged by it"
        );
    }

    #[test]
    fn an_exited_child_not_yet_waited_for_is_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Read while it may still run, or as the zombie (which keeps its start time).
        let start = process_start_time(pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if matches!(read_stat(pid), Ok(('Z', _))) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let start = start.or_else(|| process_start_time(pid)).unwrap();
        assert_eq!(process_liveness(pid, start), Liveness::Gone, "a zombie");
        child.wait().unwrap();
        assert_eq!(process_liveness(pid, start), Liveness::Gone, "reaped");
    }

    #[test]
    fn the_state_letter_follows_the_last_parenthesis() {
        assert_eq!(state_of("42 (a) b) Z 1 2"), Some('Z'));
        assert_eq!(state_of("42 (sleep) S 1 2"), Some('S'));
        assert_eq!(state_of("42 no parens"), None);
        assert_eq!(state_of("42 (x)"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_gone() {
        let me = std::process::id();
        let start = process_start_time(me).expect("own /proc entry");
        assert_eq!(process_liveness(me, start), Liveness::Alive);
        assert_eq!(process_liveness(me, start + 1), Liveness::Gone);
        assert_eq!(process_liveness(me, 0), Liveness::Unknown);
        assert!(process_alive(me, 0), "unknown counts as alive");
        // pid_max is at most 2^22: this pid never exists.
        assert_eq!(process_liveness(0x7fff_fff0, 1), Liveness::Gone);
    }

    #[test]
    fn the_pid_namespace_is_part_of_the_liveness_identity() {
        let a = HostIdentity {
            name: "h".into(),
            boot_id: "b".into(),
            pid_ns: 4026531836,
        };
        let b = HostIdentity {
            pid_ns: 4026532000,
            ..a.clone()
        };
        let unknown = HostIdentity {
            pid_ns: 0,
            ..a.clone()
        };
        assert_eq!(a.hash(), b.hash(), "one host, one event ring");
        assert_ne!(a.liveness_hash(), b.liveness_hash());
        assert_ne!(unknown.liveness_hash(), a.liveness_hash());
        assert_ne!(unknown.liveness_hash(), b.liveness_hash());
    }
}
