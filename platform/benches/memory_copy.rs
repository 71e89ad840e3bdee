//! `memory_copy` throughput, from 64 bytes to 256 MiB, for every way of copying into the region.
//!
//! Every implementation sits behind the small [`Copier`] trait and runs the same loop:
//!
//! | name              | what it does                                                         |
//! |-------------------|----------------------------------------------------------------------|
//! | `plain`           | `ptr::copy_nonoverlapping` (no coherence at all: the ceiling)        |
//! | `copy+clflushopt` | plain copy, then `clflushopt` every line, then `sfence` (the naive way) |
//! | `hardware`        | `Coherence::new(Hardware)`                                           |
//! | `flush-auto`      | `Coherence::new(Flush)`: the detected strategy with env overrides    |
//! | `nt-avx512`, `nt-avx2`, `nt-sse2` | `Flush` forced to that kernel with threshold 0 (non-temporal at every size) |
//! | `copy+clwb`, `copy+clflush` | `Flush` forced to copy + that write back, no non-temporal stores |
//!
//! Source and destination are 64-byte aligned, allocated once at the largest size and pre-faulted
//! (every page written before measuring), and reused: a copy of `n` bytes uses the first `n` of
//! each. Throughput is in bytes copied.
//!
//! Groups: `memory_copy` (all implementations, all sizes) and `threshold` (copy + write back
//! against non-temporal stores from 64 B to 64 KiB, to the same and to cold destinations, to
//! choose `nt_threshold`). Run one with
//! `cargo bench -p gismo-platform --bench memory_copy -- threshold`. Without a filter (or with `-- paired`), the bench ends with a *paired comparison* of
//! `flush-auto` against plain, bare non-temporal and copy + `clflushopt` copies from 1 MiB up,
//! interleaved so that the ratios survive a shared machine (see [`paired_ratios`]). The run is kept
//! short (10 samples, 1–2 s each) so that the whole bench takes a few minutes on two cores.

use std::hint::black_box;
use std::ptr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use gismo_platform::coherence::{
    cpu_model, Coherence, CoherenceMode, CopyStrategy, CpuFeatures, FlushInstr, NtStores,
};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const SIZES: [usize; 7] = [64, 4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB, 256 * MIB];
const THRESHOLD_SIZES: [usize; 11] = [
    64,
    128,
    256,
    384,
    512,
    768,
    KIB,
    2 * KIB,
    4 * KIB,
    16 * KIB,
    64 * KIB,
];
/// The `threshold` group's cold destinations rotate through this much memory.
const COLD_SPAN: usize = 64 * MIB;

/// One way of copying `len` bytes into the destination.
trait Copier {
    fn name(&self) -> String;
    /// # Safety
    /// `src..src+len` readable, `dst..dst+len` writable, disjoint.
    unsafe fn copy(&self, dst: *mut u8, src: *const u8, len: usize);
}

struct Plain;

impl Copier for Plain {
    fn name(&self) -> String {
        "plain".into()
    }
    unsafe fn copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: forwarded from the trait's contract.
        unsafe { ptr::copy_nonoverlapping(src, dst, len) }
    }
}

/// A `Coherence` under a benchmark name.
struct Named(String, Coherence);

impl Copier for Named {
    fn name(&self) -> String {
        self.0.clone()
    }
    unsafe fn copy(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: forwarded from the trait's contract.
        unsafe { self.1.memory_copy(dst, src, len) }
    }
}

fn forced(flush: FlushInstr, nt: NtStores, nt_threshold: usize) -> Option<Coherence> {
    let s = CopyStrategy {
        flush,
        invalidate: FlushInstr::Clflushopt,
        nt,
        nt_threshold,
    };
    // Only what this CPU runs as asked (no silent downgrade in a benchmark name).
    s.is_supported()
        .then(|| Coherence::with_strategy(CoherenceMode::Flush, s))
}

fn copiers() -> Vec<Box<dyn Copier>> {
    let mut all: Vec<Box<dyn Copier>> = vec![Box::new(Plain)];
    let mut add = |name: &str, c: Option<Coherence>| {
        if let Some(c) = c {
            all.push(Box::new(Named(name.into(), c)));
        }
    };
    add(
        "copy+clflushopt",
        forced(FlushInstr::Clflushopt, NtStores::None, usize::MAX),
    );
    add("hardware", Some(Coherence::new(CoherenceMode::Hardware)));
    add("flush-auto", Some(Coherence::new(CoherenceMode::Flush)));
    let wb = CopyStrategy::detect().flush;
    for (name, nt) in [
        ("nt-avx512", NtStores::Avx512),
        ("nt-avx2", NtStores::Avx2),
        ("nt-sse2", NtStores::Sse2),
    ] {
        add(name, forced(wb, nt, 0));
    }
    add(
        "copy+clwb",
        forced(FlushInstr::Clwb, NtStores::None, usize::MAX),
    );
    add(
        "copy+clflush",
        forced(FlushInstr::Clflush, NtStores::None, usize::MAX),
    );
    all
}

