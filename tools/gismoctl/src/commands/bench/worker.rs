//! The hidden `gismoctl bench-worker`: one process's loop of puts and gets, reported as one JSON
//! line on standard output for the parent `gismoctl bench` to merge.

use std::time::{Duration, Instant};

use gismo::region::RegionSpec;
use gismo::store::{CreateInfo, ObjectId};
use serde::{Deserialize, Serialize};

use super::histogram::Histogram;
use crate::cli::BenchWorkerArgs;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::{output, region_access};

/// What one worker did.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub puts: u64,
    pub gets: u64,
    pub bytes: u64,
    pub elapsed_ns: u64,
    pub put_ns: Histogram,
    pub get_ns: Histogram,
}

/// A worker's object ids: its number in the first bytes, a counter after, so workers never
/// collide.
fn object_id(worker: u32, n: u64) -> ObjectId {
    let mut id = [0u8; 28];
    id[..4].copy_from_slice(&worker.to_le_bytes());
    id[4..12].copy_from_slice(&n.to_le_bytes());
    id[12] = 0xbe;
    ObjectId(id)
}

pub fn run(spec: &RegionSpec, args: &BenchWorkerArgs) -> CmdResult {
    let client = region_access::connect(spec)?;
    let size = args.size.0;
    let pattern: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut sink = vec![0u8; size as usize];
    let mut report = WorkerReport::default();
    let store_err = |what: &str, e| Failure::store(format!("bench {what}"), e);
    let start = Instant::now();
    let deadline = start + Duration::from_millis(args.duration_ms);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let id = object_id(args.worker, n);
        n += 1;
        let t = Instant::now();
        let mut buf = client
            .create(&id, size, b"", &CreateInfo::default())
            .map_err(|e| store_err("put", e))?;
        buf.data_mut().copy_from_slice(&pattern);
        buf.seal().map_err(|e| store_err("seal", e))?;
        report.put_ns.record(t.elapsed().as_nanos() as u64);
        report.puts += 1;

        let t = Instant::now();
        {
            let obj = client
                .get(&id, Some(Duration::ZERO))
                .map_err(|e| store_err("get", e))?
                .ok_or_else(|| Failure::new(ExitCode::Error, "bench: own object vanished"))?;
            sink.copy_from_slice(obj.data());
        }
        report.get_ns.record(t.elapsed().as_nanos() as u64);
        report.gets += 1;
        report.bytes += 2 * size;
        client.delete(&id).map_err(|e| store_err("delete", e))?;
    }
    report.elapsed_ns = start.elapsed().as_nanos() as u64;
    std::hint::black_box(&sink);
    let line = serde_json::to_string(&report)
        .map_err(|e| Failure::new(ExitCode::Error, format!("json: {e}")))?;
    output::stdout(&format!("{line}\n"))
}
