//! `gismo-bench scale`: what maintenance and a large put cost on a big, full region (issue 15 §5,
//! core review M11). A sparse memfd region (256 GiB by default) holds many live objects (10^6 by
//! default, 64 B to 4 KiB, sealed and unreferenced) and a fragmented set of large ones (16 KiB to
//! 4 MiB, every other one deleted); then, in the same run:
//!
//! - an idle maintenance tick as leader (heartbeat, lease, reap with nobody dead, watermarks);
//! - the disconnect of a client holding 10 references;
//! - the reap of a dead client: a real process holding 10 references and an unsealed object,
//!   killed with SIGKILL, reaped by the leader's next reap step (its whole step is timed,
//!   including what it runs after reaping someone);
//! - a 1 MiB put (create, copy, seal, delete) into the fragmented heap, against a plain
//!   1 MiB copy into warm memory.
//!
//! Payloads of the filler objects are never written, so the region stays sparse: only metadata
//! and the 1 MiB puts touch memory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_core::store::maintenance::{Maintainer, MaintainerConfig, Reap};
use gismo_core::store::{CreateInfo, ObjectId, Store};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

use crate::stats::{Samples, Summary};

/// The environment variable that carries the region's descriptor to the holder child.
pub const CHILD_FD: &str = "GISMO_SCALE_FD";
/// Ids of the filler objects start here; large ones at `LARGE_BASE`, probes at `PROBE_BASE`.
const LARGE_BASE: u64 = 1 << 40;
const PROBE_BASE: u64 = 1 << 41;
const CHILD_UNSEALED: u64 = 1 << 42;
/// References the disconnecting and the dying client hold.
pub const HELD: u64 = 10;

/// What to build before measuring.
#[derive(Clone, Debug)]
pub struct ScaleConfig {
    pub region_bytes: u64,
    pub objects: u64,
    pub large_objects: u64,
    /// Measurements per quantity (the reap: a tenth of it, at least 3: each needs a process).
    pub rounds: usize,
}

impl ScaleConfig {
    /// The scale: 256 GiB, 10^6 live objects.
    pub fn full() -> ScaleConfig {
        ScaleConfig {
            region_bytes: 256 << 30,
            objects: 1_000_000,
            large_objects: 4000,
            rounds: 50,
        }
    }

    /// A small run that checks the harness (8 GiB, 20,000 objects).
    pub fn quick() -> ScaleConfig {
        ScaleConfig {
            region_bytes: 8 << 30,
            objects: 20_000,
            large_objects: 200,
            rounds: 10,
        }
    }
}

/// The numbers of one run.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    pub config: ScaleConfig,
    pub heap_bytes: u64,
    pub dir_capacity: u64,
    pub live_objects: u64,
    pub setup: Duration,
    pub idle_tick: Summary,
    pub disconnect: Summary,
    pub reap: Summary,
    pub put_1mib: Summary,
    pub copy_1mib: Summary,
}

/// A small xorshift generator: the same objects every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Log-uniform in `lo..hi`.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((a + (b - a) * u).exp() as u64).clamp(lo, hi - 1)
    }
}

fn create_sealed(client: &gismo_core::store::Client, id: u64, size: u64) -> Result<(), String> {
    let info = CreateInfo::default();
    let id = ObjectId::from_u64(id);
    let buf = client
        .create(&id, size, &[], &info)
        .map_err(|e| format!("create {size} B: {e}"))?;
    // The buffer's seal drops the creator's reference.
    buf.seal().map_err(|e| format!("seal: {e}"))
}

