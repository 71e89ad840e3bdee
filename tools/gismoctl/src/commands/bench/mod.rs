//! `gismoctl bench`: multi-process measurements of a store, directly on a region or through any
//! object store plugin (issue 9 §1; criterion covers the single-process micro-benchmarks).
//!
//! Each *run* is a set of worker processes — this same binary, re-executed as the hidden
//! `bench-worker` with the same region or plugin flags — doing one role's loop for `--seconds`
//! (see `worker.rs`). Processes, not threads: every worker is its own client with its own
//! mapping, as Ray's workers are. The runs, in order:
//!
//! | op | processes | timed operation |
//! |---|---|---|
//! | `get` | 1 | get + release of a sealed object (a hit), per `--sizes` |
//! | `put` | 1 | create + write + seal, per `--sizes` (the delete after each is not timed) |
//! | `wait` | 2 | a get blocked on an object, woken by another process's seal (8-byte objects) |
//! | `transfer` | 2 | create + write + seal in one process to the end of a full read in the other, per `--sizes` |
//! | `throughput` | each of `--processes` | put + get (full copy) + delete loops, `--size` objects |
//!
//! The parent shows a progress bar on standard error (a terminal only, never with `--json`),
//! merges the workers' latency histograms, and prints one row per run: operations, ops/s, GB/s
//! (payload bytes moved by the timed operations), and latency mean, p50, p99 and p99.9.

mod histogram;
mod report;
pub mod worker;

use std::io::{IsTerminal, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use self::report::{Row, Summary};
use self::worker::WorkerReport;
use crate::cli::{BenchArgs, BenchOp, BenchRole};
use crate::commands::Target;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::{output, region_access};

/// Size of the `wait` run's objects (just the timestamp).
const WAIT_SIZE: u64 = 8;

/// One run: its workers' roles (worker 0 measures in the two-process runs).
struct Run {
    op: BenchOp,
    size: u64,
    roles: Vec<BenchRole>,
}

fn plan(args: &BenchArgs) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut ops = args.ops.clone();
    ops.dedup();
    for op in ops {
        let per_size = |roles: &[BenchRole]| -> Vec<Run> {
            args.sizes
                .iter()
                .map(|s| Run {
                    op,
                    size: s.0,
                    roles: roles.to_vec(),
                })
                .collect()
        };
        match op {
            BenchOp::Get => runs.extend(per_size(&[BenchRole::Get])),
            BenchOp::Put => runs.extend(per_size(&[BenchRole::Put])),
            BenchOp::Transfer => {
                runs.extend(per_size(&[BenchRole::TransferGet, BenchRole::TransferPut]))
            }
            BenchOp::Wait => runs.push(Run {
                op,
                size: WAIT_SIZE,
                roles: vec![BenchRole::WaitGet, BenchRole::WaitSeal],
            }),
            BenchOp::Throughput => runs.extend(args.processes.iter().map(|&n| Run {
                op,
                size: args.size.0,
                roles: vec![BenchRole::Throughput; n as usize],
            })),
        }
    }
    runs
}

fn role_name(r: BenchRole) -> &'static str {
    match r {
        BenchRole::Get => "get",
        BenchRole::Put => "put",
        BenchRole::WaitSeal => "wait-seal",
        BenchRole::WaitGet => "wait-get",
        BenchRole::TransferPut => "transfer-put",
        BenchRole::TransferGet => "transfer-get",
        BenchRole::Throughput => "throughput",
    }
}

pub fn op_name(op: BenchOp) -> &'static str {
    match op {
        BenchOp::Get => "get",
        BenchOp::Put => "put",
        BenchOp::Wait => "wait",
        BenchOp::Transfer => "transfer",
        BenchOp::Throughput => "throughput",
    }
}

/// The flags that make a worker use the same store as this process.
fn target_flags(target: &Target) -> Vec<String> {
    match target {
        Target::Plugin(p) => p.flags(),
        Target::Region(spec) => {
            let mut f = vec!["--region".to_string(), spec.to_string()];
            if let Some(offset) = region_access::region_offset() {
                f.push("--region-offset".into());
                f.push(offset.to_string());
            }
            f
        }
    }
}

/// How the summary names the store.
fn target_label(target: &Target) -> String {
    match target {
        Target::Plugin(p) => format!("plugin {}", p.label()),
        Target::Region(spec) => format!("region {spec}"),
    }
}

