//! Multi-process throughput: 1, 2 and 4 processes (real processes, each its own client, each
//! mapping the region itself) doing get+release of sealed 1 KiB objects, and put (create + write +
//! seal + delete) of 64 KiB objects, for a fixed time. Prints ops/s and the scaling ratio.
//!
//! `cargo bench -p gismo-core --bench throughput` (`-- --seconds N` to change the 2 s per run).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_core::store::{CreateInfo, ObjectId, Store};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

const OBJECTS: u64 = 64;

fn child(fd: i32, workload: &str, seconds: f64, index: u64) {
    let region = Region::open(
        &RegionSpec::Fd(fd),
        &RegionOptions {
            prefault: true,
            ..RegionOptions::default()
        },
    )
    .expect("open region");
    let store = Store::attach(region).expect("attach");
    let client = store.connect("throughput").expect("connect");
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut ops = 0u64;
    let payload = vec![0x5au8; 64 * 1024];
    while Instant::now() < end {
        for _ in 0..256 {
            match workload {
                "get" => {
                    let id = ObjectId::from_u64(ops % OBJECTS);
                    let o = client
                        .get(&id, Some(Duration::ZERO))
                        .expect("get")
                        .expect("present");
                    std::hint::black_box(o.data().as_ptr());
                }
                _ => {
                    let id = ObjectId::from_u64(1 << 40 | index << 32 | ops);
                    let mut b = client
                        .create(&id, payload.len() as u64, b"", &CreateInfo::default())
                        .expect("create");
                    b.write_at(0, &payload).expect("write");
                    b.seal().expect("seal");
                    client.delete(&id).expect("delete");
                }
            }
            ops += 1;
        }
    }
    println!("OPS {ops}");
}

fn run(fd: i32, workload: &str, procs: u64, seconds: f64) -> f64 {
    let exe = std::env::current_exe().expect("current exe");
    let children: Vec<_> = (0..procs)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--child",
                    &fd.to_string(),
                    workload,
                    &seconds.to_string(),
                    &i.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let mut total = 0u64;
    for c in children {
        let out = c.wait_with_output().expect("child");
        assert!(out.status.success(), "child failed");
        let text = String::from_utf8_lossy(&out.stdout);
        total += text
            .lines()
            .find_map(|l| {
                l.strip_prefix("OPS ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .expect("child reported OPS");
    }
    total as f64 / seconds
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(
            args[2].parse().expect("fd"),
            &args[3],
            args[4].parse().expect("seconds"),
            args[5].parse().expect("index"),
        );
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let spec = RegionSpec::Memfd {
        name: "gismo-throughput".into(),
        huge_pages: false,
    };
    let region = Region::create(
        &spec,
        1 << 30,
        &RegionOptions {
            prefault: true,
            ..RegionOptions::default()
        },
    )
    .expect("memfd region");
    let fd = region.inheritable_fd().expect("inheritable fd");
    let store: Arc<Store> = Store::format(region, &Default::default()).expect("format");
    let c = store.connect("setup").expect("connect");
    for i in 0..OBJECTS {
        let mut b = c
            .create(&ObjectId::from_u64(i), 1024, b"", &CreateInfo::default())
            .unwrap();
        b.write_at(0, &[i as u8; 1024]).unwrap();
        b.seal().unwrap();
    }
    println!(
        "machine: {} ({} cores); {seconds} s per run",
        gismo_platform::coherence::cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<22} {:>14} {:>14} {:>14} {:>10}",
        "workload", "1 process", "2 processes", "4 processes", "2 vs 1"
    );
    for (name, workload) in [("get+release 1 KiB", "get"), ("put 64 KiB + delete", "put")] {
        let r: Vec<f64> = [1u64, 2, 4]
            .iter()
            .map(|&p| run(fd, workload, p, seconds))
            .collect();
        println!(
            "{:<22} {:>12.0}/s {:>12.0}/s {:>12.0}/s {:>9.2}x",
            name,
            r[0],
            r[1],
            r[2],
            r[1] / r[0]
        );
    }
}
