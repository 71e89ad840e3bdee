//! `gismoctl bench`: N worker processes (this same binary, run as the hidden `bench-worker`)
//! each put an object, get it back and delete it, in a loop for a fixed time. The parent shows
//! progress on standard error and prints ops/s, GB/s and latency percentiles (p50, p99, p99.9)
//! per operation, or `--json`.
//!
//! Processes, not threads: every worker is its own client with its own mapping, as Ray's
//! workers are.

mod histogram;
pub mod worker;

use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gismo::region::RegionSpec;
use gismo::units::ByteSize;
use serde_json::json;

use self::histogram::Histogram;
use self::worker::WorkerReport;
use crate::cli::BenchArgs;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::output;

pub fn run(spec: &RegionSpec, args: &BenchArgs) -> CmdResult {
    if args.processes == 0 || args.seconds <= 0.0 || args.size.0 == 0 {
        return Err(Failure::usage(
            "bench needs --processes >= 1, --seconds > 0 and --size > 0",
        ));
    }
    // Attach once first, so a bad region fails here with one line, not N times.
    drop(crate::region_access::attach(spec)?);
    let exe =
        std::env::current_exe().map_err(|e| Failure::io("finding the gismoctl executable", &e))?;
    let duration_ms = (args.seconds * 1000.0) as u64;
    let mut children: Vec<Child> = Vec::new();
    for worker in 0..args.processes {
        let child = Command::new(&exe)
            .arg("--region")
            .arg(spec.to_string())
            .args(["bench-worker", "--worker"])
            .arg(worker.to_string())
            .arg("--size")
            .arg(args.size.0.to_string())
            .arg("--duration-ms")
            .arg(duration_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(Failure::io("starting a bench worker", &e));
            }
        }
    }
    progress(Duration::from_millis(duration_ms), args.json);
    let mut total = WorkerReport::default();
    let mut first_error = None;
    for mut child in children {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = child.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        let status = child
            .wait()
            .map_err(|e| Failure::io("waiting for a bench worker", &e))?;
        if !status.success() {
            first_error = first_error.or(Some(err.trim().to_string()));
            continue;
        }
        match serde_json::from_str::<WorkerReport>(out.trim()) {
            Ok(r) => merge(&mut total, &r),
            Err(e) => first_error = first_error.or(Some(format!("bad worker report: {e}"))),
        }
    }
    if let Some(e) = first_error {
        return Err(Failure::new(
            ExitCode::Error,
            format!("a bench worker failed: {e}"),
        ));
    }
    let summary = Summary::new(&total, args);
    if args.json {
        output::json(&summary.to_json(args))
    } else {
        output::stdout(&summary.to_text(args))
    }
}

fn merge(total: &mut WorkerReport, r: &WorkerReport) {
    total.puts += r.puts;
    total.gets += r.gets;
    total.bytes += r.bytes;
    total.elapsed_ns = total.elapsed_ns.max(r.elapsed_ns);
    total.put_ns.merge(&r.put_ns);
    total.get_ns.merge(&r.get_ns);
}

/// A time bar on standard error while the workers run (only on a terminal, and not with
/// `--json`, whose output is for programs).
fn progress(duration: Duration, json: bool) {
    let show = !json && std::io::stderr().is_terminal();
    let start = Instant::now();
    while start.elapsed() < duration {
        if show {
            let done = start.elapsed().as_secs_f64() / duration.as_secs_f64();
            let filled = ((done * 40.0) as usize).min(40);
            let _ = write!(
                std::io::stderr(),
                "\r[{}{}] {:>5.1}/{:.1} s",
                "#".repeat(filled),
                " ".repeat(40 - filled),
                start.elapsed().as_secs_f64(),
                duration.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(100).min(duration));
    }
    if show {
        let _ = writeln!(std::io::stderr());
    }
}

struct OpSummary {
    name: &'static str,
    ops: u64,
    ops_per_s: f64,
    gb_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
}

impl OpSummary {
    fn new(name: &'static str, ops: u64, size: u64, h: &Histogram, secs: f64) -> OpSummary {
        let us = |q| h.quantile(q) as f64 / 1000.0;
        OpSummary {
            name,
            ops,
            ops_per_s: ops as f64 / secs,
            gb_per_s: (ops * size) as f64 / secs / 1e9,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
        }
    }
}

struct Summary {
    ops: Vec<OpSummary>,
    secs: f64,
}

impl Summary {
    fn new(t: &WorkerReport, args: &BenchArgs) -> Summary {
        let secs = (t.elapsed_ns as f64 / 1e9).max(1e-9);
        let size = args.size.0;
        Summary {
            ops: vec![
                OpSummary::new("put", t.puts, size, &t.put_ns, secs),
                OpSummary::new("get", t.gets, size, &t.get_ns, secs),
            ],
            secs,
        }
    }

    fn to_text(&self, args: &BenchArgs) -> String {
        let mut t = format!(
            "{} process(es), {} objects, {:.2} s\n{:<4}  {:>10}  {:>12}  {:>8}  {:>10}  {:>10}  \
             {:>10}\n",
            args.processes,
            ByteSize(args.size.0),
            self.secs,
            "OP",
            "OPS",
            "OPS/S",
            "GB/S",
            "P50 us",
            "P99 us",
            "P99.9 us"
        );
        for o in &self.ops {
            let _ = writeln!(
                t,
                "{:<4}  {:>10}  {:>12.0}  {:>8.3}  {:>10.1}  {:>10.1}  {:>10.1}",
                o.name, o.ops, o.ops_per_s, o.gb_per_s, o.p50_us, o.p99_us, o.p999_us
            );
        }
        t
    }

    fn to_json(&self, args: &BenchArgs) -> serde_json::Value {
        let ops: serde_json::Map<String, serde_json::Value> = self
            .ops
            .iter()
            .map(|o| {
                (
                    o.name.to_string(),
                    json!({
                        "ops": o.ops,
                        "ops_per_s": o.ops_per_s,
                        "gb_per_s": o.gb_per_s,
                        "latency_us": { "p50": o.p50_us, "p99": o.p99_us, "p99_9": o.p999_us },
                    }),
                )
            })
            .collect();
        json!({
            "processes": args.processes,
            "size": args.size.0,
            "seconds": self.secs,
            "ops": ops,
        })
    }
}