pub fn run(target: &Target, args: &BenchArgs) -> CmdResult {
    if args.processes.is_empty()
        || args.processes.contains(&0)
        || !(args.seconds > 0.0 && args.seconds.is_finite())
        || args.size.0 == 0
        || args.sizes.iter().any(|s| s.0 == 0)
    {
        return Err(Failure::usage(
            "bench needs --processes >= 1, --seconds > 0, and sizes > 0",
        ));
    }
    // Make the store once first, so a bad region or plugin fails here with one line, not once
    // per worker.
    match target {
        Target::Region(spec) => drop(region_access::attach(spec)?),
        Target::Plugin(p) => {
            let c = p.client()?;
            let _ = c.disconnect();
        }
    }
    let exe =
        std::env::current_exe().map_err(|e| Failure::io("finding the gismoctl executable", &e))?;
    let runs = plan(args);
    let duration_ms = ((args.seconds * 1000.0) as u64).max(1);
    let bar = progress_bar(runs.len() as u64 * duration_ms, args.json);
    let base = run_base();
    let mut rows = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        bar.set_message(format!(
            "{} {} x{}",
            op_name(r.op),
            gismo_platform::units::ByteSize(r.size),
            r.roles.len()
        ));
        let done = i as u64 * duration_ms;
        let spawned = spawn_run(&exe, target, r, base.wrapping_add(i as u32), duration_ms)?;
        let reports = finish_run(spawned, |elapsed_ms| {
            bar.set_position(done + elapsed_ms.min(duration_ms));
        });
        let reports = match reports {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        rows.push(Row::new(
            op_name(r.op),
            r.size,
            r.roles.len() as u32,
            &reports,
        ));
    }
    bar.finish_and_clear();
    let summary = Summary {
        target: target_label(target),
        seconds: args.seconds,
        rows,
    };
    if args.json {
        output::json(&summary.to_json())
    } else {
        output::stdout(&summary.to_text())
    }
}

/// A number that tells this invocation's objects apart from any other's.
fn run_base() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::process::id().rotate_left(16) ^ nanos
}

fn progress_bar(total_ms: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_ms);
    if let Ok(style) = ProgressStyle::with_template("{msg:<28} [{bar:40}] {percent:>3}%") {
        bar.set_style(style.progress_chars("#>-"));
    }
    bar
}

fn spawn_run(
    exe: &std::path::Path,
    target: &Target,
    r: &Run,
    run_id: u32,
    duration_ms: u64,
) -> CmdResult<Vec<Child>> {
    let mut children: Vec<Child> = Vec::new();
    for (worker, role) in r.roles.iter().enumerate() {
        let child = Command::new(exe)
            .args(target_flags(target))
            .arg("bench-worker")
            .args(["--role", role_name(*role)])
            .args(["--run", &run_id.to_string()])
            .args(["--worker", &worker.to_string()])
            .args(["--size", &r.size.to_string()])
            .args(["--duration-ms", &duration_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                kill_all(&mut children);
                return Err(Failure::io("starting a bench worker", &e));
            }
        }
    }
    Ok(children)
}

fn kill_all(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits for every worker of a run (reporting progress); the first failure kills the others
/// (a two-process run's peer would otherwise wait for it in vain).
fn finish_run(mut children: Vec<Child>, progress: impl Fn(u64)) -> CmdResult<Vec<WorkerReport>> {
    let start = std::time::Instant::now();
    let mut exited = vec![None; children.len()];
    while exited.iter().any(Option::is_none) {
        for (i, c) in children.iter_mut().enumerate() {
            if exited[i].is_none() {
                exited[i] = c
                    .try_wait()
                    .map_err(|e| Failure::io("waiting for a bench worker", &e))?;
            }
        }
        if exited.iter().flatten().any(|s| !s.success()) {
            break;
        }
        progress(start.elapsed().as_millis() as u64);
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed = exited.iter().any(|s| s.is_some_and(|s| !s.success()));
    if failed {
        for (i, c) in children.iter_mut().enumerate() {
            if exited[i].is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut reports = Vec::new();
    let mut first_error = None;
    for (i, c) in children.iter_mut().enumerate() {
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut s) = c.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(mut s) = c.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        match exited[i] {
            Some(s) if s.success() => match serde_json::from_str::<WorkerReport>(out.trim()) {
                Ok(r) => reports.push(r),
                Err(e) => {
                    first_error = first_error.or(Some((None, format!("bad worker report: {e}"))));
                }
            },
            Some(s) => {
                let line = err.trim().trim_start_matches("gismoctl: ").to_string();
                let code = s.code().and_then(ExitCode::from_code);
                first_error = first_error.or(Some((code, line)));
            }
            None => {}
        }
    }
    // The worker's own exit code (store full, region unusable, ...) is the run's.
    match first_error {
        Some((code, e)) => Err(Failure::new(
            code.unwrap_or(ExitCode::Error),
            format!("a bench worker failed: {e}"),
        )),
        None => Ok(reports),
    }
}
