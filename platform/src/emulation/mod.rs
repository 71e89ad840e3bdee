//! A non-coherent multi-host emulator for a whole region: metadata and payloads.
//!
//! # Why
//!
//! Processes (and QEMU guests) on one machine share its caches, so a test run there can never
//! show what happens on CXL memory shared by hosts *without* cross-host coherence: a CAS on host
//! A's cached line is invisible to host B, a line B keeps in its cache stays stale until B evicts
//! it, and two hosts that both "win" the same CAS both write their line back (the last write-back
//! wins). The payload-only emulation (`coherence::EmulatedHost`) keeps metadata in the shared
//! mapping; this one emulates every byte of the region.
//!
//! # The model
//!
//! Every emulated host is a *cache* over the device:
//!
//! | hardware | emulation |
//! |---|---|
//! | device memory | the region itself (its file, memfd or device) |
//! | one host's cache | `DIR/HOST.view`, a file as long as the region that every process of the host maps: their loads, stores and atomics act on it, so they stay coherent with each other |
//! | which lines are dirty | `DIR/HOST.clean`: what the host last fetched or wrote back; a line is dirty where the view differs from it |
//! | write back a line (`clwb`) | copy view → device, clean := what was copied |
//! | evict a line (`clflushopt`) | write back if dirty, then device → view, clean := device |
//! | spontaneous write-back | a dirty line is written back at a random moment (seeded) |
//! | spontaneous refresh | a clean line that is stale is refetched at a random moment; a stale clean line may also stay stale for as long as nothing touches it |
//! | a cold cache at the host's first attach | the view and clean copy start as a snapshot of the device |
//!
//! A process joins an emulated host from its environment, so `gismoctl`, `gismo-server`,
//! `libgismo.so` and the Python package run as different hosts without code changes:
//! [`EmulationConfig::from_env`] reads `GISMO_EMULATED_HOST` and `GISMO_EMULATION_DIR`, and
//! [`Region::open`](crate::region::Region::open) / `create` then map the host's view instead of
//! the device ([`Region::emulated_host`](crate::region::Region::emulated_host)). The coherence
//! layer's `memory_copy`, `flush` and `invalidate` act on the view: they are the only way bytes
//! move between hosts, apart from the spontaneous events.
//!
//! # Line transfers and the host's own stores
//!
//! A transfer moves one 64-byte line as eight 8-byte atomic words, holding a per-line lock
//! (striped, `DIR/lines.lock`, shared by every host of the directory) so that two transfers of
//! one line never interleave. The host's processes store into the view without that lock — they
//! are the CPUs — so a transfer must never lose such a store: a write-back records in the clean
//! copy the values it copied (a store after the copy leaves the word dirty), and a refresh
//! replaces a view word only by compare-and-swap from its clean value (a word stored to
//! meanwhile keeps the store, as a store after an eviction would on hardware: the line is
//! refetched and then written).
//!
//! A killed process can hold a line lock; the next process that waits long for it checks the
//! holder's pid and takes the lock over when it is gone.
//!
//! # Limits
//!
//! * Transfers are atomic per line against each other, not against the host's stores; the store
//!   code's own atomics stay atomic per word, as on hardware.
//! * The emulation directory belongs to one device: the host files record the device's identity
//!   (`st_dev`, `st_ino`, offset, length) and are rebuilt (cold caches) when another device is
//!   attached with the same directory.
//! * Every process of every emulated host must run on this machine (pids identify lock holders).

mod config;
mod files;
mod lines;
mod sweeper;
#[cfg(test)]
mod tests;
mod view;

pub use config::{EmulationConfig, EmulationError, DEFAULT_RATE};
pub use view::HostView;