/// A 64-byte-aligned, pre-faulted buffer.
struct Buffer {
    lines: Vec<[u64; 8]>,
}

impl Buffer {
    fn new(len: usize, seed: u64) -> Buffer {
        // Writing every word faults every page in (and gives the source non-zero contents).
        let lines = (0..len.div_ceil(64) as u64)
            .map(|i| [seed ^ i; 8])
            .collect::<Vec<[u64; 8]>>();
        Buffer { lines }
    }

    fn ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr().cast::<u8>()
    }
}

fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    len: usize,
) {
    group.sample_size(10);
    if len >= 16 * MIB {
        // One copy takes milliseconds: equal-sized samples instead of 1, 2, ... 10 iterations.
        group.sampling_mode(SamplingMode::Flat);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
    } else {
        group.sampling_mode(SamplingMode::Auto);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(1));
    }
}

/// Where each copy of a benchmark writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// The same bytes every time: after the first copy the lines may be cached.
    Warm,
    /// The next 4 KiB-aligned slot of a [`COLD_SPAN`] buffer every time, as a store writes each
    /// new object to a fresh allocation: the lines are usually not in the core's caches.
    Cold,
}

fn run(
    c: &mut Criterion,
    group_name: &str,
    copiers: &[Box<dyn Copier>],
    sizes: &[usize],
    destinations: &[Destination],
) {
    let max = sizes.iter().copied().max().unwrap_or(0);
    let mut src = Buffer::new(max, 0x5a5a_5a5a_5a5a_5a5a);
    let span = if destinations.contains(&Destination::Cold) {
        max.max(COLD_SPAN)
    } else {
        max
    };
    let mut dst = Buffer::new(span, 0);
    let (sp, dp) = (src.ptr().cast_const(), dst.ptr());
    let mut group = c.benchmark_group(group_name);
    for &len in sizes {
        configure(&mut group, len);
        group.throughput(Throughput::Bytes(len as u64));
        for &destination in destinations {
            for copier in copiers {
                let name = match destination {
                    Destination::Warm => copier.name(),
                    Destination::Cold => format!("{}/cold", copier.name()),
                };
                let stride = len.next_multiple_of(4 * KIB);
                let slots = (span / stride).max(1);
                let mut slot = 0;
                group.bench_with_input(BenchmarkId::new(name, len), &len, |b, &len| {
                    b.iter(|| {
                        let offset = match destination {
                            Destination::Warm => 0,
                            Destination::Cold => {
                                slot = (slot + 1) % slots;
                                slot * stride
                            }
                        };
                        // SAFETY: `offset + len <= span` (`slots * stride <= span`, and
                        // `len <= stride`) and `len <= max`: inside both buffers, which are
                        // distinct allocations.
                        unsafe { copier.copy(black_box(dp.add(offset)), black_box(sp), len) }
                    })
                });
            }
        }
    }
    group.finish();
}

fn print_machine() {
    let cpu = CpuFeatures::get();
    println!("cpu: {}", cpu_model());
    println!(
        "features: clflush={} clflushopt={} clwb={} sse2={} avx2={} avx512f={} genuine_intel={}",
        cpu.clflush, cpu.clflushopt, cpu.clwb, cpu.sse2, cpu.avx2, cpu.avx512f, cpu.genuine_intel
    );
    println!(
        "flush-auto strategy: {}",
        Coherence::new(CoherenceMode::Flush).strategy()
    );
}

/// Sizes of the paired comparison printed at the end.
const RATIO_SIZES: [usize; 4] = [MIB, 16 * MIB, 64 * MIB, 256 * MIB];
/// Rounds of the paired comparison; each round times every implementation once.
const RATIO_ROUNDS: usize = 15;
/// Cold destinations for the paired comparison rotate through this much memory (> the LLC).
const RATIO_POOL: usize = 1024 * MIB;

