//! The children's side: start-up, and what every role shares.
//!
//! Every child opens the inherited region (`fd:N`), attaches, reports `ready` with the address its
//! mapping landed at, then plays its role:
//!
//! `script` (in `script.rs`) reads commands on stdin and answers each with one report, so the
//! parent can sequence several processes step by step; the workloads (`workloads.rs`) run on their
//! own once started. This file holds what they share: the arguments, the coordination region
//! (barriers), and the checks applied to every object a child is handed.
//!
//! A child panics on any broken invariant; the parent sees the panic in its output and its exit
//! status.

use gismo_platform::sync::{AtomicU64, Ordering};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use gismo_core::store::{Client, CreateBuffer, CreateInfo, ObjectId, ObjectRef, Store, StoreError};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

use crate::harness::{ARGS_ENV, COORD_FD_ENV, COORD_WORDS, FD_ENV, SHIFT_ENV};
use crate::payload::{self, Header};
use crate::{script, workloads};

/// Prints one report line for the parent.
pub fn report(kind: &str, body: std::fmt::Arguments<'_>) {
    println!("@@ {kind} {body}");
}

/// `report!("kind", "format", args...)`: one report line for the parent.
macro_rules! report {
    ($kind:expr) => { $crate::child::report($kind, format_args!("")) };
    ($kind:expr, $($arg:tt)*) => { $crate::child::report($kind, format_args!($($arg)*)) };
}

/// Microseconds since the Unix epoch (comparable across the processes of one machine).
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A role's `key=value` arguments.
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn from_env() -> Args {
        let raw = std::env::var(ARGS_ENV).unwrap_or_default();
        Args(
            raw.split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn num(&self, key: &str) -> u64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("role argument `{key}` missing or not a number"))
    }

    pub fn list(&self, key: &str) -> Vec<u64> {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("role argument `{key}` missing"))
            .split(',')
            .map(|v| v.parse().expect("a number"))
            .collect()
    }
}

/// The small shared region the parent made for coordination (barriers, counters).
pub struct Coord(Region);

impl Coord {
    pub fn open() -> Coord {
        let fd: i32 = env_num(COORD_FD_ENV) as i32;
        Coord(
            Region::open(&RegionSpec::Fd(fd), &RegionOptions::default())
                .expect("open the coordination region"),
        )
    }

    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < COORD_WORDS);
        gismo_platform::shm::view::<AtomicU64>(&self.0, i * 8).expect("coordination word")
    }

    /// Round `round` of a barrier of `parties` processes on word `i`: the counter only grows, so
    /// round `r` is complete once it reaches `parties * (r + 1)`.
    pub fn barrier(&self, i: usize, parties: u64, round: u64) {
        let w = self.word(i);
        w.fetch_add(1, Ordering::AcqRel);
        while w.load(Ordering::Acquire) < parties * (round + 1) {
            std::thread::yield_now();
        }
    }
}

fn env_num(key: &str) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing or not a number"))
}

/// Entry point of every child.
pub fn run(role: &str) {
    if let Ok(bytes) = std::env::var(SHIFT_ENV) {
        // Occupy some address space first, so this child's region mapping lands elsewhere than
        // its siblings' even without ASLR. Kept for the life of the process.
        let len: usize = bytes.parse().expect("shift in bytes");
        let pad = memmap2::MmapOptions::new()
            .len(len)
            .map_anon()
            .expect("reserve address space");
        std::mem::forget(pad);
    }
    let fd = env_num(FD_ENV) as i32;
    let region = Region::open(&RegionSpec::Fd(fd), &RegionOptions::default())
        .expect("open the inherited region");
    let store = if crate::harness::emulated() {
        // SAFETY: the view mirrors this process's own mapping, which the store keeps alive.
        let view =
            unsafe { gismo_platform::coherence::EmulatedHost::new(region.as_ptr(), region.len()) };
        let coherence = gismo_platform::coherence::Coherence::emulated(
            gismo_platform::coherence::CoherenceMode::Flush,
            view,
        );
        let store =
            Store::attach_with(region, coherence).expect("attach to the store as an emulated host");
        assert_ne!(
            store.payload_base(),
            store.region().as_ptr().cast_const(),
            "payloads go through the private view"
        );
        store
    } else {
        Store::attach(region).expect("attach to the store")
    };
    let host = std::env::var("GISMO_HOST").unwrap_or_default();
    report!(
        "ready",
        "base={:#x} len={} pid={} host={host}",
        store.region().as_ptr() as usize,
        store.region().len(),
        std::process::id()
    );
    let args = Args::from_env();
    match role {
        "script" => script::script(&store, &host),
        "race" => workloads::race(&store, &args),
        "unique" => workloads::unique(&store, &args),
        "stress" => workloads::stress(&store, &args),
        "stress-final" => workloads::stress_final(&store),
        "churn" => workloads::churn(&store, &args),
        other => panic!("unknown child role {other:?}"),
    }
}

/// Whether `ptr..ptr+len` lies inside this process's own view of the region's payloads (its
/// mapping, or its private view as an emulated host).
pub fn inside_mapping(store: &Store, ptr: *const u8, len: usize) -> bool {
    let base = store.payload_base() as usize;
    let end = base + store.region().len();
    let p = ptr as usize;
    p >= base && p.checked_add(len).is_some_and(|e| e <= end)
}

/// Verifies an object handed out by `get`: payload checksum, header, and zero copy (the bytes are
/// in this process's mapping of the region). Panics on a violation.
pub fn check_object(store: &Store, obj: &ObjectRef<'_>) -> u64 {
    let data = obj.data();
    let sum = payload::verify(obj.id(), data, obj.metadata())
        .unwrap_or_else(|e| panic!("corrupt object: {e}"));
    assert!(
        inside_mapping(store, obj.as_ptr(), data.len() + obj.metadata().len()),
        "object {} at {:p} is not inside this process's mapping at {:p}+{:#x}",
        obj.id(),
        obj.as_ptr(),
        store.payload_base(),
        store.region().len()
    );
    sum
}

/// Creates `id` with `size` bytes of the pattern of `seed`, unsealed.
pub fn create_filled<'c>(
    client: &'c Client,
    id: &ObjectId,
    size: u64,
    seed: u64,
) -> Result<CreateBuffer<'c>, StoreError> {
    let header = Header::new(id, size, seed);
    let mut buf = client.create(id, size, &header.encode(), &CreateInfo::default())?;
    payload::fill(buf.data_mut(), &header);
    Ok(buf)
}

pub fn error_name(e: &StoreError) -> String {
    let s = format!("{e:?}");
    s.split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}
