//! The store core on non-coherent emulated hosts (Flush mode): each host reads and writes payloads
//! through a private view of the region, so only `memory_copy`/`flush` move bytes to the shared
//! region and only `invalidate` refreshes a reader's view. Objects still travel intact between
//! hosts; with the writer's flush or the reader's invalidate skipped, they do not — which shows the
//! emulation catches exactly the bug it exists for, at the level of the store.

use std::sync::Arc;
use std::time::Duration;

use gismo_core::format::FormatOptions;
use gismo_core::store::{CreateInfo, ObjectId, Store};
use gismo_platform::coherence::{Coherence, CoherenceMode, EmulatedHost};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};

struct Host {
    store: Arc<Store>,
    view: Arc<EmulatedHost>,
}

/// A region formatted for Flush mode and `n` emulated hosts, each with its own mapping of it.
fn hosts(name: &str, n: usize) -> Vec<Host> {
    let spec = RegionSpec::Memfd {
        name: name.into(),
        huge_pages: false,
    };
    let first = Region::create(&spec, 64 << 20, &RegionOptions::default()).unwrap();
    let fd = first.inheritable_fd().unwrap();
    let opts = FormatOptions {
        coherence: CoherenceMode::Flush,
        ..FormatOptions::default()
    };
    gismo_core::format::format(&first, &opts).unwrap();
    (0..n)
        .map(|_| {
            let region = Region::open(&RegionSpec::Fd(fd), &RegionOptions::default()).unwrap();
            // SAFETY: the view mirrors this host's own mapping of the region, which the store
            // below keeps alive for as long as the view is used.
            let view = unsafe { EmulatedHost::new(region.as_ptr(), region.len()) };
            let coherence = Coherence::emulated(CoherenceMode::Flush, view.clone());
            Host {
                store: Store::attach_with(region, coherence).unwrap(),
                view,
            }
        })
        .collect()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const SIZES: [usize; 7] = [0, 1, 63, 1000, 16_385, 300_001, 4 << 20];

#[test]
fn objects_cross_emulated_hosts_intact_both_ways() {
    let h = hosts("gismo-emu-ok", 2);
    assert_ne!(
        h[0].store.region().as_ptr(),
        h[1].store.region().as_ptr(),
        "distinct mappings"
    );
    for (writer, reader) in [(0usize, 1usize), (1, 0)] {
        let w = h[writer].store.connect("writer").unwrap();
        let r = h[reader].store.connect("reader").unwrap();
        for (i, &len) in SIZES.iter().enumerate() {
            let id = ObjectId::from_u64((writer as u64) << 32 | i as u64);
            let data = pattern(i as u64 + 1, len);
            let mut b = w
                .create(&id, len as u64, b"metadata", &CreateInfo::default())
                .unwrap();
            if i % 2 == 0 {
                b.write_at(0, &data).unwrap(); // memory_copy: written back as it goes
            } else {
                b.data_mut().copy_from_slice(&data); // in place: written back at seal
            }
            b.seal().unwrap();
            let o = r
                .get(&id, Some(Duration::ZERO))
                .unwrap()
                .expect("sealed on the other host");
            assert_eq!(o.data(), &data[..], "size {len}, host {writer} -> {reader}");
            assert_eq!(o.metadata(), b"metadata");
        }
    }
    assert!(h[0].view.lines_written_back() > 0 && h[1].view.lines_refreshed() > 0);
}

#[test]
fn a_skipped_flush_leaves_the_reader_with_stale_bytes() {
    let h = hosts("gismo-emu-noflush", 2);
    h[0].view.set_skip_flush(true);
    let w = h[0].store.connect("writer").unwrap();
    let r = h[1].store.connect("reader").unwrap();
    let data = pattern(7, 100_000);
    let mut b = w
        .create(
            &ObjectId::from_u64(1),
            data.len() as u64,
            b"",
            &CreateInfo::default(),
        )
        .unwrap();
    b.data_mut().copy_from_slice(&data);
    b.seal().unwrap();
    let o = r
        .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
        .unwrap()
        .unwrap();
    assert_ne!(
        o.data(),
        &data[..],
        "without the writer's flush the bytes never reach the region"
    );
}

#[test]
fn a_skipped_invalidate_leaves_the_reader_with_stale_bytes() {
    let h = hosts("gismo-emu-noinval", 2);
    let w = h[0].store.connect("writer").unwrap();
    let r = h[1].store.connect("reader").unwrap();
    // Version 1 is read by host 1, so its view caches those lines.
    let one = pattern(1, 50_000);
    let mut b = w
        .create(
            &ObjectId::from_u64(1),
            one.len() as u64,
            b"",
            &CreateInfo::default(),
        )
        .unwrap();
    b.write_at(0, &one).unwrap();
    b.seal().unwrap();
    let first_offset = r
        .get(&ObjectId::from_u64(1), Some(Duration::ZERO))
        .unwrap()
        .unwrap()
        .as_ptr() as usize;
    w.delete(&ObjectId::from_u64(1)).unwrap();
    // Version 2 lands in the same blocks (best fit reuses the freed run).
    let two = pattern(2, 50_000);
    let mut b = w
        .create(
            &ObjectId::from_u64(2),
            two.len() as u64,
            b"",
            &CreateInfo::default(),
        )
        .unwrap();
    b.write_at(0, &two).unwrap();
    b.seal().unwrap();
    h[1].view.set_skip_invalidate(true);
    let o = r
        .get(&ObjectId::from_u64(2), Some(Duration::ZERO))
        .unwrap()
        .unwrap();
    assert_eq!(
        o.as_ptr() as usize,
        first_offset,
        "the allocator reused the blocks"
    );
    assert_eq!(
        o.data(),
        &one[..],
        "without the reader's invalidate it sees the old object"
    );
    drop(o);
    h[1].view.set_skip_invalidate(false);
    let o = r
        .get(&ObjectId::from_u64(2), Some(Duration::ZERO))
        .unwrap()
        .unwrap();
    assert_eq!(o.data(), &two[..], "with it, never");
}

#[test]
fn concurrent_hosts_never_see_stale_bytes() {
    let h = hosts("gismo-emu-concurrent", 3);
    std::thread::scope(|s| {
        for (me, host) in h.iter().enumerate() {
            let h = &h;
            s.spawn(move || {
                let c = host.store.connect("worker").unwrap();
                for round in 0..300u64 {
                    let id = ObjectId::from_u64((me as u64) << 32 | round);
                    let len = [100usize, 5000, 70_000, 1 << 20][(round % 4) as usize];
                    let data = pattern(id.hash64(), len);
                    let mut b = c
                        .create(&id, len as u64, b"", &CreateInfo::default())
                        .unwrap();
                    b.write_at(0, &data).unwrap();
                    b.seal().unwrap();
                    // Read a neighbour's object of the same round, then drop our older ones.
                    let other = ObjectId::from_u64((((me + 1) % h.len()) as u64) << 32 | round);
                    if let Some(o) = c.get(&other, Some(Duration::from_secs(10))).unwrap() {
                        let expect = pattern(other.hash64(), o.data().len());
                        assert_eq!(o.data(), &expect[..], "host {me} read {other} stale");
                    }
                    if round >= 2 {
                        let _ = c.delete(&ObjectId::from_u64((me as u64) << 32 | (round - 2)));
                    }
                }
            });
        }
    });
}

/// The same exchange between real processes: each process is an emulated host with its own
/// mapping and its own private view; the child reads what the parent wrote and writes back.
#[test]
fn emulated_hosts_in_separate_processes() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    if let Ok(fd) = std::env::var("GISMO_EMU_CHILD_FD") {
        let region = Region::open(
            &RegionSpec::Fd(fd.parse().unwrap()),
            &RegionOptions::default(),
        )
        .unwrap();
        // SAFETY: the view mirrors this process's own mapping, kept alive by the store.
        let view = unsafe { EmulatedHost::new(region.as_ptr(), region.len()) };
        let store =
            Store::attach_with(region, Coherence::emulated(CoherenceMode::Flush, view)).unwrap();
        let c = store.connect("child-host").unwrap();
        for (i, &len) in SIZES.iter().enumerate() {
            let o = c
                .get(&ObjectId::from_u64(i as u64), Some(Duration::from_secs(30)))
                .unwrap()
                .unwrap();
            assert_eq!(
                o.data(),
                &pattern(i as u64 + 1, len)[..],
                "child read size {len}"
            );
        }
        for (i, &len) in SIZES.iter().enumerate() {
            let id = ObjectId::from_u64(100 + i as u64);
            let mut b = c
                .create(&id, len as u64, b"", &CreateInfo::default())
                .unwrap();
            b.data_mut().copy_from_slice(&pattern(100 + i as u64, len));
            b.seal().unwrap();
        }
        println!("CHILD-DONE");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).ok(); // keep our objects' creator alive until told
        return;
    }
    let h = hosts("gismo-emu-procs", 1);
    let fd = h[0].store.region().inheritable_fd().unwrap();
    let c = h[0].store.connect("parent-host").unwrap();
    for (i, &len) in SIZES.iter().enumerate() {
        let mut b = c
            .create(
                &ObjectId::from_u64(i as u64),
                len as u64,
                b"",
                &CreateInfo::default(),
            )
            .unwrap();
        b.write_at(0, &pattern(i as u64 + 1, len)).unwrap();
        b.seal().unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "emulated_hosts_in_separate_processes",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GISMO_EMU_CHILD_FD", fd.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended before finishing"
        );
        if line.contains("CHILD-DONE") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "child timed out");
    }
    for (i, &len) in SIZES.iter().enumerate() {
        let o = c
            .get(&ObjectId::from_u64(100 + i as u64), Some(Duration::ZERO))
            .unwrap()
            .unwrap();
        assert_eq!(
            o.data(),
            &pattern(100 + i as u64, len)[..],
            "parent read size {len}"
        );
    }
    child.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert!(child.wait().unwrap().success());
}

