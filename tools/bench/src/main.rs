//! `gismo-bench report`: runs the same operations over every store and the physical limits in
//! one run, and rewrites the report section of `docs/benchmarks.md` (tables, ratios, goals,
//! plots in `docs/bench/`). Ray's own numbers come from `tools/bench-ray.sh` (opt-in) and the
//! multi-process runs from `gismoctl bench --json`, when present.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gismo_bench::limits::{self, Copier};
use gismo_bench::ops;
use gismo_bench::scale;
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
    /// Maintenance and a 1 MiB put on a big, full region (256 GiB sparse, 10^6 live objects):
    /// prints a Markdown table with the goals of issue 15 §5.
    Scale {
        /// A small run (8 GiB, 20,000 objects): checks the harness only.
        #[arg(long)]
        quick: bool,
        /// Region size in GiB (default 256; 8 with --quick).
        #[arg(long)]
        region_gib: Option<u64>,
        /// Live small objects (default 10^6; 20,000 with --quick).
        #[arg(long)]
        objects: Option<u64>,
    },
    /// The holder process of `scale` (killed by it).
    #[command(hide = true)]
    ScaleChild,
}

fn main() {
    match Cli::parse().cmd {
        Cmd::Report {
            quick,
            smoke,
            out,
            plots,
            ray,
            gismoctl,
            json,
        } => report(quick, smoke, out, plots, ray, gismoctl, json),
        Cmd::Scale {
            quick,
            region_gib,
            objects,
        } => scale(quick, region_gib, objects),
        Cmd::ScaleChild => {
            if let Err(e) = scale::child() {
                println!("FAILED: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn scale(quick: bool, region_gib: Option<u64>, objects: Option<u64>) {
    let mut cfg = if quick {
        scale::ScaleConfig::quick()
    } else {
        scale::ScaleConfig::full()
    };
    if let Some(g) = region_gib {
        cfg.region_bytes = g << 30;
    }
    if let Some(n) = objects {
        cfg.objects = n;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| {
        eprintln!("gismo-bench: cannot find this program: {e}");
        std::process::exit(1);
    });
    eprintln!(
        "scale: {} GiB region, {} objects ...",
        cfg.region_bytes >> 30,
        cfg.objects
    );
    match scale::run(&cfg, &exe) {
        Ok(r) => print!("{}", r.markdown()),
        Err(e) => {
            eprintln!("gismo-bench scale: {e}");
            std::process::exit(1);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    quick: bool,
    smoke: bool,
    out: PathBuf,
    plots: PathBuf,
    ray: PathBuf,
    gismoctl: PathBuf,
    json: Option<PathBuf>,
) {
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
