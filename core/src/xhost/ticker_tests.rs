//! The host ticker on the whole-region emulator: several "processes" (threads, each with its
//! own open file description of the lock, as processes have) of one emulated host, and an
//! observer on another host.

use std::time::{Duration, Instant};

use super::hosts::{join, HostsError, Identity, Membership, Observer, State};
use super::hosts_tests::{table, FAST, N};
use super::tests::{Host, Hosts};
use super::ticker::{find_own, Ticker};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// The host-wide clock a ticker's membership runs on (the handover crosses processes).
fn clock() -> u64 {
    gismo_platform::clock::host_ms()
}

/// One process of the host: becomes the ticker when it can, then beats (recording each write for
/// its successor) until told to die (its lock goes with it, as with a killed process).
fn process(
    h: &Host,
    lock: &std::path::Path,
    me: u64,
    die: &AtomicBool,
    stop: &AtomicBool,
    ticking: &AtomicU64,
    rejoins: &AtomicU64,
) {
    let id = Identity::new("a", 1);
    while !stop.load(Ordering::Relaxed) {
        let Some(mut ticker) = Ticker::try_acquire(lock).expect("lock file") else {
            std::thread::sleep(Duration::from_millis(FAST.heartbeat_ms / 5));
            continue;
        };
        // SeqCst: pairs with the other processes' swaps and stores of `ticking` (one total order
        // of the hand-overs: a swap that finds another holder is two tickers at once).
        let prev = ticking.swap(me, Ordering::SeqCst);
        assert_eq!(prev, 0, "process {me} ticks while {prev} does");
        let mut m: Membership<'_> = match ticker.resume(table(h), &h.coherence, id, FAST) {
            Some(m) => m,
            None => join(table(h), &h.coherence, id, FAST, &clock).expect("join"),
        };
        ticker.record(&m).unwrap();
        loop {
            if die.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                // SeqCst: pairs with the successor's swap above and the test's loads.
                ticking.store(0, Ordering::SeqCst);
                return; // drops the ticker: the lock is released, as at a process's death
            }
            match m.beat(clock()) {
                Ok(_) => ticker.record(&m).unwrap(),
                Err(HostsError::Fenced { .. }) => {
                    rejoins.fetch_add(1, Ordering::Relaxed);
                    m = join(table(h), &h.coherence, id, FAST, &clock).expect("rejoin");
                    ticker.record(&m).unwrap();
                }
                Err(e) => panic!("beat: {e}"),
            }
            std::thread::sleep(Duration::from_millis(FAST.heartbeat_ms / 2));
        }
    }
}

/// Three processes of host a; the ticker is killed twice. Exactly one process ticks at a time;
/// the next one carries the same register on (no second register, no rejoin), fast enough that
/// an observer on host b never judges host a dead.
#[test]
fn one_process_of_a_host_ticks_and_the_next_carries_on_when_it_dies() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let lock = hosts.dir.path().join("a.ticker");
    let dies: Vec<AtomicBool> = (0..3).map(|_| AtomicBool::new(false)).collect();
    let (stop, ticking, rejoins) = (AtomicBool::new(false), AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for (k, die) in dies.iter().enumerate() {
            let (a, lock, stop, ticking, rejoins) = (&a, &lock, &stop, &ticking, &rejoins);
            s.spawn(move || process(a, lock, k as u64 + 1, die, stop, ticking, rejoins));
        }
        struct Stop<'s>(&'s AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        let own = || find_own(table(&b), &b.coherence, Identity::new("a", 1));
        let deadline = Instant::now() + Duration::from_secs(5);
        let index = loop {
            if let Some(i) = own() {
                break i;
            }
            assert!(Instant::now() < deadline, "host a never joined");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut obs = Observer::new(N);
        let watch = |obs: &mut Observer, for_ms: u64| {
            let end = Instant::now() + Duration::from_millis(for_ms);
            while Instant::now() < end {
                let now = clock();
                let o = table(&b).observe(&b.coherence, index).unwrap();
                obs.note(index, &o, now).unwrap();
                assert!(
                    !obs.is_dead(index, now, FAST.lease_ms),
                    "host a judged dead during a handover"
                );
                assert_eq!(
                    o.state.map(|s| s.state),
                    Ok(State::Live),
                    "host a's register"
                );
                std::thread::sleep(Duration::from_millis(FAST.heartbeat_ms / 2));
            }
        };
        watch(&mut obs, 3 * FAST.lease_ms);
        for _ in 0..2 {
            // SeqCst: pairs with the processes' swaps and stores of `ticking`.
            let k = ticking.load(Ordering::SeqCst);
            assert_ne!(k, 0, "nobody ticks");
            dies[k as usize - 1].store(true, Ordering::Relaxed);
            watch(&mut obs, 3 * FAST.lease_ms);
            // SeqCst: as above (pairs with the processes' swaps and stores).
            let now = ticking.load(Ordering::SeqCst);
            assert!(
                now != 0 && now != k,
                "no successor after {k} died (now {now})"
            );
        }
        assert_eq!(own(), Some(index), "the host moved to another register");
        let registers = (0..N)
            .filter(|&i| {
                table(&b)
                    .read(&b.coherence, i)
                    .is_ok_and(|s| s.identity == Identity::new("a", 1))
            })
            .count();
        assert_eq!(registers, 1, "a second register for one host");
        assert_eq!(
            rejoins.load(Ordering::Relaxed),
            0,
            "a successor had to rejoin"
        );
    });
}

/// A successor whose predecessor left no handover for the register it finds (died before its
/// first record, or an earlier membership's file) does not resume (it would write on a
/// self-lease it cannot know): the caller joins, and gets the same register back after a lease.
#[test]
fn a_successor_without_a_handover_for_the_register_joins_instead() {
    let hosts = Hosts::new(64 << 10);
    let a = hosts.host("a", 0);
    let lock = hosts.dir.path().join("a.ticker");
    let id = Identity::new("a", 1);
    let first = join(table(&a), &a.coherence, id, FAST, &clock).unwrap();
    let mut t = Ticker::try_acquire(&lock).unwrap().expect("free lock");
    assert!(
        Ticker::try_acquire(&lock).unwrap().is_none(),
        "a second holder"
    );
    assert!(t.resume(table(&a), &a.coherence, id, FAST).is_none());
    t.record(&first).unwrap();
    let rejoined = join(table(&a), &a.coherence, id, FAST, &clock).unwrap();
    assert_eq!(rejoined.index(), first.index());
    // The file's handover is of the earlier membership (another nonce): not resumed either.
    assert!(t.resume(table(&a), &a.coherence, id, FAST).is_none());
    // With a handover recorded, the next one carries on where it left.
    t.record(&rejoined).unwrap();
    drop(t);
    let mut t = Ticker::try_acquire(&lock)
        .unwrap()
        .expect("released at drop");
    let mut m = t.resume(table(&a), &a.coherence, id, FAST).unwrap();
    assert_eq!(m.index(), rejoined.index());
    assert!(m.beat(clock()).is_ok());
}