/// The check this bench exists for: does `Flush` mode at 1 MiB and more reach 0.9x the faster of
/// a plain copy and a bare non-temporal copy, and how much faster is it than copy + `clflushopt`?
///
/// Criterion measures implementations one after another, so on a shared machine a load change
/// between two of them skews their ratio. Here the implementations are interleaved instead: each
/// round times one batch of every implementation (order rotated each round, each batch preceded
/// by one untimed copy of its own), and the medians over the rounds are compared.
fn paired_ratios(copiers: &[Box<dyn Copier>]) {
    let nt_name = format!("nt-{}", CopyStrategy::detect().nt);
    let wanted = ["plain", "flush-auto", nt_name.as_str(), "copy+clflushopt"];
    let picked: Vec<&dyn Copier> = wanted
        .iter()
        .filter_map(|w| copiers.iter().find(|c| c.name() == *w).map(|c| &**c))
        .collect();
    if picked.len() != wanted.len() {
        println!("paired ratios: skipped (needs {wanted:?})");
        return;
    }
    let max = RATIO_SIZES[RATIO_SIZES.len() - 1];
    let mut src = Buffer::new(max, 0x3c3c_3c3c_3c3c_3c3c);
    let mut dst = Buffer::new(max, 0);
    let (sp, dp) = (src.ptr().cast_const(), dst.ptr());
    // A store writes each object into memory it has not just written: cold destinations rotate
    // through a pool larger than the last-level cache, so a plain copy pays for reaching memory
    // as the others do (a hot destination lets it stay in cache, which no put can).
    let mut pool = Buffer::new(RATIO_POOL, 0);
    let pool_ptr = pool.ptr();
    for (label, cold) in [
        ("hot destination (same buffer every copy)", false),
        ("cold destinations (a put)", true),
    ] {
        let mut next_slot = 0usize;
        let mut dst_for = |len: usize| -> *mut u8 {
            if !cold {
                return dp;
            }
            let slots = (RATIO_POOL / len).max(1);
            next_slot = (next_slot + 1) % slots;
            // SAFETY: slot * len + len <= RATIO_POOL.
            unsafe { pool_ptr.add(next_slot * len) }
        };
        println!();
        println!("paired comparison, {label}, GB/s (median of {RATIO_ROUNDS} interleaved rounds):");
        println!(
            "{:>8} {:>8} {:>10} {:>10} {:>15} {:>24} {:>24}",
            "size",
            "plain",
            "flush-auto",
            nt_name,
            "copy+clflushopt",
            "flush/max(plain,nt)",
            "flush/(copy+clflushopt)"
        );
        for len in RATIO_SIZES {
            // Batches of at least 64 MiB so that each timing spans milliseconds.
            let batch = (64 * MIB / len).max(1);
            let mut seconds = vec![Vec::with_capacity(RATIO_ROUNDS); picked.len()];
            for round in 0..RATIO_ROUNDS {
                for k in 0..picked.len() {
                    let i = (k + round) % picked.len();
                    // One untimed copy first, so the destination's cache state is this
                    // implementation's own steady state (as in criterion's loop), not what the
                    // previous implementation left behind (dirty lines from `plain`, say).
                    // SAFETY: as below.
                    unsafe { picked[i].copy(black_box(dst_for(len)), black_box(sp), len) };
                    let start = Instant::now();
                    for _ in 0..batch {
                        let d = dst_for(len);
                        // SAFETY: the source holds `max >= len` bytes; `d` has `len` writable bytes
                        // (the destination buffer or a pool slot); distinct allocations.
                        unsafe { picked[i].copy(black_box(d), black_box(sp), len) };
                    }
                    seconds[i].push(start.elapsed().as_secs_f64());
                }
            }
            let gbs: Vec<f64> = seconds
                .iter_mut()
                .map(|t| {
                    t.sort_by(f64::total_cmp);
                    (len * batch) as f64 / t[t.len() / 2] / 1e9
                })
                .collect();
            println!(
                "{:>8} {:>8.2} {:>10.2} {:>10.2} {:>15.2} {:>24.2} {:>24.2}",
                size_name(len),
                gbs[0],
                gbs[1],
                gbs[2],
                gbs[3],
                gbs[1] / gbs[0].max(gbs[2]),
                gbs[1] / gbs[3]
            );
        }
    }
}

fn size_name(len: usize) -> String {
    if len >= MIB && len % MIB == 0 {
        format!("{}MiB", len / MIB)
    } else if len >= KIB && len % KIB == 0 {
        format!("{}KiB", len / KIB)
    } else {
        format!("{len}B")
    }
}

/// The benchmark filter given on the command line, if any (`cargo bench -- <filter>`).
fn filter() -> Option<String> {
    std::env::args().skip(1).find(|a| !a.starts_with('-'))
}

fn main() {
    print_machine();
    let mut c = Criterion::default().configure_from_args();
    let all = copiers();
    run(&mut c, "memory_copy", &all, &SIZES, &[Destination::Warm]);

    let wb = CopyStrategy::detect().flush;
    let nt = CopyStrategy::detect().nt;
    let threshold: Vec<Box<dyn Copier>> = [
        (format!("copy+{wb}"), forced(wb, NtStores::None, usize::MAX)),
        (format!("nt-{nt}"), forced(wb, nt, 0)),
    ]
    .into_iter()
    .filter_map(|(name, c)| c.map(|c| Box::new(Named(name, c)) as Box<dyn Copier>))
    .collect();
    run(
        &mut c,
        "threshold",
        &threshold,
        &THRESHOLD_SIZES,
        &[Destination::Warm, Destination::Cold],
    );

    c.final_summary();
    let paired = match filter() {
        None => true,
        Some(f) => "paired ratios".contains(&f),
    };
    if paired {
        paired_ratios(&all);
    }
}
