//! The cross-host ring on the whole-region emulator: host a produces (threads as its CPUs or
//! processes), host b consumes, each through its own view.

use std::time::{Duration, Instant};

use super::lines::write_back;
use super::ring::{
    cell_checksum, Consumer, ConsumerStats, Message, Ring, RingError, CELL_WORDS, PAYLOAD_WORDS,
};
use super::tests::{Host, Hosts};
use crate::sync::{AtomicU64, Ordering};

const KIND: u64 = 0x5249_4e47; // "RING"

/// The payload of producer `w`'s message `k`: checkable on its own.
fn payload(w: u64, k: u64) -> [u64; PAYLOAD_WORDS] {
    [
        w,
        k,
        (w << 32) ^ k ^ 0xdead_beef,
        !k,
        k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w,
    ]
}

/// Producer and index of a message, if its payload is whole.
fn check(m: &Message) -> (u64, u64) {
    let (w, k) = (m.payload[0], m.payload[1]);
    assert_eq!(m.kind, KIND, "kind of {m:?}");
    assert_eq!(m.payload, payload(w, k), "torn or foreign message {m:?}");
    (w, k)
}

fn ring(h: &Host, capacity: usize) -> Ring<'_> {
    Ring::new(h.words(0, Ring::words_needed(capacity)), capacity).expect("ring layout")
}

/// Sends, retrying while the ring is full (bounded by `deadline`).
fn send_retrying(
    r: &Ring<'_>,
    h: &Host,
    w: u64,
    k: u64,
    deadline: Instant,
) -> Result<u64, RingError> {
    loop {
        match r.send(&h.coherence, KIND, &payload(w, k)) {
            Err(RingError::Full { .. }) if Instant::now() < deadline => std::thread::yield_now(),
            other => return other,
        }
    }
}

#[test]
fn messages_cross_hosts_in_order_and_a_full_ring_says_so() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let (ra, rb) = (ring(&a, 4), ring(&b, 4));
    let mut consumer = Consumer::new(&b.coherence, rb, Duration::from_secs(10)).unwrap();
    assert_eq!(consumer.try_recv(&b.coherence), Ok(None), "empty ring");
    for k in 0..4 {
        assert_eq!(ra.send(&a.coherence, KIND, &payload(0, k)), Ok(k));
    }
    assert_eq!(
        ra.send(&a.coherence, KIND, &payload(0, 4)),
        Err(RingError::Full { head: 4, tail: 0 })
    );
    for k in 0..2 {
        let m = consumer.try_recv(&b.coherence).unwrap().expect("a message");
        assert_eq!((m.position, check(&m)), (k, (0, k)));
    }
    // The consumer's progress reached host a: two more cells (the next lap of cells 0 and 1).
    for k in 4..6 {
        assert_eq!(ra.send(&a.coherence, KIND, &payload(0, k)), Ok(k));
    }
    for k in 2..6 {
        let m = consumer.try_recv(&b.coherence).unwrap().expect("a message");
        assert_eq!((m.position, check(&m)), (k, (0, k)));
    }
    assert_eq!(consumer.try_recv(&b.coherence), Ok(None));
    assert_eq!(
        ra.consumer_stats(&a.coherence),
        ConsumerStats {
            tail: 6,
            holes: 0,
            corrupt: 0
        }
    );
}

/// `producers` threads of host a send `per_producer` messages each through a ring of 8 cells
/// (many laps); a thread of host b receives them. Every message must arrive whole, each
/// producer's in its order, none skipped, every send succeed, and no published cell may ever be
/// read with a body that fails its checksum (the write order alone must keep torn lines away).
fn concurrent_run(rate: u64, producers: u64, per_producer: u64) {
    // One page: every spontaneous sample hits the ring.
    let hosts = Hosts::new(4096);
    let (a, b) = (hosts.host("a", rate), hosts.host("b", rate));
    let deadline = Instant::now() + Duration::from_secs(120);
    let running = AtomicU64::new(producers);
    let (stats, mismatches, received, failed) = std::thread::scope(|s| {
        let failed: Vec<_> = (0..producers)
            .map(|w| {
                let (a, running) = (&a, &running);
                s.spawn(move || {
                    let r = ring(a, 8);
                    let mut errors = Vec::new();
                    for k in 0..per_producer {
                        if let Err(e) = send_retrying(&r, a, w, k, deadline) {
                            errors.push((k, e));
                        }
                    }
                    running.fetch_sub(1, Ordering::Release); // pairs with the Acquire below
                    errors
                })
            })
            .collect();
        let mut consumer =
            Consumer::new(&b.coherence, ring(&b, 8), Duration::from_secs(30)).unwrap();
        let mut next = vec![0u64; producers as usize];
        let mut position = 0;
        let mut received = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "{received} received at the deadline"
            );
            // Acquire: pairs with the producers' Release decrement; their sends are done.
            let done = running.load(Ordering::Acquire) == 0;
            match consumer.try_recv(&b.coherence) {
                Ok(Some(m)) => {
                    let (w, k) = check(&m);
                    assert_eq!(m.position, position, "positions are consecutive");
                    assert_eq!(k, next[w as usize], "producer {w} out of order");
                    next[w as usize] += 1;
                    position += 1;
                    received += 1;
                }
                Ok(None) if done => break,
                Ok(None) => std::thread::yield_now(),
                Err(e) => panic!("recv: {e}"),
            }
        }
        let failed: Vec<_> = failed.into_iter().map(|h| h.join().unwrap()).collect();
        (consumer.stats(), consumer.mismatches(), received, failed)
    });
    println!("rate {rate}: {received} received, {stats:?}, {mismatches} checksum mismatches");
    assert!(failed.iter().all(Vec::is_empty), "failed sends: {failed:?}");
    assert_eq!(received, producers * per_producer);
    assert_eq!(stats.skipped(), 0);
    assert_eq!(mismatches, 0, "a published cell was read torn");
}

