//! Named crash points: places between two steps of a store protocol where a process may die.
//!
//! Built with the cargo feature `crashpoints`, a process whose environment names a point in
//! `GISMO_CRASHPOINT` kills itself with `SIGKILL` when it reaches that point — no unwinding, no
//! destructors, no flush: exactly what `kill -9` or an OOM kill does at that instruction.
//! `GISMO_CRASHPOINT=name:N` dies at the N-th time the point is reached (1-based; plain `name`
//! is `name:1`). With `GISMO_CRASHPOINT_ACTION=stop` the process stops itself with `SIGSTOP`
//! there instead (a process paused at that instruction, as by a debugger, a long page fault or a
//! descheduled VM, which another process may resume with `SIGCONT`). Without the feature every
//! point compiles to nothing.
//!
//! Every point has a name in [`ALL`] (`gismoctl crashpoints` prints them); the
//! [`crash_point!`](crate::crash_point) macro refuses, at compile time, a name that is not there,
//! so the list and the code cannot drift apart. The crash-point test (`core/tests/crashpoints.rs`)
//! drives every name in the list and fails for a point its workload never reaches.

/// Every crash point, in protocol order. A name is `operation.step`: the process dies after
/// `step` and before whatever follows it.
pub const ALL: &[&str] = &[
    // Store::connect
    "connect.claimed",
    "connect.table_cleared",
    "connect.fields_written",
    // OpGuard::drop (every guarded operation): `op_seq` not yet bumped
    "guard.ending",
    // Client::create
    "create.allocated",
    "create.intent_recorded",
    // Directory::insert (inside create): the slot claimed, not yet committed
    "insert.claimed",
    "create.inserted",
    "create.intent_cleared",
    "create.referenced",
    // Client::seal
    "seal.written_back",
    "seal.sealed",
    // Client::abort
    "abort.deleting",
    "abort.unreferenced",
    // Client::get (try_acquire)
    "get.referenced",
    "get.checked",
    // Client::release (drop_ref), and the deferred delete of the last release
    "release.checked",
    "release.removed",
    "release.deferred_delete",
    "release.dropped",
    // Client::delete (begin_delete), the reference check (settle), and the finish
    "delete.deleting",
    "settle.referenced",
    "settle.restored_pending",
    "delete.finished",
    // Store::evict (begin_evict)
    "evict.deleting",
    "evict.decided",
    // Store::finish_delete
    "finish_delete.claimed",
    "finish_delete.unnamed",
    "finish_delete.payload_freed",
    // Store::reap_client, and the take-over of a dead client's delete (resume_delete)
    "reap.fenced",
    "reap.intent_taken",
    "reap.aborting",
    "reap.objects_released",
    "reap.intent_freed",
    "reap.references_cleared",
    "resume.taken",
    "reap.deletes_resumed",
    // Store::collect_orphans
    "orphans.scanned",
    "orphans.freed",
    // Allocator: size-class chunks (claim, publish, pop from and push to the partial stack,
    // retire), page words changed before their summary bits (a chunk's lane, a word of a page
    // run, a word released) and the shared byte counter (blocks and page runs)
    "alloc.lane_claimed",
    "alloc.chunk_published",
    "alloc.partial_popped",
    "alloc.block_reserved",
    "alloc.run_word_claimed",
    "alloc.claimed",
    // The free-run index: leaves synced after a page-word change, inner nodes not yet
    "index.leaves_synced",
    "free.block_cleared",
    "free.chunk_listed",
    "free.chunk_retired",
    "free.page_word_released",
    "free.released",
];

/// Whether `name` is in [`ALL`] (a `const fn`, for [`crash_point!`](crate::crash_point)).
pub const fn is_known(name: &str) -> bool {
    let mut i = 0;
    while i < ALL.len() {
        if str_eq(ALL[i], name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Marks a crash point: `crash_point!("create.allocated")`. The name must be in
/// [`ALL`](crate::store::crashpoint::ALL) (checked at compile time).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {{
        const _: () = assert!(
            $crate::store::crashpoint::is_known($name),
            concat!("crash point not in crashpoint::ALL: ", $name)
        );
        $crate::store::crashpoint::reach($name);
    }};
}

/// Whether this build has live crash points (the `crashpoints` feature).
pub const ENABLED: bool = cfg!(all(feature = "crashpoints", not(loom)));

/// Called by [`crash_point!`](crate::crash_point): dies here if `GISMO_CRASHPOINT` says so.
#[inline(always)]
pub fn reach(name: &'static str) {
    #[cfg(all(feature = "crashpoints", not(loom)))]
    armed::reach(name);
    #[cfg(not(all(feature = "crashpoints", not(loom))))]
    let _ = name;
}

#[cfg(all(feature = "crashpoints", not(loom)))]
mod armed {
    use std::sync::OnceLock;

    use crate::sync::{AtomicU64, Ordering};

    /// The armed point and the hit it dies at, read once from the environment.
    struct Armed {
        name: String,
        at: u64,
        /// `SIGKILL`, or `SIGSTOP` (`GISMO_CRASHPOINT_ACTION=stop`).
        signal: i32,
        hits: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var("GISMO_CRASHPOINT").ok()?;
                let (name, at) = match spec.split_once(':') {
                    Some((n, k)) => (n.to_string(), k.parse().ok().filter(|k| *k > 0)?),
                    None => (spec, 1),
                };
                let signal = match std::env::var("GISMO_CRASHPOINT_ACTION").as_deref() {
                    Ok("stop") => libc::SIGSTOP,
                    _ => libc::SIGKILL,
                };
                Some(Armed {
                    name,
                    at,
                    signal,
                    hits: AtomicU64::new(0),
                })
            })
            .as_ref()
    }

    pub(super) fn reach(name: &'static str) {
        let Some(a) = armed() else { return };
        if a.name != name {
            return;
        }
        // Relaxed: a counter of this process's own hits; nothing is published through it.
        if a.hits.fetch_add(1, Ordering::Relaxed) + 1 == a.at {
            // SAFETY: pthread_self and pthread_kill have no memory-safety preconditions; SIGKILL
            // and SIGSTOP cannot be caught, so nothing of this process runs after it (until a
            // SIGCONT). Sent to this thread, not the process: a process-directed SIGSTOP may be
            // taken by another thread, and this one would run on for a while before the group
            // stops.
            unsafe {
                libc::pthread_kill(libc::pthread_self(), a.signal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(is_known(a));
            assert!(a.contains('.') && !a.contains(':'), "{a}");
            assert!(!ALL[i + 1..].contains(a), "{a} twice");
        }
        assert!(!is_known("create"));
        assert!(!is_known("create.allocatedx"));
    }
}