/// Builds the region and measures. `exe` is this program, started as the holder child.
///
/// # Errors
/// What failed, as text.
pub fn run(cfg: &ScaleConfig, exe: &std::path::Path) -> Result<ScaleReport, String> {
    let started = Instant::now();
    let region = Region::create(
        &RegionSpec::Memfd {
            name: "gismo-scale".into(),
            huge_pages: false,
        },
        cfg.region_bytes,
        &RegionOptions {
            sparse: true,
            ..RegionOptions::default()
        },
    )
    .map_err(|e| format!("region: {e}"))?;
    let fd = region
        .inheritable_fd()
        .map_err(|e| format!("region fd: {e}"))?;
    let store = Store::format(region, &Default::default()).map_err(|e| format!("format: {e}"))?;
    let client = store.connect("scale").map_err(|e| e.to_string())?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..cfg.objects {
        create_sealed(&client, i, rng.log_uniform(64, 4096))?;
    }
    for i in 0..cfg.large_objects {
        create_sealed(&client, LARGE_BASE + i, rng.log_uniform(16 << 10, 4 << 20))?;
    }
    for i in (0..cfg.large_objects).step_by(2) {
        client
            .delete(&ObjectId::from_u64(LARGE_BASE + i))
            .map_err(|e| format!("delete: {e}"))?;
    }
    let setup = started.elapsed();
    let live_objects = cfg.objects + cfg.large_objects / 2;

    let mut maintainer = Maintainer::new(&store, MaintainerConfig::new("scale-maintainer", 10_000))
        .map_err(|e| e.to_string())?;
    // The first tick claims the lease.
    maintainer.tick(gismo_platform::clock::monotonic_ms());
    if !maintainer.is_leader(gismo_platform::clock::monotonic_ms()) {
        return Err("the maintainer did not become leader".into());
    }
    let idle_tick = idle_ticks(&mut maintainer, cfg.rounds)?;
    let disconnect = disconnects(&store, cfg.rounds)?;
    let reap = reaps(&mut maintainer, fd, exe, (cfg.rounds / 10).max(3))?;
    let (put_1mib, copy_1mib) = puts(&client, cfg.rounds)?;
    let stats = store.stats();
    Ok(ScaleReport {
        config: cfg.clone(),
        heap_bytes: store.heap_bytes(),
        dir_capacity: stats.dir_capacity,
        live_objects,
        setup,
        idle_tick,
        disconnect,
        reap,
        put_1mib,
        copy_1mib,
    })
}

/// Every step of a tick due each time (heartbeat, lease, reap, watermarks), nobody to reap.
fn idle_ticks(m: &mut Maintainer, rounds: usize) -> Result<Summary, String> {
    let mut s = Samples::default();
    for _ in 0..rounds {
        // Past every step's due time, so each tick runs all of them.
        std::thread::sleep(Duration::from_millis(
            m.config().lease_poll_ms.max(m.config().reap_period_ms) + 1,
        ));
        let now = gismo_platform::clock::monotonic_ms();
        let t = Instant::now();
        let tick = m.tick(now);
        s.push(t.elapsed());
        match tick.reap {
            Some(Ok(Reap::Reaped(r))) if r.is_empty() => {}
            other => return Err(format!("an idle tick did not reap nothing: {other:?}")),
        }
    }
    Ok(s.summary(0))
}

/// A client takes references on `HELD` objects, then disconnects (the disconnect is timed).
fn disconnects(store: &Arc<Store>, rounds: usize) -> Result<Summary, String> {
    let mut s = Samples::default();
    for _ in 0..rounds {
        let c = store.connect("scale-holder").map_err(|e| e.to_string())?;
        for i in 0..HELD {
            c.get_raw(&ObjectId::from_u64(i), Some(Duration::ZERO))
                .map_err(|e| e.to_string())?
                .ok_or("a filler object is missing")?;
        }
        let t = Instant::now();
        c.disconnect();
        s.push(t.elapsed());
    }
    for i in 0..HELD {
        let summary = store
            .lookup_summary(&ObjectId::from_u64(i))
            .ok_or_else(|| format!("object {i} is gone after the disconnects"))?;
        if summary.refcount != 0 {
            return Err(format!("object {i} still referenced after the disconnects"));
        }
    }
    Ok(s.summary(0))
}

/// A real process holds `HELD` references and an unsealed object and is killed; the leader's
/// reap step that reclaims it is timed.
fn reaps(
    m: &mut Maintainer,
    fd: i32,
    exe: &std::path::Path,
    rounds: usize,
) -> Result<Summary, String> {
    let mut s = Samples::default();
    let used_before = m.store().used_bytes();
    for _ in 0..rounds {
        let mut child = Command::new(exe)
            .arg("scale-child")
            .env(CHILD_FD, fd.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn the holder: {e}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().ok_or("no stdout")?)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.contains("READY") {
            let _ = child.kill();
            return Err(format!("the holder failed: {line:?}"));
        }
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())?;
        // Keep the lease (starting the holder may take longer than it); not timed.
        m.poll_lease(gismo_platform::clock::monotonic_ms());
        let now = gismo_platform::clock::monotonic_ms();
        let t = Instant::now();
        let reaped = m.reap(now).map_err(|e| e.to_string())?;
        s.push(t.elapsed());
        match reaped {
            Reap::Reaped(r) if r.len() == 1 && r[0].aborted_objects == 1 => {}
            other => return Err(format!("the dead holder was not reaped: {other:?}")),
        }
    }
    if m.store().used_bytes() != used_before {
        return Err(format!(
            "used bytes {} after the reaps, {used_before} before",
            m.store().used_bytes()
        ));
    }
    Ok(s.summary(0))
}