/// Through the interface (`GismoClient`), a Flush-mode seal writes back only what
/// `memory_copy` did not: a payload copied whole is written back once, not twice, and a payload
/// written partly through the buffer still reaches the other host whole.
#[test]
fn seal_writes_back_only_what_memory_copy_did_not() {
    use gismo::GismoClient;
    use gismo_core::store::{ObjectSource, OwnerAddress};
    use gismo_plugin::interface::ObjectStoreClient;
    let h = hosts("gismo-emu-written", 2);
    let w = GismoClient::connect(&h[0].store, "writer").unwrap();
    let r = GismoClient::connect(&h[1].store, "reader").unwrap();
    let lines = |n: usize| n.div_ceil(64) as u64;
    let len = 1 << 20;
    let data = pattern(7, len);
    let create = |id: &ObjectId| {
        w.create(
            id,
            &OwnerAddress::default(),
            false,
            len as u64,
            b"md",
            ObjectSource::CreatedByWorker,
        )
        .unwrap()
    };

    // Whole payload by memory_copy: written back once (the data's lines; the metadata's line was
    // written back at create).
    let a = ObjectId::from_u64(0xa);
    let mut b = create(&a);
    let before = h[0].view.lines_written_back();
    // SAFETY: the buffer is writable for `len` bytes; `data` is a distinct allocation.
    unsafe { w.memory_copy(b.as_mut_ptr(), data.as_ptr(), len) };
    w.seal(&a).unwrap();
    drop(b);
    let written = h[0].view.lines_written_back() - before;
    assert!(
        written <= lines(len) + 1,
        "{written} lines written back for a {} -line payload: the seal wrote it back again",
        lines(len)
    );
    let got = r.get(&[a], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(got.data(), &data[..]);
    assert_eq!(got.metadata(), b"md");
    drop(got);

    // First half by memory_copy, second half through the buffer: the seal writes the second
    // half back, and only it.
    let c = ObjectId::from_u64(0xc);
    let mut b = create(&c);
    let half = len / 2;
    // SAFETY: as above, for the first half.
    unsafe { w.memory_copy(b.as_mut_ptr(), data.as_ptr(), half) };
    b.as_mut_slice()[half..].copy_from_slice(&data[half..]);
    let before = h[0].view.lines_written_back();
    w.seal(&c).unwrap();
    drop(b);
    let at_seal = h[0].view.lines_written_back() - before;
    assert!(
        at_seal >= lines(len - half) && at_seal <= lines(len - half) + 1,
        "the seal wrote back {at_seal} lines, the buffer-written half has {}",
        lines(len - half)
    );
    let got = r.get(&[c], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(
        got.data(),
        &data[..],
        "the buffer-written half reached the other host"
    );

    // Nothing by memory_copy: the seal writes back everything.
    let e = ObjectId::from_u64(0xe);
    let mut b = create(&e);
    b.as_mut_slice().copy_from_slice(&data);
    w.seal(&e).unwrap();
    drop(b);
    let got = r.get(&[e], 0).unwrap().pop().unwrap().unwrap();
    assert_eq!(got.data(), &data[..]);
}

/// H4: an abort in Flush mode writes back and drops the payload's lines before the block is
/// freed, so no dirty line of the aborted object is left in the writer's cache to be written
/// over the block's next owner later. (Before: nothing was written back at abort.)
#[test]
fn an_abort_writes_back_and_drops_the_payload_before_freeing_it() {
    let h = hosts("gismo-emu-abort", 1);
    let c = h[0].store.connect("writer").unwrap();
    let len = 100_000usize;
    let mut b = c
        .create(
            &ObjectId::from_u64(1),
            len as u64,
            b"m",
            &CreateInfo::default(),
        )
        .unwrap();
    b.data_mut().fill(0xEE);
    let (wb, refreshed) = (h[0].view.lines_written_back(), h[0].view.lines_refreshed());
    b.abort().unwrap();
    let lines = (len as u64 + 1).div_ceil(64);
    assert!(
        h[0].view.lines_written_back() - wb >= lines,
        "every payload line written back at abort"
    );
    assert!(
        h[0].view.lines_refreshed() - refreshed >= lines,
        "and dropped from this host's view"
    );
    assert_eq!(h[0].store.stats().used_bytes, 0);
}