#[test]
fn concurrent_producers_reach_the_other_host_intact_and_in_order() {
    concurrent_run(0, 2, 3000);
}

#[test]
fn concurrent_producers_reach_the_other_host_intact_under_spontaneous_events() {
    concurrent_run(200_000, 2, 20_000);
}

/// Negative control: without the producer's write-backs nothing reaches memory, so the
/// consumer sees an empty ring.
#[test]
fn skipped_write_backs_keep_the_messages_from_the_consumer() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    a.region.emulated_host().unwrap().set_skip_write_back(true);
    let ra = ring(&a, 8);
    for k in 0..5 {
        ra.send(&a.coherence, KIND, &payload(0, k)).unwrap();
    }
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 8), Duration::from_secs(10)).unwrap();
    assert_eq!(
        consumer.recv(&b.coherence, Duration::from_millis(100)),
        Ok(None),
        "caught: without write-backs no message may arrive"
    );
    // The same with the write-backs on: they arrive (so it is the write-backs that matter).
    a.region.emulated_host().unwrap().set_skip_write_back(false);
    write_back(&a.coherence, a.words(0, Ring::words_needed(8)));
    for k in 0..5 {
        let m = consumer.try_recv(&b.coherence).unwrap().expect("a message");
        assert_eq!(check(&m), (0, k));
    }
}

/// Negative control: without the consumer's evictions its view keeps the cold snapshot it
/// joined with, so it sees an empty ring.
#[test]
fn skipped_evictions_keep_the_messages_from_the_consumer() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    b.region.emulated_host().unwrap().set_skip_invalidate(true);
    let ra = ring(&a, 8);
    for k in 0..5 {
        ra.send(&a.coherence, KIND, &payload(0, k)).unwrap();
    }
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 8), Duration::from_secs(10)).unwrap();
    assert_eq!(
        consumer.recv(&b.coherence, Duration::from_millis(100)),
        Ok(None),
        "caught: without evictions no message may arrive"
    );
    b.region.emulated_host().unwrap().set_skip_invalidate(false);
    for k in 0..5 {
        let m = consumer.try_recv(&b.coherence).unwrap().expect("a message");
        assert_eq!(check(&m), (0, k));
    }
}

#[test]
fn a_claim_never_published_is_skipped_after_the_timeout_and_counted() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ra = ring(&a, 4);
    let dead = ra.claim(&a.coherence).unwrap(); // a producer that dies holding its claim
    assert_eq!(dead.position(), 0);
    ra.send(&a.coherence, KIND, &payload(1, 0)).unwrap();
    let timeout = Duration::from_millis(50);
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 4), timeout).unwrap();
    let t0 = Instant::now();
    assert_eq!(consumer.try_recv_at(&b.coherence, t0), Ok(None), "pending");
    assert_eq!(
        consumer.try_recv_at(&b.coherence, t0 + timeout / 2),
        Ok(None),
        "still within the timeout"
    );
    let m = consumer
        .try_recv_at(&b.coherence, t0 + timeout)
        .unwrap()
        .expect("the hole skipped, the next message delivered");
    assert_eq!((m.position, check(&m)), (1, (1, 0)));
    assert_eq!(consumer.stats().holes, 1);
    assert_eq!(
        ra.consumer_stats(&a.coherence).holes,
        1,
        "the count is in memory"
    );

    // The dead producer comes back: it must not publish.
    assert_eq!(
        dead.publish(&a.coherence, KIND, &payload(9, 9)),
        Err(RingError::Skipped { position: 0 })
    );
    assert_eq!(ra.late_drops(), 1);
    assert_eq!(consumer.try_recv(&b.coherence), Ok(None));
}

