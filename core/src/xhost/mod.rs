//! Protocol v2's cross-host building blocks (`docs/protocol-v2.md`): structures that several
//! hosts share without cross-host coherence. Each line has one writer *host*; other hosts only
//! read it, after evicting it, and validate what they read. Within a host, processes may still
//! use atomics among themselves (they share its caches).
//!
//! * [`lines`] — write back and evict region words through the process's [`Coherence`].
//! * [`record`] — a single-writer record with a sequence word that readers validate.
//! * [`hosts`] — host registers: join (claim and confirm an index), heartbeat, liveness judged
//!   on the observer's clock, takeover and the fence check.
//! * [`lease`] — the leader lease from ballots in the host registers (no CAS).
//! * [`ring`] — a message ring from one host to another: cells written by the source, the
//!   consumer's `tail` by the destination, holes of dead producers skipped after a timeout.
//! * [`ticker`] — which of a host's processes writes its register (a host-local file lock),
//!   and the handover when it dies.
//!
//! With `hardware` coherence (one host, or hardware-coherent CXL) the write-backs and evictions
//! are no-ops and the same code runs; under the whole-region emulator
//! (`gismo_platform::emulation`) they are the only way lines move between hosts.
//!
//! [`Coherence`]: crate::coherence::Coherence

pub mod hosts;
pub mod lease;
pub mod lines;
pub mod record;
pub mod ring;
pub mod ticker;

#[cfg(all(test, not(loom)))]
mod hosts_tests;
#[cfg(all(test, not(loom)))]
mod lease_model;
#[cfg(all(test, not(loom)))]
mod ring_tests;
#[cfg(all(test, not(loom)))]
mod tests;
#[cfg(all(test, not(loom)))]
mod ticker_tests;
