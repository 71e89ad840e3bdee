//! `gismo-bench report`: runs the same operations over every store and the physical limits in
//! one run, and rewrites the report section of `docs/benchmarks.md` (tables, ratios, goals,
//! plots in `docs/bench/`). Ray's own numbers come from `tools/bench-ray.sh` (opt-in) and the
//! multi-process runs from `gismoctl bench --json`, when present.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gismo_bench::limits::{self, Copier};
use gismo_bench::ops;
use gismo_bench::stores;

mod report;

#[derive(Parser)]
#[command(about = "One benchmark harness over every object store")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure everything and rewrite the report section of the benchmarks page.
    Report {
        /// A short run (sizes up to 16 MiB, 0.2 s per measurement): checks the harness only.
        #[arg(long)]
        quick: bool,
        /// A tiny run (two small sizes, a few milliseconds each, no multi-process runs): the
        /// harness's own test.
        #[arg(long, hide = true)]
        smoke: bool,
        /// The page to rewrite (between its `gismo-bench report` markers).
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Where the plots go (SVG).
        #[arg(long, default_value = "docs/bench")]
        plots: PathBuf,
        /// Ray's numbers from `tools/bench-ray.sh`, included when the file exists.
        #[arg(long, default_value = "target/bench/ray.json")]
        ray: PathBuf,
        /// The `gismoctl` binary for the multi-process runs (skipped when absent).
        #[arg(long, default_value = "target/release/gismoctl")]
        gismoctl: PathBuf,
        /// Also write every number as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() {
    let Cmd::Report {
        quick,
        smoke,
        out,
        plots,
        ray,
        gismoctl,
        json,
    } = Cli::parse().cmd;
    let quick = quick || smoke;
    let budget = if smoke {
        Duration::from_millis(20)
    } else if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(2)
    };
    let sizes: Vec<usize> = if smoke {
        vec![1 << 10, 64 << 10]
    } else if quick {
        vec![1 << 10, 64 << 10, 1 << 20, 16 << 20]
    } else {
        vec![1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20]
    };
    let largest = *sizes.last().unwrap_or(&(1 << 20));
    let src: Vec<u8> = (0..largest).map(|i| (i % 251) as u8).collect();
    let mut r = report::Report::new(quick);

    eprintln!("physical limits ...");
    let mut pool = vec![0u8; if smoke { 64 << 20 } else { 1 << 30 }];
    pool.iter_mut().step_by(4096).for_each(|b| *b = 1);
    let copiers = Copier::all();
    for &size in &sizes {
        for c in &copiers {
            let s = limits::copy_bandwidth(c, &src, &mut pool, size, budget);
            r.limits.push((c.name.to_string(), size as u64, s));
        }
    }
    drop(pool);
    r.socket_rt = Some(limits::socket_round_trip(budget));

    for s in stores::all(largest as u64) {
        eprintln!("{} ...", s.name);
        r.get_hit
            .push((s.name.clone(), ops::get_release_hit(&s, budget)));
        for &size in &sizes {
            if size as u64 > s.capacity / 2 {
                continue;
            }
            let m = ops::create_write_seal(&s, &src, size, budget);
            r.puts.push((s.name.clone(), size as u64, m));
        }
    }

    let cross = if smoke {
        64 << 10
    } else if quick {
        16 << 20
    } else {
        64 << 20
    };
    if src.len() >= cross {
        eprintln!("cross-node reads ...");
        let rounds = if quick { 3 } else { 10 };
        r.cross.push(ops::cross_node_gismo(cross, &src, rounds));
        r.cross.push(ops::cross_node_plasma(cross, &src, rounds));
    }

    if !smoke {
        r.multi = report::multi_process(&gismoctl, quick);
    }
    r.ray = std::fs::read_to_string(&ray)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());

    if let Err(e) = r.write(&out, &plots, json.as_deref()) {
        eprintln!("gismo-bench: {e}");
        std::process::exit(1);
    }
    eprintln!("wrote {} and {}", out.display(), plots.display());
}
