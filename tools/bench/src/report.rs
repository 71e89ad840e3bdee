//! Turns the measurements into the report section of `docs/benchmarks.md` and its plots.

use std::fmt::Write as _;
use std::path::Path;

use gismo_bench::ops::CrossNode;
use gismo_bench::stats::{human_bytes, human_ns, Summary};
use plotters::prelude::*;
use serde_json::Value;

const BEGIN: &str = "<!-- BEGIN gismo-bench report";
const END: &str = "<!-- END gismo-bench report -->";

#[derive(Default)]
pub struct Report {
    pub quick: bool,
    /// (copier, size, summary)
    pub limits: Vec<(String, u64, Summary)>,
    pub socket_rt: Option<Summary>,
    /// (store, summary)
    pub get_hit: Vec<(String, Summary)>,
    /// (store, size, summary)
    pub puts: Vec<(String, u64, Summary)>,
    pub cross: Vec<CrossNode>,
    /// `gismoctl bench --json` results, by store.
    pub multi: Vec<(String, Value)>,
    pub ray: Option<Value>,
}

fn machine() -> String {
    let cpu = gismo_platform::coherence::cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0.0, |kb| kb as f64 / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_string());
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB memory, Linux {kernel}")
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map_or_else(
            || "?".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

impl Report {
    pub fn new(quick: bool) -> Report {
        Report {
            quick,
            ..Report::default()
        }
    }

    fn get(&self, store: &str) -> Option<&Summary> {
        self.get_hit
            .iter()
            .find(|(s, _)| s == store)
            .map(|(_, m)| m)
    }

    fn put(&self, store: &str, size: u64) -> Option<&Summary> {
        self.puts
            .iter()
            .find(|(s, z, _)| s == store && *z == size)
            .map(|(_, _, m)| m)
    }

    fn limit(&self, name: &str, size: u64) -> Option<&Summary> {
        self.limits
            .iter()
            .find(|(n, z, _)| n == name && *z == size)
            .map(|(_, _, m)| m)
    }

    fn stores(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for (s, _) in &self.get_hit {
            if !v.contains(s) {
                v.push(s.clone());
            }
        }
        v
    }

    fn sizes(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.puts.iter().map(|(_, z, _)| *z).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn ray_num(&self, path: &[&str]) -> Option<f64> {
        let mut v = self.ray.as_ref()?;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_f64()
    }

    /// The markdown section.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let w = &mut m;
        let _ = writeln!(
            w,
            "{BEGIN}: regenerate with `cargo run --release -p gismo-bench -- report` -->\n"
        );
        let _ = writeln!(w, "## Every store in one run (`gismo-bench report`)\n");
        let _ = writeln!(
            w,
            "Measured {}{} on {}. Every store runs the same loops through \
             `ObjectStoreClient` (`tools/bench/src/ops.rs`); the physical limits are measured \
             in the same run. Latencies are per operation (mean, and percentiles of the \
             samples); bandwidth is 10^9 bytes/s at the median (a few preempted samples on a \
             2-core machine move the mean far more than the typical operation). `gismo-*` clients map the \
             region; `plasma` is this project's plasma fallback, whose clients talk to its \
             store over a Unix socket as Ray's workers do; `redis` is the redis plugin against \
             a local `redis-server`.\n",
            today(),
            if self.quick { " (quick run)" } else { "" },
            machine()
        );
        self.goals(w);
        self.get_table(w);
        self.put_table(w);
        self.limits_table(w);
        self.cross_table(w);
        self.multi_table(w);
        self.ray_table(w);
        self.slower(w);
        let _ = writeln!(
            w,
            "![latency of create+write+seal against object size](bench/latency.svg)\n\n\
             ![bandwidth of create+write+seal against object size](bench/bandwidth.svg)\n"
        );
        let _ = writeln!(w, "{END}");
        m
    }

    fn goals(&self, w: &mut String) {
        let _ = writeln!(w, "### Goals (ratios measured in this run)\n");
        let _ = writeln!(
            w,
            "Each ratio is given at the mean (what criterion estimates, and what throughput \
             sees) and at the median (the typical operation). Socket-based stores pay this \
             machine's socket round trip (below): on this 2-vCPU virtual machine, waking a \
             thread whose vCPU has gone idle costs tens of microseconds when the machine is \
             quiet, and a few microseconds when both vCPUs are busy.\n"
        );
        let _ = writeln!(w, "| goal | measured | met |\n|---|---|---|");
        let verdict = |mean: bool, p50: bool| match (mean, p50) {
            (true, true) => "yes",
            (true, false) => "at the mean, **not at the median**",
            (false, true) => "at the median, **not at the mean**",
            (false, false) => "**no**",
        };
        let both = |a: &Summary, b: &Summary| (b.mean_ns / a.mean_ns, b.p50_ns / a.p50_ns);
        if let (Some(g), Some(p)) = (self.get("gismo-hardware"), self.get("plasma")) {
            let (m, q) = both(g, p);
            let _ = writeln!(
                w,
                "| GISMO get hit ≥ 100× faster than the plasma fallback | mean {m:.0}× ({} vs {}) · p50 {q:.0}× ({} vs {}) | {} |",
                human_ns(g.mean_ns),
                human_ns(p.mean_ns),
                human_ns(g.p50_ns),
                human_ns(p.p50_ns),
                verdict(m >= 100.0, q >= 100.0)
            );
        }
        if let (Some(g), Some(rm), Some(rq)) = (
            self.get("gismo-hardware"),
            self.ray_num(&["get", "1024", "mean_ns"]),
            self.ray_num(&["get", "1024", "p50_ns"]),
        ) {
            let (m, q) = (rm / g.mean_ns, rq / g.p50_ns);
            let _ = writeln!(
                w,
                "| GISMO get hit ≥ 400× faster than `ray.get` from Python (1 KiB) | mean {m:.0}× ({}) · p50 {q:.0}× ({}) | {} |",
                human_ns(rm),
                human_ns(rq),
                verdict(m >= 400.0, q >= 400.0)
            );
        }
        for size in [16u64 << 20, 256 << 20] {
            if let (Some(g), Some(nt)) = (
                self.put("gismo-flush", size),
                self.limit("non-temporal copy", size),
            ) {
                let (m, q) = (g.gbps() / nt.gbps(), g.gbps_p50() / nt.gbps_p50());
                let _ = writeln!(
                    w,
                    "| GISMO Flush-mode put of {} ≥ 0.9× non-temporal copy bandwidth | mean {m:.2}× ({:.1} vs {:.1} GB/s) · p50 {q:.2}× ({:.1} vs {:.1} GB/s) | {} |",
                    human_bytes(size),
                    g.gbps(),
                    nt.gbps(),
                    g.gbps_p50(),
                    nt.gbps_p50(),
                    verdict(m >= 0.9, q >= 0.9)
                );
            }
            if let (Some(g), Some(rm), Some(rq)) = (
                self.put("gismo-flush", size),
                self.ray_num(&["put", &size.to_string(), "mean_ns"]),
                self.ray_num(&["put", &size.to_string(), "p50_ns"]),
            ) {
                let (rm, rq) = (size as f64 / rm, size as f64 / rq);
                let _ = writeln!(
                    w,
                    "| GISMO Flush-mode put of {} faster than `ray.put` | mean {:.1} vs {rm:.1} GB/s · p50 {:.1} vs {rq:.1} GB/s | {} |",
                    human_bytes(size),
                    g.gbps(),
                    g.gbps_p50(),
                    verdict(g.gbps() > rm, g.gbps_p50() > rq)
                );
            }
        }
        if let (Some(p), Some(ray)) = (
            self.get("plasma"),
            self.ray_num(&[
                "microbenchmark",
                "single client get calls (Plasma Store)",
                "per_second",
            ]),
        ) {
            let _ = writeln!(
                w,
                "| The plasma fallback beats Ray's plasma store: gets (Ray's microbenchmark) | {:.0} vs {ray:.0} gets/s | {} |",
                p.ops(),
                verdict(p.ops() > ray, 1e9 / p.p50_ns > ray)
            );
        }
        if let (Some(p), Some(ray)) = (
            self.put("plasma", 1 << 10),
            self.ray_num(&[
                "microbenchmark",
                "single client put calls (Plasma Store)",
                "per_second",
            ]),
        ) {
            let _ = writeln!(
                w,
                "| The plasma fallback beats Ray's plasma store: puts (Ray's microbenchmark; ours: 1 KiB create+write+seal) | {:.0} vs {ray:.0} puts/s | {} |",
                p.ops(),
                verdict(p.ops() > ray, 1e9 / p.p50_ns > ray)
            );
        }
        let g = self.cross.iter().find(|c| c.store.starts_with("gismo"));
        let p = self.cross.iter().find(|c| c.store == "plasma");
        if let (Some(g), Some(p)) = (g, p) {
            let ok = g.bytes_copied == 0 && p.bytes_copied >= p.size;
            let _ = writeln!(
                w,
                "| Cross-node read of {}: no copy through GISMO, ≥ 1 full copy through plasma | {} vs {} copied | {} |",
                human_bytes(g.size),
                human_bytes(g.bytes_copied),
                human_bytes(p.bytes_copied),
                verdict(ok, ok)
            );
        }
        let _ = writeln!(w);
    }

    fn get_table(&self, w: &mut String) {
        let _ = writeln!(w, "### get + release of a sealed 1 KiB object (hit)\n");
        let _ = writeln!(
            w,
            "| store | mean | p50 | p99 | p99.9 | gets/s | plasma ÷ store (mean · p50) |\n|---|---|---|---|---|---|---|"
        );
        let plasma = self.get("plasma").cloned();
        for (s, m) in &self.get_hit {
            let _ = writeln!(
                w,
                "| {s} | {} | {} | {} | {} | {:.0} | {} |",
                human_ns(m.mean_ns),
                human_ns(m.p50_ns),
                human_ns(m.p99_ns),
                human_ns(m.p999_ns),
                m.ops(),
                plasma.as_ref().map_or("".into(), |p| format!(
                    "{:.1}× · {:.1}×",
                    p.mean_ns / m.mean_ns,
                    p.p50_ns / m.p50_ns
                ))
            );
        }
        if let Some(rt) = &self.socket_rt {
            let _ = writeln!(
                w,
                "\nThe floor of a socket-based store: an empty request/reply over a Unix socket \
                 between two threads takes {} (p50 {}, p99 {}).\n",
                human_ns(rt.mean_ns),
                human_ns(rt.p50_ns),
                human_ns(rt.p99_ns)
            );
        }
    }

    fn put_table(&self, w: &mut String) {
        let _ = writeln!(w, "### create + write + seal\n");
        let _ = writeln!(
            w,
            "Write = the store's own `memory_copy` from a warm source. \"vs limit\" divides the \
             store's bandwidth by the non-temporal copy's at the same size (the fastest way \
             into memory that other hosts can see); \"vs plasma\" is plasma's time ÷ the \
             store's.\n"
        );
        let _ = writeln!(
            w,
            "| size | store | mean | p50 | p99 | p99.9 | GB/s (p50) | vs limit | vs plasma |\n|---|---|---|---|---|---|---|---|---|"
        );
        for size in self.sizes() {
            let nt = self
                .limit("non-temporal copy", size)
                .or_else(|| self.limit("plain copy", size));
            let plasma = self.put("plasma", size).map(|p| p.p50_ns);
            for (s, z, m) in &self.puts {
                if *z != size {
                    continue;
                }
                let _ = writeln!(
                    w,
                    "| {} | {s} | {} | {} | {} | {} | {:.2} | {} | {} |",
                    human_bytes(size),
                    human_ns(m.mean_ns),
                    human_ns(m.p50_ns),
                    human_ns(m.p99_ns),
                    human_ns(m.p999_ns),
                    m.gbps_p50(),
                    nt.map_or("".into(), |n| format!("{:.2}", m.gbps_p50() / n.gbps_p50())),
                    plasma.map_or("".into(), |p| format!("{:.2}×", p / m.p50_ns))
                );
            }
        }
        let _ = writeln!(w);
    }

    fn limits_table(&self, w: &mut String) {
        let _ = writeln!(w, "### Physical limits (same run)\n");
        let _ = writeln!(
            w,
            "Copies of a warm source into destinations cycled through 1 GiB (not in cache).\n"
        );
        let mut names: Vec<&str> = Vec::new();
        for (n, _, _) in &self.limits {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let _ = write!(w, "| size |");
        for n in &names {
            let _ = write!(w, " {n} GB/s (p50) |");
        }
        let _ = writeln!(w, "\n|---|{}", "---|".repeat(names.len()));
        let mut sizes: Vec<u64> = self.limits.iter().map(|(_, z, _)| *z).collect();
        sizes.dedup();
        for size in sizes {
            let _ = write!(w, "| {} |", human_bytes(size));
            for n in &names {
                let v = self.limit(n, size).map_or(0.0, Summary::gbps_p50);
                let _ = write!(w, " {v:.2} |");
            }
            let _ = writeln!(w);
        }
        let _ = writeln!(w);
    }

    fn cross_table(&self, w: &mut String) {
        if self.cross.is_empty() {
            return;
        }
        let _ = writeln!(w, "### Cross-node read\n");
        let _ = writeln!(
            w,
            "An object created on node A, read in full on node B. GISMO: node B is a second \
             mapping of the region at another address (as another host maps the shared \
             device); its get returns B's own address of the object. Plasma fallback: node B \
             has its own store, so the object must first be copied there (what a raylet's pull \
             does: read from A's store, create in B's, copy, seal — without the network).\n"
        );
        let _ = writeln!(
            w,
            "| store | size | get on B (p50) | get + read every byte (p50) | payload bytes copied |\n|---|---|---|---|---|"
        );
        for c in &self.cross {
            let _ = writeln!(
                w,
                "| {} | {} | {} ({}) | {} ({}) | {} |",
                c.store,
                human_bytes(c.size),
                human_ns(c.access.mean_ns),
                human_ns(c.access.p50_ns),
                human_ns(c.access_and_read.mean_ns),
                human_ns(c.access_and_read.p50_ns),
                human_bytes(c.bytes_copied)
            );
        }
        let _ = writeln!(w);
    }

    fn multi_table(&self, w: &mut String) {
        if self.multi.is_empty() {
            let _ = writeln!(
                w,
                "### Multi-process runs\n\n(`gismoctl bench` was not found: build it with \
                 `cargo build --release -p gismoctl` and rerun.)\n"
            );
            return;
        }
        let _ = writeln!(w, "### Multi-process runs (`gismoctl bench --json`)\n");
        let _ = writeln!(
            w,
            "Real worker processes: `wait` is a get woken by another process's seal; \
             `transfer` an object created by one process and read in full by another; \
             `throughput` put + get + delete loops in 1, 2 and 4 processes at once.\n"
        );
        let _ = writeln!(
            w,
            "| store | operation | size | processes | ops/s | GB/s | mean | p50 | p99 | p99.9 |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for (store, v) in &self.multi {
            let Some(rows) = v.get("runs").and_then(Value::as_array) else {
                continue;
            };
            for row in rows {
                let f = |k: &str| row.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                let lat = |k: &str| {
                    row.get("latency_us")
                        .and_then(|l| l.get(k))
                        .and_then(Value::as_f64)
                        .map_or("".into(), |us| human_ns(us * 1e3))
                };
                let _ = writeln!(
                    w,
                    "| {store} | {} | {} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {} |",
                    row.get("op").and_then(Value::as_str).unwrap_or(""),
                    human_bytes(f("size") as u64),
                    f("processes"),
                    f("ops_per_s"),
                    f("gb_per_s"),
                    lat("mean"),
                    lat("p50"),
                    lat("p99"),
                    lat("p99_9"),
                );
            }
        }
        let _ = writeln!(w);
    }

    fn ray_table(&self, w: &mut String) {
        let Some(ray) = &self.ray else {
            let _ = writeln!(
                w,
                "### Ray's own numbers\n\n(not measured in this run: `tools/bench-ray.sh` \
                 writes them, then rerun the report.)\n"
            );
            return;
        };
        let version = ray
            .get("ray_version")
            .and_then(Value::as_str)
            .unwrap_or("?");
        let _ = writeln!(
            w,
            "### Ray's own numbers, measured on the same machine (Ray {version})\n"
        );
        let _ = writeln!(
            w,
            "From `tools/bench-ray.sh`: `ray.put`/`ray.get` of NumPy arrays from Python in a \
             single-node Ray, and Ray's plasma microbenchmark (the loops of \
             `ray/_private/ray_perf.py`, timed by Ray's own `timeit`).\n"
        );
        let _ = writeln!(
            w,
            "| size | ray.put mean | ray.put GB/s | ray.get mean | GISMO flush put | GISMO get |\n|---|---|---|---|---|---|"
        );
        for size in [1u64 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20] {
            let k = size.to_string();
            let (Some(put), Some(get)) = (
                self.ray_num(&["put", &k, "mean_ns"]),
                self.ray_num(&["get", &k, "mean_ns"]),
            ) else {
                continue;
            };
            let gp = self
                .put("gismo-flush", size)
                .map_or("".into(), |m| human_ns(m.mean_ns));
            let gg = self
                .get("gismo-hardware")
                .map_or("".into(), |m| human_ns(m.mean_ns));
            let _ = writeln!(
                w,
                "| {} | {} | {:.2} | {} | {gp} | {gg} |",
                human_bytes(size),
                human_ns(put),
                size as f64 / put,
                human_ns(get)
            );
        }
        if let Some(mb) = ray.get("microbenchmark").and_then(Value::as_object) {
            let _ = writeln!(w, "\n| Ray microbenchmark | per second |\n|---|---|");
            for (name, v) in mb {
                let ps = v.get("per_second").and_then(Value::as_f64).unwrap_or(0.0);
                let _ = writeln!(w, "| {name} | {ps:.1} |");
            }
        }
        let _ = writeln!(w);
    }

    fn slower(&self, w: &mut String) {
        let _ = writeln!(w, "### Where GISMO is slower, and why\n");
        let mut any = false;
        for size in self.sizes() {
            let (Some(f), Some(h)) = (
                self.put("gismo-flush", size),
                self.put("gismo-hardware", size),
            ) else {
                continue;
            };
            if f.p50_ns > h.p50_ns * 1.1 {
                let why = if any {
                    ""
                } else {
                    " Flush mode makes the payload visible to hosts whose caches are not \
                     coherent: every line is written back or streamed past the cache, where a \
                     coherent copy leaves it dirty in this core's cache (and a hot destination \
                     never leaves it). Use Hardware mode on coherent CXL memory."
                };
                any = true;
                let _ = writeln!(
                    w,
                    "- Flush-mode put of {}: p50 {} against {} in Hardware mode ({:.1}× \
                     slower).{why}",
                    human_bytes(size),
                    human_ns(f.p50_ns),
                    human_ns(h.p50_ns),
                    f.p50_ns / h.p50_ns
                );
            }
        }
        if let (Some(f), Some(h)) = (self.get("gismo-flush"), self.get("gismo-hardware")) {
            if f.p50_ns > h.p50_ns * 1.1 {
                any = true;
                let _ = writeln!(
                    w,
                    "- get in Flush mode: p50 {} against {} — a reader on a non-coherent host \
                     evicts the object's lines from its cache (16 lines for 1 KiB) before \
                     reading them, in case they hold an older object's bytes.",
                    human_ns(f.p50_ns),
                    human_ns(h.p50_ns)
                );
            }
        }
        for size in self.sizes() {
            let (Some(g), Some(p)) = (self.put("gismo-hardware", size), self.put("plasma", size))
            else {
                continue;
            };
            if g.p50_ns > p.p50_ns * 1.1 {
                any = true;
                let _ = writeln!(
                    w,
                    "- put of {}: GISMO (Hardware) p50 {} against plasma {}. GISMO streams \
                     payloads of 256 KiB and more past the cache with non-temporal stores (the \
                     reader is usually another host, and a large copy should not evict the \
                     writer's working set), so it runs at memory bandwidth; plasma's plain copy \
                     here lands in the destination the previous, deleted object had, still in \
                     the last-level cache in this loop.",
                    human_bytes(size),
                    human_ns(g.p50_ns),
                    human_ns(p.p50_ns)
                );
            }
        }
        let big = self.sizes().last().copied().unwrap_or(0);
        if let (Some(ray), Some(g)) = (
            self.ray_num(&[
                "microbenchmark",
                "single client put gigabytes",
                "per_second",
            ]),
            self.put("gismo-flush", big),
        ) {
            if ray > g.gbps_p50() {
                any = true;
                let _ = writeln!(
                    w,
                    "- Ray's \"single client put gigabytes\" ({ray:.1} GB/s) beats GISMO's \
                     {} put ({:.1} GB/s, p50): that loop puts `np.zeros(...)`, whose pages were \
                     never written and all map the kernel's one zero page, so its source is \
                     always in cache; the loops here copy from a real buffer (Ray's own \
                     `ray.put` of a real 256 MiB array above: {}).",
                    human_bytes(big),
                    g.gbps_p50(),
                    self.ray_num(&["put", "268435456", "mean_ns"]).map_or(
                        "not measured".into(),
                        |ns| format!("{:.1} GB/s", (256u64 << 20) as f64 / ns)
                    )
                );
            }
        }
        let _ = writeln!(
            w,
            "{}- A get that waits for an object sealed on *another host* is woken by a 10 ms \
             poll (same host: a futex), where Plasma answers a held get as soon as the seal \
             reaches its one process. GISMO's first access to an object on a new host also \
             faults in the pages the consumer touches, which a local copy has already paid.\n",
            if any {
                ""
            } else {
                "- Nowhere in the single-process loops above. "
            }
        );
    }

    /// Writes the plots and replaces the report section of `out` (or appends it).
    pub fn write(&self, out: &Path, plots: &Path, json: Option<&Path>) -> Result<(), String> {
        std::fs::create_dir_all(plots).map_err(|e| format!("{}: {e}", plots.display()))?;
        self.plot(&plots.join("latency.svg"), false)?;
        self.plot(&plots.join("bandwidth.svg"), true)?;
        let section = self.markdown();
        let page = std::fs::read_to_string(out).unwrap_or_else(|_| "# Benchmarks\n\n".into());
        let page = match (page.find(BEGIN), page.find(END)) {
            (Some(b), Some(e)) if e > b => {
                format!(
                    "{}{}{}",
                    &page[..b],
                    section.trim_end(),
                    &page[e + END.len()..]
                )
            }
            _ => {
                // After the title and its first paragraph.
                let at = page.find("\n## ").map_or(page.len(), |i| i + 1);
                format!("{}{}\n\n{}", &page[..at], section.trim_end(), &page[at..])
            }
        };
        std::fs::write(out, page).map_err(|e| format!("{}: {e}", out.display()))?;
        if let Some(j) = json {
            let v = serde_json::json!({
                "get_hit": self.get_hit.iter().map(|(s, m)| serde_json::json!({"store": s, "mean_ns": m.mean_ns, "p50_ns": m.p50_ns, "p99_ns": m.p99_ns, "p999_ns": m.p999_ns})).collect::<Vec<_>>(),
                "puts": self.puts.iter().map(|(s, z, m)| serde_json::json!({"store": s, "size": z, "mean_ns": m.mean_ns, "p50_ns": m.p50_ns, "p99_ns": m.p99_ns, "p999_ns": m.p999_ns, "gbps": m.gbps()})).collect::<Vec<_>>(),
                "limits": self.limits.iter().map(|(n, z, m)| serde_json::json!({"copy": n, "size": z, "gbps": m.gbps()})).collect::<Vec<_>>(),
                "cross": self.cross.iter().map(|c| serde_json::json!({"store": c.store, "size": c.size, "access_ns": c.access.mean_ns, "access_and_read_ns": c.access_and_read.mean_ns, "bytes_copied": c.bytes_copied})).collect::<Vec<_>>(),
            });
            std::fs::write(j, serde_json::to_string_pretty(&v).unwrap_or_default())
                .map_err(|e| format!("{}: {e}", j.display()))?;
        }
        Ok(())
    }

    fn plot(&self, path: &Path, bandwidth: bool) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
        let sizes = self.sizes();
        let (Some(&lo), Some(&hi)) = (sizes.first(), sizes.last()) else {
            return Ok(());
        };
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for s in self.stores() {
            let pts: Vec<(f64, f64)> = sizes
                .iter()
                .filter_map(|&z| {
                    self.put(&s, z).map(|m| {
                        let y = if bandwidth {
                            m.gbps_p50()
                        } else {
                            m.p50_ns / 1e3
                        };
                        (z as f64, y)
                    })
                })
                .collect();
            series.push((s, pts));
        }
        if bandwidth {
            let mut names: Vec<String> = Vec::new();
            for (n, _, _) in &self.limits {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
            for n in names {
                let pts = sizes
                    .iter()
                    .filter_map(|&z| self.limit(&n, z).map(|m| (z as f64, m.gbps_p50())))
                    .collect();
                series.push((format!("limit: {n}"), pts));
            }
        }
        let ys: Vec<f64> = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
            .filter(|y| *y > 0.0)
            .collect();
        let ymin = ys.iter().copied().fold(f64::INFINITY, f64::min).max(1e-3) / 2.0;
        let ymax = ys.iter().copied().fold(0.0, f64::max) * 2.0;
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let title = if bandwidth {
            "create+write+seal bandwidth (GB/s, p50) against object size"
        } else {
            "create+write+seal latency (µs, p50) against object size"
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (lo as f64 / 2.0..hi as f64 * 2.0).log_scale(),
                (ymin..ymax).log_scale(),
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("object size")
            .x_label_formatter(&|x| human_bytes(*x as u64).replace(' ', ""))
            .y_desc(if bandwidth { "GB/s" } else { "µs" })
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, pts)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

/// Runs `gismoctl bench --json` (real worker processes) over GISMO (a file region in
/// `/dev/shm`), the plasma fallback (its store in this process, the workers as clients over its
/// socket) and redis (when installed), when the `gismoctl` binary exists.
pub fn multi_process(gismoctl: &Path, quick: bool) -> Vec<(String, Value)> {
    if !gismoctl.exists() {
        return Vec::new();
    }
    let (seconds, sizes) = if quick {
        ("0.3", "1KiB,1MiB")
    } else {
        ("1", "1KiB,64KiB,1MiB,16MiB")
    };
    let run = |name: &str, global: &[String]| -> Option<(String, Value)> {
        eprintln!("gismoctl bench: {name} ...");
        let out = std::process::Command::new(gismoctl)
            .args(global)
            .args(["bench", "--json", "--seconds", seconds, "--sizes", sizes])
            .args(["--processes", "1,2,4"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("gismoctl bench for {name} failed: {}", out.status);
            return None;
        }
        serde_json::from_slice(&out.stdout)
            .ok()
            .map(|v| (name.to_string(), v))
    };
    let mut results = Vec::new();
    let region = format!("/dev/shm/gismo-bench-{}", std::process::id());
    let formatted = std::process::Command::new(gismoctl)
        .args([
            "-r",
            &format!("file:{region}"),
            "format",
            "--size",
            "1GiB",
            "--force",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if formatted {
        results.extend(run("gismo", &["-r".into(), format!("file:{region}")]));
    }
    let _ = std::fs::remove_file(&region);
    let plasma = gismo_bench::stores::plasma(1 << 30);
    if let Some(socket) = plasma.config.get("store_socket_name") {
        results.extend(run(
            "plasma",
            &[
                "--plugin".into(),
                "plasma".into(),
                "--plugin-config".into(),
                format!("store_socket_name={socket}"),
            ],
        ));
    }
    drop(plasma);
    if let Some(redis) = gismo_bench::stores::redis() {
        if let Some(url) = redis.config.get("url") {
            results.extend(run(
                "redis",
                &[
                    "--plugin".into(),
                    "redis".into(),
                    "--plugin-config".into(),
                    format!("url={url}"),
                ],
            ));
        }
    }
    results
}
