//! The `bench` summary: one row per run, as a table or as JSON.
//!
//! JSON (`--json`), for programs:
//!
//! ```text
//! { "target": "region file:/…" | "plugin NAME", "seconds_per_run": 1.0,
//!   "runs": [ { "op": "get" | "put" | "wait" | "transfer" | "throughput",
//!               "size": BYTES, "processes": N, "ops": COUNT, "seconds": S,
//!               "ops_per_s": F, "gb_per_s": F,
//!               "latency_us": { "mean": F, "p50": F, "p99": F, "p99_9": F } }, … ] }
//! ```
//!
//! `ops` counts the timed operations of the run's measuring workers; `seconds` is the longest
//! worker's timed span; GB/s is payload bytes moved by the timed operations (a throughput cycle
//! moves its object twice: written, then read) per second, in 10^9 bytes. Percentiles are the
//! lower bounds of log-linear buckets (within ~4 %); the mean is exact.

use std::fmt::Write as _;

use gismo_platform::units::ByteSize;
use serde_json::{json, Value};

use super::histogram::Histogram;
use super::worker::WorkerReport;

pub struct Row {
    op: &'static str,
    size: u64,
    processes: u32,
    ops: u64,
    secs: f64,
    bytes: u64,
    latency: Histogram,
}

impl Row {
    pub fn new(op: &'static str, size: u64, processes: u32, reports: &[WorkerReport]) -> Row {
        let mut latency = Histogram::default();
        let mut row = Row {
            op,
            size,
            processes,
            ops: 0,
            secs: 0.0,
            bytes: 0,
            latency: Histogram::default(),
        };
        for r in reports {
            row.ops += r.ops;
            row.bytes += r.bytes;
            row.secs = row.secs.max(r.elapsed_ns as f64 / 1e9);
            latency.merge(&r.latency_ns);
        }
        row.latency = latency;
        row
    }

    fn ops_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    fn gb_per_s(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / self.secs / 1e9
        } else {
            0.0
        }
    }

    fn us(&self, q: f64) -> f64 {
        self.latency.quantile(q) as f64 / 1000.0
    }
}

pub struct Summary {
    pub target: String,
    pub seconds: f64,
    pub rows: Vec<Row>,
}

impl Summary {
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "{}, {:.2} s per run\n{:<10}  {:>9}  {:>5}  {:>9}  {:>11}  {:>7}  {:>9}  {:>9}  {:>9}  \
             {:>9}\n",
            self.target,
            self.seconds,
            "OP",
            "SIZE",
            "PROCS",
            "OPS",
            "OPS/S",
            "GB/S",
            "MEAN us",
            "P50 us",
            "P99 us",
            "P99.9 us"
        );
        for r in &self.rows {
            let _ = writeln!(
                t,
                "{:<10}  {:>9}  {:>5}  {:>9}  {:>11.0}  {:>7.3}  {:>9.1}  {:>9.1}  {:>9.1}  {:>9.1}",
                r.op,
                ByteSize(r.size).to_string(),
                r.processes,
                r.ops,
                r.ops_per_s(),
                r.gb_per_s(),
                r.latency.mean() / 1000.0,
                r.us(0.5),
                r.us(0.99),
                r.us(0.999)
            );
        }
        t
    }

    pub fn to_json(&self) -> Value {
        let runs: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "op": r.op,
                    "size": r.size,
                    "processes": r.processes,
                    "ops": r.ops,
                    "seconds": r.secs,
                    "ops_per_s": r.ops_per_s(),
                    "gb_per_s": r.gb_per_s(),
                    "latency_us": {
                        "mean": r.latency.mean() / 1000.0,
                        "p50": r.us(0.5),
                        "p99": r.us(0.99),
                        "p99_9": r.us(0.999),
                    },
                })
            })
            .collect();
        json!({
            "target": self.target,
            "seconds_per_run": self.seconds,
            "runs": runs,
        })
    }
}
