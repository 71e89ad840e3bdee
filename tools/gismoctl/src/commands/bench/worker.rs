//! The hidden `gismoctl bench-worker`: one process of one `bench` run, doing its role's loop
//! through an [`ObjectStoreClient`] (the region's own GISMO client, or the plugin's) and
//! reporting one JSON line on standard output for the parent to merge.
//!
//! The two-process runs pass their timestamps *in the objects*, read from the system-wide
//! monotonic clock (the processes share one machine):
//!
//! - **wait**: `wait-seal` creates object `n`, waits for the ack of `n - 1` from `wait-get`, lets
//!   it block (a short pause), writes the clock into the payload and seals; `wait-get` takes the
//!   clock when its `Get(n, -1)` returns: the latency is seal to wake-up. It then deletes `n`
//!   and seals the ack of `n`.
//! - **transfer**: `transfer-put` stamps the clock into the metadata, creates, writes the whole
//!   payload and seals, keeping at most [`WINDOW`] objects unacknowledged; `transfer-get` gets
//!   each object, copies its whole payload out, takes the clock (latency: create to read
//!   complete), deletes it and seals its ack.
//!
//! A stamp of 0 ends the pair's loop. A peer that does not answer within [`PEER_TIMEOUT_MS`]
//! fails the run: with a plugin whose store is private to each process (one that only shares
//! within a process) the cross-process runs cannot work, and say so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo::GismoClient;
use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};
use gismo_plugin::interface::{ObjectBuffer, ObjectStoreClient};
use serde::{Deserialize, Serialize};

use super::histogram::Histogram;
use crate::cli::{BenchRole, BenchWorkerArgs};
use crate::commands::Target;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::{output, region_access};

/// Objects `transfer-put` may have ahead of `transfer-get`.
const WINDOW: u64 = 4;
/// How long a worker waits for its peer before failing the run.
const PEER_TIMEOUT_MS: i64 = 30_000;
/// The pause that lets `wait-get` block before `wait-seal` seals.
const WAIT_GAP: Duration = Duration::from_micros(200);

/// What one worker did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Timed operations.
    pub ops: u64,
    /// Payload bytes moved by the timed operations.
    pub bytes: u64,
    pub elapsed_ns: u64,
    pub latency_ns: Histogram,
}

/// Object kinds within a run.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Kind {
    Object = 1,
    Ack = 2,
}

/// `run` in bytes 0..4, the `worker` in 4..8, `n` in 8..16, the kind in 16: the ids of one run
/// never collide with another's, nor the objects of one worker (or pair) with another's.
fn object_id(run: u32, worker: u32, n: u64, kind: Kind) -> ObjectId {
    let mut id = [0xbeu8; 28];
    id[..4].copy_from_slice(&run.to_le_bytes());
    id[4..8].copy_from_slice(&worker.to_le_bytes());
    id[8..16].copy_from_slice(&n.to_le_bytes());
    id[16] = kind as u8;
    ObjectId(id)
}

/// CLOCK_MONOTONIC in ns: one clock for every process of the machine (never 0).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64).max(1)
}

/// The client the worker uses: for a region, a GISMO client of it (the same interface a plugin
/// gives).
fn client(target: &Target) -> CmdResult<Arc<dyn ObjectStoreClient>> {
    match target {
        Target::Plugin(p) => p.client(),
        Target::Region(spec) => {
            let store = region_access::attach(spec)?;
            let c = GismoClient::connect(&store, "gismoctl-bench")
                .map_err(|s| Failure::status(spec, &s))?;
            Ok(Arc::new(c))
        }
    }
}

pub fn run(target: &Target, args: &BenchWorkerArgs) -> CmdResult {
    let client = client(target)?;
    let w = Worker {
        c: &*client,
        run: args.run,
        size: args.size.0,
        pattern: (0..args.size.0).map(|i| (i % 251) as u8).collect(),
    };
    let duration = Duration::from_millis(args.duration_ms);
    let report = match args.role {
        BenchRole::Get => w.get_loop(args.worker, duration),
        BenchRole::Put => w.put_loop(args.worker, duration),
        BenchRole::Throughput => w.throughput_loop(args.worker, duration),
        BenchRole::WaitSeal => w.wait_seal(duration),
        BenchRole::WaitGet => w.wait_get(),
        BenchRole::TransferPut => w.transfer_put(duration),
        BenchRole::TransferGet => w.transfer_get(),
    };
    let _ = client.disconnect();
    let line = serde_json::to_string(&report?)
        .map_err(|e| Failure::new(ExitCode::Error, format!("json: {e}")))?;
    output::stdout(&format!("{line}\n"))
}

