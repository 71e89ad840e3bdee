//! Store core micro-benchmarks (issue 3 §7): get+release of a sealed object (one id and batches
//! of 100), create+write+seal at 1 KiB … 64 MiB in Hardware and Flush modes, lookup miss, lookup
//! after churn, and the wake-up latency of a waiting get.
//!
//! `cargo bench -p gismo-core --bench store` (add `-- --quick` for a short run). Regions are
//! memfds, prefaulted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gismo_core::format::FormatOptions;
use gismo_core::store::{CreateInfo, ObjectId, Store};
use gismo_platform::coherence::CoherenceMode;
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

fn store(mode: CoherenceMode, size: u64) -> Arc<Store> {
    let spec = RegionSpec::Memfd {
        name: "gismo-bench".into(),
        huge_pages: false,
    };
    let region = Region::create(
        &spec,
        size,
        &RegionOptions {
            prefault: true,
            ..RegionOptions::default()
        },
    )
    .expect("memfd region");
    Store::format(
        region,
        &FormatOptions {
            coherence: mode,
            ..FormatOptions::default()
        },
    )
    .expect("format")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn get_release(c: &mut Criterion) {
    println!(
        "machine: {} ({} cores)",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut g = c.benchmark_group("get_release");
    for mode in [CoherenceMode::Hardware, CoherenceMode::Flush] {
        let s = store(mode, 256 << 20);
        let client = s.connect("bench").unwrap();
        let ids: Vec<ObjectId> = (0..100).map(ObjectId::from_u64).collect();
        for id in &ids {
            let mut b = client
                .create(id, 1024, b"", &CreateInfo::default())
                .unwrap();
            b.write_at(0, &[1u8; 1024]).unwrap();
            b.seal().unwrap();
        }
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("one", mode), |b| {
            b.iter(|| {
                let o = client.get(&ids[0], Some(Duration::ZERO)).unwrap().unwrap();
                std::hint::black_box(o.data().as_ptr());
            })
        });
        g.throughput(Throughput::Elements(100));
        g.bench_function(BenchmarkId::new("batch100", mode), |b| {
            b.iter(|| {
                let held: Vec<_> = ids
                    .iter()
                    .map(|id| client.get(id, Some(Duration::ZERO)).unwrap().unwrap())
                    .collect();
                std::hint::black_box(held.len());
            })
        });
    }
    g.finish();
}

fn create_seal(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_write_seal");
    g.sample_size(10);
    for mode in [CoherenceMode::Hardware, CoherenceMode::Flush] {
        let s = store(mode, 512 << 20);
        let client = s.connect("bench").unwrap();
        for size in [1usize << 10, 64 << 10, 1 << 20, 64 << 20] {
            let src = vec![0xa5u8; size];
            let mut n = (size as u64) << 32;
            g.throughput(Throughput::Bytes(size as u64));
            // Time create + write + seal only; deletes happen outside the measured section,
            // keeping at most ~128 MiB live.
            let keep = ((128usize << 20) / size).clamp(1, 4096);
            g.bench_function(BenchmarkId::new(format!("{mode}"), size), |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    let mut live = Vec::with_capacity(keep);
                    for _ in 0..iters {
                        n += 1;
                        let id = ObjectId::from_u64(n);
                        let t0 = Instant::now();
                        let mut buf = client
                            .create(&id, size as u64, b"", &CreateInfo::default())
                            .unwrap();
                        buf.write_at(0, &src).unwrap();
                        buf.seal().unwrap();
                        spent += t0.elapsed();
                        live.push(id);
                        if live.len() >= keep {
                            for id in live.drain(..) {
                                client.delete(&id).unwrap();
                            }
                        }
                    }
                    for id in live {
                        client.delete(&id).unwrap();
                    }
                    spent
                })
            });
        }
    }
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    let s = store(CoherenceMode::Hardware, 64 << 20);
    let client = s.connect("bench").unwrap();
    g.bench_function("miss", |b| {
        let mut n = 1u64 << 40;
        b.iter(|| {
            n += 1;
            std::hint::black_box(client.contains(&ObjectId::from_u64(n)).unwrap())
        })
    });
    // Churn: 10 × capacity creates and deletes at half load, then measure hits and misses.
    let cap = s.layout().geometry.dir_capacity;
    let live = cap / 2;
    for i in 0..(10 * cap + live) {
        let b = client
            .create(&ObjectId::from_u64(i), 0, b"", &CreateInfo::default())
            .unwrap();
        b.seal().unwrap();
        if i >= live {
            client.delete(&ObjectId::from_u64(i - live)).unwrap();
        }
    }
    g.bench_function("hit_after_churn", |b| {
        let mut k = 0u64;
        b.iter(|| {
            k = (k + 1) % live;
            std::hint::black_box(client.contains(&ObjectId::from_u64(10 * cap + k)).unwrap())
        })
    });
    g.bench_function("miss_after_churn", |b| {
        let mut n = 1u64 << 41;
        b.iter(|| {
            n += 1;
            std::hint::black_box(client.contains(&ObjectId::from_u64(n)).unwrap())
        })
    });
    g.finish();
}

fn wakeup(c: &mut Criterion) {
    let mut g = c.benchmark_group("waiting_get");
    g.sample_size(20);
    let s = store(CoherenceMode::Hardware, 64 << 20);
    g.bench_function("seal_to_wakeup", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let id = ObjectId::from_u64(1 << 50 | i);
                let creator = s.connect("creator").unwrap();
                let buf = creator
                    .create(&id, 64, b"", &CreateInfo::default())
                    .unwrap();
                let s2 = s.clone();
                let waiter = std::thread::spawn(move || {
                    let c = s2.connect("waiter").unwrap();
                    let o = c.get(&id, Some(Duration::from_secs(10))).unwrap().unwrap();
                    let t = Instant::now();
                    drop(o);
                    t
                });
                std::thread::sleep(Duration::from_millis(2));
                let t0 = Instant::now();
                buf.seal().unwrap();
                let woke = waiter.join().unwrap();
                total += woke.saturating_duration_since(t0);
                creator.delete(&id).unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, get_release, create_seal, lookups, wakeup);
criterion_main!(benches);
