//! The same micro-benchmarks over every store (criterion): get+release of a sealed object, and
//! create+write+seal at 1 KiB, 64 KiB, 1 MiB, 16 MiB and 256 MiB; plus the physical limits
//! (plain, non-temporal and copy+flush copies; an empty Unix socket round trip).
//!
//! `cargo bench -p gismo-bench --bench stores` (`-- --quick` for a short run). The readable
//! comparison with percentiles and ratios is `gismo-bench report`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use gismo_bench::limits::{self, Copier};
use gismo_bench::ops::put;
use gismo_bench::stores;
use gismo_core::store::ObjectId;

const SIZES: [usize; 5] = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20];

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let src: Vec<u8> = (0..SIZES[4]).map(|i| (i % 251) as u8).collect();
    let all = stores::all(SIZES[4] as u64);

    let mut g = c.benchmark_group("get_release");
    for s in &all {
        let client = s.client();
        let id = ObjectId::random();
        put(&*client, &id, &[1u8; 1024]);
        g.bench_function(&s.name, |b| {
            b.iter(|| drop(client.get(&[id], 0).expect("get")))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("create_write_seal");
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        if size >= 16 << 20 {
            g.sample_size(10).measurement_time(Duration::from_secs(2));
        }
        for s in &all {
            let client = s.client();
            g.bench_with_input(BenchmarkId::new(&s.name, size), &size, |b, &size| {
                b.iter(|| {
                    let id = ObjectId::random();
                    put(&*client, &id, &src[..size]);
                    client.delete(&[id]).expect("delete");
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("limits");
    let mut pool = vec![0u8; 1 << 30];
    pool.iter_mut().step_by(4096).for_each(|b| *b = 1);
    let copiers = Copier::all();
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for cp in &copiers {
            let slots = pool.len() / size;
            let mut i = 0;
            g.bench_with_input(BenchmarkId::new(cp.name, size), &size, |b, &size| {
                b.iter(|| {
                    let off = (i % slots) * size;
                    i += 1;
                    cp.copy(&mut pool[off..off + size], &src[..size]);
                })
            });
        }
    }
    g.finish();
    let rt = limits::socket_round_trip(Duration::from_millis(500));
    println!(
        "unix socket empty round trip: mean {:.0} ns, p50 {:.0} ns",
        rt.mean_ns, rt.p50_ns
    );
    c.final_summary();
}