/// The holder child: attaches, takes `HELD` references and creates an unsealed 1 MiB object,
/// says READY, and waits to be killed.
///
/// # Errors
/// What failed, as text.
pub fn child() -> Result<(), String> {
    let fd: i32 = std::env::var(CHILD_FD)
        .map_err(|_| format!("{CHILD_FD} not set"))?
        .parse()
        .map_err(|_| format!("{CHILD_FD} is not a descriptor"))?;
    let region =
        Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()).map_err(|e| e.to_string())?;
    let store = Store::attach(region).map_err(|e| e.to_string())?;
    let c = store.connect("scale-dying").map_err(|e| e.to_string())?;
    for i in 0..HELD {
        c.get_raw(&ObjectId::from_u64(i), Some(Duration::ZERO))
            .map_err(|e| e.to_string())?
            .ok_or("a filler object is missing")?;
    }
    let unsealed = c
        .create(
            &ObjectId::from_u64(CHILD_UNSEALED),
            1 << 20,
            &[],
            &CreateInfo::default(),
        )
        .map_err(|e| e.to_string())?;
    println!("READY");
    std::mem::forget(unsealed);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// 1 MiB puts into the fragmented heap, interleaved with plain 1 MiB copies into warm memory.
fn puts(client: &gismo_core::store::Client, rounds: usize) -> Result<(Summary, Summary), String> {
    const SIZE: usize = 1 << 20;
    let src: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0u8; SIZE];
    let (mut put, mut copy) = (Samples::default(), Samples::default());
    let info = CreateInfo::default();
    // Warm-up rounds are not recorded: the first puts touch fresh pages.
    for round in 0..rounds * 2 {
        let id = ObjectId::from_u64(PROBE_BASE + round as u64);
        let t = Instant::now();
        let mut buf = client
            .create(&id, SIZE as u64, &[], &info)
            .map_err(|e| format!("1 MiB create: {e}"))?;
        buf.write_at(0, &src).map_err(|e| e.to_string())?;
        buf.seal().map_err(|e| e.to_string())?;
        client.delete(&id).map_err(|e| e.to_string())?;
        let p = t.elapsed();
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        let c = t.elapsed();
        if round >= rounds {
            put.push(p);
            copy.push(c);
        }
    }
    Ok((put.summary(SIZE as u64), copy.summary(SIZE as u64)))
}

impl ScaleReport {
    /// The report as a Markdown section body.
    pub fn markdown(&self) -> String {
        let ms = |s: &Summary| format!("{:.3} / {:.3}", s.mean_ns / 1e6, s.p50_ns / 1e6);
        let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
        let ratio = self.put_1mib.p50_ns / self.copy_1mib.p50_ns.max(1.0);
        let mut out = String::new();
        out.push_str(&format!(
            "Region {} GiB (heap {:.1} GiB, {} directory slots), {} live objects, set up in {:.1} s.\n\n",
            self.config.region_bytes >> 30,
            self.heap_bytes as f64 / (1u64 << 30) as f64,
            self.dir_capacity,
            self.live_objects,
            self.setup.as_secs_f64(),
        ));
        out.push_str("| operation | mean / median (ms) | goal | verdict |\n|---|---|---|---|\n");
        for (name, s) in [
            ("idle maintenance tick (leader)", &self.idle_tick),
            ("disconnect holding 10 references", &self.disconnect),
            ("reap step with one dead client", &self.reap),
        ] {
            out.push_str(&format!(
                "| {name} | {} | ≤ 1 ms | {} |\n",
                ms(s),
                verdict(s.p50_ns <= 1e6)
            ));
        }
        out.push_str(&format!(
            "| 1 MiB put, fragmented heap | {} | ≤ 2× copy | {} ({ratio:.2}× the copy) |\n",
            ms(&self.put_1mib),
            verdict(ratio <= 2.0)
        ));
        out.push_str(&format!(
            "| 1 MiB plain copy (warm) | {} | | |\n",
            ms(&self.copy_1mib)
        ));
        out
    }
}