/// The pair's worker number (both sides name the same objects).
const PAIR: u32 = 0;

struct Worker<'a> {
    c: &'a dyn ObjectStoreClient,
    run: u32,
    size: u64,
    pattern: Vec<u8>,
}

impl Worker<'_> {
    fn id(&self, worker: u32, n: u64, kind: Kind) -> ObjectId {
        object_id(self.run, worker, n, kind)
    }

    /// Create + write `data` (the pattern if `None`) + seal.
    fn put(&self, id: &ObjectId, data: Option<&[u8]>, metadata: &[u8]) -> CmdResult {
        let data = data.unwrap_or(&self.pattern);
        let mut buf = self
            .c
            .create(
                id,
                &OwnerAddress::default(),
                false,
                data.len() as u64,
                metadata,
                ObjectSource::CreatedByWorker,
            )
            .map_err(|s| Failure::status("bench create", &s))?;
        if !data.is_empty() {
            // SAFETY: `buf` is `data.len()` writable bytes of an object we created and have not
            // sealed; `data` is our own memory, so they do not overlap.
            unsafe {
                self.c
                    .memory_copy(buf.as_mut_ptr(), data.as_ptr(), data.len())
            };
        }
        let sealed = self.c.seal(id);
        drop(buf);
        sealed.map_err(|s| Failure::status("bench seal", &s))
    }

    /// `Get` of one object, waiting up to `timeout_ms`.
    fn get(&self, id: &ObjectId, timeout_ms: i64) -> CmdResult<ObjectBuffer> {
        let mut got = self
            .c
            .get(std::slice::from_ref(id), timeout_ms)
            .map_err(|s| Failure::status("bench get", &s))?;
        got.pop().flatten().ok_or_else(|| {
            Failure::new(
                ExitCode::Error,
                format!(
                    "bench: object {id} did not appear within {timeout_ms} ms (is the plugin's \
                     store shared between processes?)"
                ),
            )
        })
    }

    fn delete(&self, id: &ObjectId) -> CmdResult {
        self.c
            .delete(std::slice::from_ref(id))
            .map_err(|s| Failure::status("bench delete", &s))
    }

    /// get + release of one sealed object, as often as possible.
    fn get_loop(&self, worker: u32, duration: Duration) -> CmdResult<WorkerReport> {
        let id = self.id(worker, 0, Kind::Object);
        self.put(&id, None, b"")?;
        let mut r = WorkerReport::default();
        let start = Instant::now();
        while start.elapsed() < duration {
            let t = Instant::now();
            let object = self.get(&id, 0)?;
            std::hint::black_box(object.data().as_ptr());
            drop(object);
            r.latency_ns.record(t.elapsed().as_nanos() as u64);
            r.ops += 1;
        }
        r.elapsed_ns = start.elapsed().as_nanos() as u64;
        self.delete(&id)?;
        Ok(r)
    }

    /// create + write + seal timed; the delete after each is not.
    fn put_loop(&self, worker: u32, duration: Duration) -> CmdResult<WorkerReport> {
        let mut r = WorkerReport::default();
        let start = Instant::now();
        let mut timed = Duration::ZERO;
        let mut n = 0;
        while start.elapsed() < duration {
            let id = self.id(worker, n, Kind::Object);
            n += 1;
            let t = Instant::now();
            self.put(&id, None, b"")?;
            let took = t.elapsed();
            timed += took;
            r.latency_ns.record(took.as_nanos() as u64);
            r.ops += 1;
            r.bytes += self.size;
            self.delete(&id)?;
        }
        // Throughput of the timed part only: deletes are not puts.
        r.elapsed_ns = timed.as_nanos() as u64;
        Ok(r)
    }

    /// put, get (whole payload copied out), delete: one timed cycle.
    fn throughput_loop(&self, worker: u32, duration: Duration) -> CmdResult<WorkerReport> {
        let mut sink = vec![0u8; self.size as usize];
        let mut r = WorkerReport::default();
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < duration {
            let id = self.id(worker, n, Kind::Object);
            n += 1;
            let t = Instant::now();
            self.put(&id, None, b"")?;
            {
                let object = self.get(&id, 0)?;
                sink.copy_from_slice(object.data());
            }
            self.delete(&id)?;
            r.latency_ns.record(t.elapsed().as_nanos() as u64);
            r.ops += 1;
            r.bytes += 2 * self.size;
        }
        r.elapsed_ns = start.elapsed().as_nanos() as u64;
        std::hint::black_box(&sink);
        Ok(r)
    }

    fn wait_seal(&self, duration: Duration) -> CmdResult<WorkerReport> {
        let start = Instant::now();
        let mut n = 0;
        loop {
            let id = self.id(PAIR, n, Kind::Object);
            let stop = start.elapsed() >= duration;
            if n > 0 {
                let ack = self.id(PAIR, n - 1, Kind::Ack);
                drop(self.get(&ack, PEER_TIMEOUT_MS)?);
                self.delete(&ack)?;
                std::thread::sleep(WAIT_GAP);
            }
            let stamp = if stop { 0 } else { mono_ns() };
            self.put(&id, Some(&stamp.to_le_bytes()), b"")?;
            if stop {
                let ack = self.id(PAIR, n, Kind::Ack);
                drop(self.get(&ack, PEER_TIMEOUT_MS)?);
                self.delete(&ack)?;
                return Ok(WorkerReport::default());
            }
            n += 1;
        }
    }

    fn wait_get(&self) -> CmdResult<WorkerReport> {
        let mut r = WorkerReport::default();
        let start = Instant::now();
        for n in 0.. {
            let id = self.id(PAIR, n, Kind::Object);
            let object = self.get(&id, PEER_TIMEOUT_MS)?;
            let woke = mono_ns();
            let stamp = stamp_of(object.data());
            drop(object);
            self.delete(&id)?;
            if stamp != 0 {
                r.latency_ns.record(woke.saturating_sub(stamp));
                r.ops += 1;
            }
            self.put(&self.id(PAIR, n, Kind::Ack), Some(b""), b"")?;
            if stamp == 0 {
                break;
            }
        }
        r.elapsed_ns = start.elapsed().as_nanos() as u64;
        Ok(r)
    }

    fn transfer_put(&self, duration: Duration) -> CmdResult<WorkerReport> {
        let start = Instant::now();
        let mut n = 0;
        loop {
            if n >= WINDOW {
                let ack = self.id(PAIR, n - WINDOW, Kind::Ack);
                drop(self.get(&ack, PEER_TIMEOUT_MS)?);
                self.delete(&ack)?;
            }
            let id = self.id(PAIR, n, Kind::Object);
            if start.elapsed() >= duration {
                self.put(&id, Some(b""), &0u64.to_le_bytes())?;
                // Collect the outstanding acks, the stop marker's last.
                for k in n.saturating_sub(WINDOW - 1)..=n {
                    let ack = self.id(PAIR, k, Kind::Ack);
                    drop(self.get(&ack, PEER_TIMEOUT_MS)?);
                    self.delete(&ack)?;
                }
                return Ok(WorkerReport::default());
            }
            self.put(&id, None, &mono_ns().to_le_bytes())?;
            n += 1;
        }
    }

    fn transfer_get(&self) -> CmdResult<WorkerReport> {
        let mut sink = vec![0u8; self.size as usize];
        let mut r = WorkerReport::default();
        let start = Instant::now();
        for n in 0.. {
            let id = self.id(PAIR, n, Kind::Object);
            let object = self.get(&id, PEER_TIMEOUT_MS)?;
            let stamp = stamp_of(object.metadata());
            if stamp != 0 {
                sink.copy_from_slice(object.data());
                r.latency_ns.record(mono_ns().saturating_sub(stamp));
                r.ops += 1;
                r.bytes += self.size;
            }
            drop(object);
            self.delete(&id)?;
            self.put(&self.id(PAIR, n, Kind::Ack), Some(b""), b"")?;
            if stamp == 0 {
                break;
            }
        }
        r.elapsed_ns = start.elapsed().as_nanos() as u64;
        std::hint::black_box(&sink);
        Ok(r)
    }
}

/// The little-endian u64 at the start of `bytes` (0 if shorter).
fn stamp_of(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}