/// A producer late past the hole timeout finds its cell taken by the next lap: it does not
/// publish (its seq CAS fails), and the next lap's message arrives whole.
#[test]
fn a_late_producer_never_publishes_into_the_next_lap() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ra = ring(&a, 2);
    let late = ra.claim(&a.coherence).unwrap();
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 2), Duration::ZERO).unwrap();
    let t0 = Instant::now();
    assert_eq!(consumer.try_recv_at(&b.coherence, t0), Ok(None));
    assert_eq!(consumer.try_recv_at(&b.coherence, t0), Ok(None), "skipped");
    assert_eq!(consumer.stats().holes, 1);
    // Positions 1 and 2; position 2 is cell 0's next lap, taken from the late producer.
    for k in 1..3 {
        assert_eq!(ra.send(&a.coherence, KIND, &payload(1, k)), Ok(k));
    }
    assert_eq!(
        late.publish(&a.coherence, KIND, &payload(9, 9)),
        Err(RingError::Skipped { position: 0 })
    );
    for k in 1..3 {
        let m = consumer.try_recv(&b.coherence).unwrap().expect("a message");
        assert_eq!((m.position, check(&m)), (k, (1, k)));
    }
    assert_eq!(consumer.mismatches(), 0);
}

/// A body store that lands in a published cell (what a late producer's last stores can do, or
/// a bit flip) fails the checksum: the cell is never delivered, and is skipped as corrupt.
#[test]
fn a_damaged_published_cell_is_never_delivered_and_is_counted() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ra = ring(&a, 4);
    ra.send(&a.coherence, KIND, &payload(0, 0)).unwrap();
    ra.send(&a.coherence, KIND, &payload(0, 1)).unwrap();
    let cell0 = &a.words(2 * 16, CELL_WORDS);
    cell0[3].store(12345, Ordering::Relaxed); // a payload word of position 0
    write_back(&a.coherence, cell0);
    let timeout = Duration::from_millis(50);
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 4), timeout).unwrap();
    let t0 = Instant::now();
    assert_eq!(consumer.try_recv_at(&b.coherence, t0), Ok(None));
    let m = consumer
        .try_recv_at(&b.coherence, t0 + timeout)
        .unwrap()
        .expect("position 1");
    assert_eq!((m.position, check(&m)), (1, (0, 1)));
    assert_eq!(consumer.stats().corrupt, 1);
    assert!(consumer.mismatches() >= 2);
}

#[test]
fn corrupt_words_are_typed_errors() {
    let hosts = Hosts::new(1 << 20);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let words = a.words(0, Ring::words_needed(4));
    assert_eq!(
        Ring::new(words, 0).err(),
        Some(RingError::BadLayout {
            capacity: 0,
            words: words.len()
        })
    );
    assert!(Ring::new(&words[..words.len() - 1], 4).is_err());
    assert!(
        Ring::new(a.words(8, Ring::words_needed(4)), 4).is_err(),
        "misaligned"
    );
    let ra = ring(&a, 4);
    ra.send(&a.coherence, KIND, &payload(0, 0)).unwrap();

    // A seq of another cell's index in cell 1, seen by the consumer at position 1.
    ra.send(&a.coherence, KIND, &payload(0, 1)).unwrap();
    let cell1 = a.words(2 * 16 + CELL_WORDS, CELL_WORDS);
    let bad_seq = 2 * (2 + 1); // "published position 2": cell 2's
    cell1[CELL_WORDS - 1].store(bad_seq, Ordering::Relaxed);
    cell1[CELL_WORDS - 2].store(
        cell_checksum(bad_seq, KIND, &payload(0, 1)),
        Ordering::Relaxed,
    );
    write_back(&a.coherence, cell1);
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 4), Duration::from_secs(10)).unwrap();
    assert_eq!(
        check(&consumer.try_recv(&b.coherence).unwrap().unwrap()),
        (0, 0)
    );
    assert_eq!(
        consumer.try_recv(&b.coherence),
        Err(RingError::CorruptCell {
            position: 1,
            seq: bad_seq
        })
    );
    assert_eq!(consumer.stats().corrupt, 1);
    assert_eq!(consumer.try_recv(&b.coherence), Ok(None), "moved on");
    // The producer meets the same seq when its lap comes back to cell 1: the cell is its own to
    // take over the bad seq (the consumer is done with its previous lap), and the message
    // arrives. (Positions 2, 3, 4 first.)
    for k in 2..5 {
        ra.send(&a.coherence, KIND, &payload(0, k)).unwrap();
    }
    assert_eq!(ra.send(&a.coherence, KIND, &payload(0, 5)), Ok(5));
    for k in 2..6 {
        let m = consumer.try_recv(&b.coherence).unwrap().expect("a message");
        assert_eq!((m.position, check(&m)), (k, (0, k)));
    }

    // A tail beyond head.
    let tail = &b.words(16, 1)[0];
    tail.store(1000, Ordering::Relaxed);
    write_back(&b.coherence, std::slice::from_ref(tail));
    assert_eq!(
        ra.send(&a.coherence, KIND, &payload(0, 6)),
        Err(RingError::CorruptCounters {
            head: 6,
            tail: 1000
        })
    );
    assert!(matches!(
        Consumer::new(&b.coherence, ring(&b, 4), Duration::from_secs(10)),
        Err(RingError::CorruptCounters {
            head: 6,
            tail: 1000
        })
    ));
    tail.store(u64::MAX, Ordering::Relaxed);
    assert!(matches!(
        Consumer::new(&b.coherence, ring(&b, 4), Duration::from_secs(10)),
        Err(RingError::CorruptCounters { .. })
    ));
}

