//! The operations every store runs, through [`ObjectStoreClient`] only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo::GismoClient;
use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress, Store};
use gismo_platform::coherence::CoherenceMode;
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use gismo_plugin::interface::ObjectStoreClient;

use crate::stats::{Samples, Summary};
use crate::stores::{self, StoreUnderTest};

/// Creates, fills (with the store's own `memory_copy`) and seals one object of `src.len()`
/// bytes; the creation buffer is dropped after the seal, as a worker's `Put` does.
pub fn put(c: &dyn ObjectStoreClient, id: &ObjectId, src: &[u8]) {
    let mut b = c
        .create(
            id,
            &OwnerAddress::default(),
            false,
            src.len() as u64,
            b"",
            ObjectSource::CreatedByWorker,
        )
        .expect("create");
    // SAFETY: the buffer is writable for `src.len()` bytes; `src` is a distinct allocation.
    unsafe { c.memory_copy(b.as_mut_ptr(), src.as_ptr(), src.len()) };
    c.seal(id).expect("seal");
    drop(b);
}

/// get + release of one sealed 1 KiB object (the buffer's drop releases it).
pub fn get_release_hit(s: &StoreUnderTest, budget: Duration) -> Summary {
    let c = s.client();
    let id = ObjectId::random();
    put(&*c, &id, &[5u8; 1024]);
    let mut samples = Samples::default();
    let start = Instant::now();
    // Warm up, then measure in batches of 64 (timer overhead matters at ~100 ns).
    for _ in 0..1000 {
        drop(c.get(&[id], 0).expect("get"));
    }
    while start.elapsed() < budget {
        let t = Instant::now();
        for _ in 0..64 {
            let got = c.get(&[id], 0).expect("get");
            assert!(got[0].is_some());
            drop(got);
        }
        samples.0.push(t.elapsed().as_nanos() as u64 / 64);
    }
    let _ = c.delete(&[id]);
    samples.summary(0)
}

/// create + write + seal of `size` bytes (each object deleted after, outside the timing).
pub fn create_write_seal(s: &StoreUnderTest, src: &[u8], size: usize, budget: Duration) -> Summary {
    let c = s.client();
    let mut samples = Samples::default();
    let start = Instant::now();
    let min = if size >= 64 << 20 { 3 } else { 10 };
    while samples.0.len() < min || (start.elapsed() < budget && samples.0.len() < 1_000_000) {
        let id = ObjectId::random();
        let t = Instant::now();
        put(&*c, &id, &src[..size]);
        samples.push(t.elapsed());
        c.delete(&[id]).expect("delete");
    }
    samples.summary(size as u64)
}

/// Reads every byte of `data` (the consumer's work, the same for every store).
pub fn read_all(data: &[u8]) -> u64 {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to splits off the unaligned ends.
        unsafe { data.align_to::<u64>() }
    };
    let mut x = 0u64;
    for w in words {
        x = x.wrapping_add(*w);
    }
    for b in head.iter().chain(tail) {
        x = x.wrapping_add(u64::from(*b));
    }
    x
}

/// A cross-"node" read of one `size`-byte object: created on node A, read in full on node B.
#[derive(Clone, Debug)]
pub struct CrossNode {
    pub store: String,
    pub size: u64,
    /// Time from asking for the object on node B to having it readable there.
    pub access: Summary,
    /// Access plus reading every byte.
    pub access_and_read: Summary,
    /// Payload bytes copied to make the object readable on node B.
    pub bytes_copied: u64,
}

/// GISMO: node B is a second mapping of the same region (another address, as on another host):
/// the get returns B's own address of the object — nothing is copied.
pub fn cross_node_gismo(size: usize, src: &[u8], rounds: usize) -> CrossNode {
    let a = stores::gismo_store(CoherenceMode::Hardware, (size as u64 * 2).max(256 << 20));
    let fd = a.region().raw_fd().expect("memfd");
    // Node B maps and prefaults the region once, when it attaches (as gismo-server does).
    let opts = RegionOptions {
        prefault: true,
        ..RegionOptions::default()
    };
    let region_b = Region::open(&RegionSpec::Fd(fd), &opts).expect("map again");
    let b = Store::attach(region_b).expect("attach");
    assert_ne!(a.region().as_ptr(), b.region().as_ptr());
    let ca: Arc<dyn ObjectStoreClient> = Arc::new(GismoClient::connect(&a, "node-a").unwrap());
    let cb: Arc<dyn ObjectStoreClient> = Arc::new(GismoClient::connect(&b, "node-b").unwrap());
    let (mut access, mut full) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        let id = ObjectId::random();
        put(&*ca, &id, &src[..size]);
        let t = Instant::now();
        let got = cb
            .get(&[id], 0)
            .unwrap()
            .pop()
            .unwrap()
            .expect("visible on B");
        access.push(t.elapsed());
        std::hint::black_box(read_all(got.data()));
        full.push(t.elapsed());
        drop(got);
        ca.delete(&[id]).unwrap();
    }
    CrossNode {
        store: "gismo-hardware".into(),
        size: size as u64,
        access: access.summary(size as u64),
        access_and_read: full.summary(size as u64),
        bytes_copied: 0,
    }
}

/// The plasma fallback: node B has its own store; making the object readable there means what
/// a raylet's pull does — read it from A's store, create it in B's, copy, seal — then get.
pub fn cross_node_plasma(size: usize, src: &[u8], rounds: usize) -> CrossNode {
    let mem = (size as u64 * 2).max(256 << 20);
    let (na, nb) = (stores::plasma(mem), stores::plasma(mem + 4096));
    let (ca, cb) = (na.client(), nb.client());
    let (mut access, mut full) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        let id = ObjectId::random();
        put(&*ca, &id, &src[..size]);
        let t = Instant::now();
        let on_a = ca.get(&[id], 0).unwrap().pop().unwrap().expect("on A");
        put(&*cb, &id, on_a.data());
        drop(on_a);
        let got = cb
            .get(&[id], 0)
            .unwrap()
            .pop()
            .unwrap()
            .expect("pulled to B");
        access.push(t.elapsed());
        std::hint::black_box(read_all(got.data()));
        full.push(t.elapsed());
        drop(got);
        ca.delete(&[id]).unwrap();
        cb.delete(&[id]).unwrap();
    }
    CrossNode {
        store: "plasma".into(),
        size: size as u64,
        access: access.summary(size as u64),
        access_and_read: full.summary(size as u64),
        bytes_copied: size as u64,
    }
}