/// Review of the v2 blocks, M2: a bad seq in a cell nobody has claimed yet (a flipped word in an
/// idle ring) is not skipped — skipping it would put `tail` past `head`, and both sides would
/// refuse the ring for good — and the next message through that cell arrives (its producer
/// takes the cell over the bad seq).
#[test]
fn a_bad_seq_in_an_idle_cell_does_not_wedge_the_ring() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ra = ring(&a, 4);
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 4), Duration::from_secs(10)).unwrap();
    for k in 0..2 {
        ra.send(&a.coherence, KIND, &payload(0, k)).unwrap();
        assert_eq!(
            consumer.try_recv(&b.coherence).unwrap().unwrap().position,
            k
        );
    }
    // Cell 2 (position 2, unclaimed) gets an undecodable seq.
    let cell2 = a.words(2 * 16 + 2 * CELL_WORDS, CELL_WORDS);
    cell2[CELL_WORDS - 1].store(1, Ordering::Relaxed);
    write_back(&a.coherence, cell2);
    assert_eq!(
        consumer.try_recv(&b.coherence),
        Ok(None),
        "empty, not corrupt"
    );
    assert_eq!(
        ra.consumer_stats(&a.coherence).tail,
        2,
        "skipped an unclaimed position"
    );
    for k in 2..4 {
        assert_eq!(ra.send(&a.coherence, KIND, &payload(0, k)), Ok(k));
        let m = consumer.try_recv(&b.coherence).unwrap().expect("a message");
        assert_eq!((m.position, check(&m)), (k, (0, k)));
    }
    assert_eq!(consumer.stats().corrupt, 0);
}

/// Review of the v2 blocks, L4: a skip counter that reads `u64::MAX` (a corrupt line) wraps; it
/// never panics (overflow checks are on in tests).
#[test]
fn a_corrupt_skip_counter_wraps_instead_of_panicking() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ra = ring(&a, 4);
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 4), Duration::from_millis(1)).unwrap();
    let _claim = ra.claim(&a.coherence).unwrap();
    for w in b.words(16, 16).iter().skip(1).take(2) {
        w.store(u64::MAX, Ordering::Relaxed);
    }
    write_back(&b.coherence, b.words(16, 16));
    let t0 = Instant::now();
    assert_eq!(consumer.try_recv_at(&b.coherence, t0), Ok(None));
    assert_eq!(
        consumer.try_recv_at(&b.coherence, t0 + Duration::from_millis(5)),
        Ok(None)
    );
    assert_eq!(consumer.tail(), 1, "the hole was skipped");
}

/// Review of the v2 blocks, L1: a consumer started on another host than the previous one (a
/// taker of a dead destination host) resumes at memory's `tail`, not at its own cached copy
/// (before, it re-delivered consumed positions and wrote a smaller `tail` back).
#[test]
fn a_consumer_started_on_another_host_resumes_at_memorys_tail() {
    let hosts = Hosts::new(64 << 10);
    let (a, b, c) = (hosts.host("a", 0), hosts.host("b", 0), hosts.host("c", 0));
    let ra = ring(&a, 4);
    // c's view of the consumer block is cached while the ring is fresh.
    assert_eq!(ring(&c, 4).consumer_stats(&c.coherence).tail, 0);
    let mut consumer = Consumer::new(&b.coherence, ring(&b, 4), Duration::from_secs(10)).unwrap();
    for k in 0..3 {
        ra.send(&a.coherence, KIND, &payload(0, k)).unwrap();
        assert_eq!(
            consumer.try_recv(&b.coherence).unwrap().unwrap().position,
            k
        );
    }
    let taker = Consumer::new(&c.coherence, ring(&c, 4), Duration::from_secs(10)).unwrap();
    assert_eq!(taker.tail(), 3);
}
