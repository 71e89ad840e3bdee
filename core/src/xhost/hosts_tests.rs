//! Host registers and the lease on the whole-region emulator: emulated hosts in one process
//! (`tests::Hosts`), threads acting as their CPUs.

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use super::hosts::{
    join, Fence, HostTable, HostsError, Identity, Membership, Observer, RegisterState, State,
    Timing,
};
use super::lease::{decide, Decision, Inputs, Lease, LeaseEvent, LowerBallot};
use super::lines::write_back;
use super::tests::{Host, Hosts};
use crate::sync::{AtomicBool, AtomicU64, Ordering};

/// Registers in the test tables.
pub(super) const N: usize = 6;

/// Fast periods for threads. The pause bound is what a thread of the test may be descheduled
/// for on two shared cores while the rest of the suite runs (10 ms was broken there: a host
/// expired its self-lease after 183 ms of silence, and joins lost their index).
pub(super) const FAST: Timing = Timing {
    heartbeat_ms: 20,
    confirm_ms: 130,
    lease_ms: 300,
    pause_ms: 50,
};

pub(super) fn table(h: &Host) -> HostTable<'_> {
    HostTable::new(h.words(0, N * 16)).expect("table")
}

fn clock() -> u64 {
    crate::clock::monotonic_ms()
}

/// `k` host names whose probes all start at the same index of a table of `N` (so they collide).
fn colliding_names(k: usize) -> Vec<String> {
    let home = Identity::new("host-0", 0).home_index(N);
    (0..1000)
        .map(|i| format!("host-{i}"))
        .filter(|n| Identity::new(n, 0).home_index(N) == home)
        .take(k)
        .collect()
}

#[test]
fn the_table_refuses_bad_words_and_reads_corrupt_registers_as_errors() {
    let hosts = Hosts::new(64 << 10);
    let a = hosts.host("a", 0);
    assert!(matches!(
        HostTable::new(a.words(0, 15)),
        Err(HostsError::BadTable { .. })
    ));
    assert!(matches!(
        HostTable::new(a.words(1, 16)),
        Err(HostsError::BadTable { .. })
    ));
    let t = table(&a);
    assert_eq!(t.read(&a.coherence, 0).unwrap().state, State::Free);
    assert_eq!(
        t.read(&a.coherence, N),
        Err(HostsError::IndexOutOfRange { index: N, len: N })
    );
    // A stray word in the body: the check word catches it.
    let w = a.words(16 + 3, 1);
    w[0].store(0xdead, Ordering::Relaxed);
    assert_eq!(
        t.read(&a.coherence, 1),
        Err(HostsError::Corrupt { index: 1 })
    );
    // A TAKEN state naming an index outside the table: out of range, not a panic.
    let m = join(t, &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let i = m.index();
    let body = a.words(i * 16 + 1, 7);
    let mut v: Vec<u64> = body.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    v[3] = (v[3] & !0xffff_ffff) | 3 << 16 | 999;
    let rec = super::record::Record::new(&a.words(i * 16, 1)[0], body);
    // Re-encode the check word as a writer would, so only the state is wrong.
    let fields = v[..6].to_vec();
    v[6] = fields.iter().fold(0x6a09_e667_f3bc_c908_u64, |h, &w| {
        mix(h ^ w).rotate_left(17)
    });
    rec.write(&a.coherence, &v).unwrap();
    assert_eq!(
        t.read(&a.coherence, i),
        Err(HostsError::IndexOutOfRange { index: 999, len: N })
    );
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One round: `names.len()` hosts join at once (a barrier), then keep heartbeating until all
/// joined and a confirmation period more (so a late claim meets its owner's re-assertion).
/// Returns each host's index (or its error) and whether it still owns it at the end.
fn join_round(
    hosts_rate: (&[Host], &[String]),
    timing: Timing,
) -> Vec<(Result<usize, HostsError>, bool)> {
    let (hosts, names) = hosts_rate;
    let barrier = Barrier::new(hosts.len());
    let joined = AtomicU64::new(0);
    let out = Mutex::new(vec![
        (Err(HostsError::NoFreeRegister { probes: 0 }), false);
        hosts.len()
    ]);
    std::thread::scope(|s| {
        for (k, (h, name)) in hosts.iter().zip(names).enumerate() {
            let (barrier, joined, out) = (&barrier, &joined, &out);
            s.spawn(move || {
                let t = table(h);
                barrier.wait();
                let r = join(
                    t,
                    &h.coherence,
                    Identity::new(name, k as u64),
                    timing,
                    &clock,
                );
                joined.fetch_add(1, Ordering::Relaxed);
                let Ok(mut m) = r else {
                    out.lock().unwrap()[k] = (r.map(|m| m.index()), false);
                    return;
                };
                let deadline = Instant::now() + Duration::from_secs(5);
                while joined.load(Ordering::Relaxed) < hosts.len() as u64
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(timing.heartbeat_ms));
                    let _ = m.beat(clock());
                }
                let end = Instant::now() + Duration::from_millis(timing.confirm_ms);
                let mut owns = true;
                while Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(timing.heartbeat_ms));
                    owns &= m.beat(clock()).is_ok();
                }
                out.lock().unwrap()[k] = (Ok(m.index()), owns);
            });
        }
    });
    out.into_inner().unwrap()
}

/// Indices claimed by more than one host (among those that joined).
fn duplicates(r: &[(Result<usize, HostsError>, bool)]) -> Vec<usize> {
    let mut seen = std::collections::HashMap::new();
    for (i, _) in r
        .iter()
        .filter_map(|(i, o)| i.as_ref().ok().map(|i| (*i, o)))
    {
        *seen.entry(i).or_insert(0) += 1;
    }
    seen.into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(i, _)| i)
        .collect()
}

fn concurrent_joins(rate: u64) {
    let names = colliding_names(4);
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut rounds = 0;
    while rounds < 3 || Instant::now() < deadline {
        let hosts = Hosts::new(64 << 10);
        let hs: Vec<Host> = names
            .iter()
            .map(|n| hosts.host_seeded(n, rate, rounds))
            .collect();
        let r = join_round((&hs, &names), FAST);
        for (k, (i, owns)) in r.iter().enumerate() {
            assert!(i.is_ok(), "round {rounds}: host {k} did not join: {i:?}");
            assert!(
                owns,
                "round {rounds}: host {k} lost its index {i:?} after joining"
            );
        }
        assert_eq!(duplicates(&r), Vec::<usize>::new(), "round {rounds}: {r:?}");
        // The device holds each owner's LIVE record.
        let t = table(&hs[0]);
        let live = (0..N)
            .filter(|&i| t.read(&hs[0].coherence, i).map(|s| s.state) == Ok(State::Live))
            .count();
        assert_eq!(live, 4, "round {rounds}");
        rounds += 1;
    }
    println!("{rounds} rounds of 4 colliding joins at rate {rate}");
}

/// Four hosts whose probes start at the same register join at once, repeatedly: every host
/// joins, all indices differ, and each still owns its index a confirmation period later. (With
/// the confirmation watch removed from `claim`, the variant under spontaneous events fails —
/// hosts lose the index they believed they owned; without events the threads' claims are too
/// far apart for the tiny probe-to-claim window to collide.)
#[test]
fn four_hosts_joining_at_once_get_distinct_indices() {
    concurrent_joins(0);
}

#[test]
fn four_hosts_joining_at_once_get_distinct_indices_under_spontaneous_events() {
    concurrent_joins(200_000);
}

/// Negative control: with evictions skipped every host reads its own cache, so each sees only
/// its own nonce on the home register: several "own" one index — caught.
#[test]
fn skipped_evicts_make_two_hosts_own_one_index() {
    let names = colliding_names(4);
    let hosts = Hosts::new(64 << 10);
    let hs: Vec<Host> = names.iter().map(|n| hosts.host(n, 0)).collect();
    for h in &hs {
        h.region.emulated_host().unwrap().set_skip_invalidate(true);
    }
    let r = join_round((&hs, &names), FAST);
    assert!(
        !duplicates(&r).is_empty(),
        "caught: without evictions hosts must collide unseen: {r:?}"
    );
}

/// Negative control: with write-backs skipped a host's writes reach memory only when it next
/// evicts that line itself (an evict writes a dirty line back first, as `clflushopt` does). A
/// heartbeat is then invisible to other hosts until the writer's next fence check — caught.
/// The join and the lease still hold because every write path re-reads its own register (so a
/// write lands at most one step late, inside the margins); the test shows that too.
#[test]
fn skipped_write_backs_delay_every_write_to_the_writers_next_read() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let (ta, tb) = (table(&a), table(&b));
    let mut m = join(ta, &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let i = m.index();
    a.region.emulated_host().unwrap().set_skip_write_back(true);
    let hb = m.beat(clock()).unwrap();
    assert_eq!(
        tb.read(&b.coherence, i).unwrap().heartbeat,
        hb - 1,
        "caught: the beat did not reach memory"
    );
    m.check_fenced(clock()).unwrap();
    assert_eq!(tb.read(&b.coherence, i).unwrap().heartbeat, hb);
    // Joins under skipped write-backs still give distinct indices.
    let names = colliding_names(4);
    let hosts = Hosts::new(64 << 10);
    let hs: Vec<Host> = names.iter().map(|n| hosts.host(n, 0)).collect();
    for h in &hs {
        h.region.emulated_host().unwrap().set_skip_write_back(true);
    }
    let r = join_round((&hs, &names), FAST);
    assert_eq!(duplicates(&r), Vec::<usize>::new(), "{r:?}");
}

/// Liveness: host a heartbeats, observers b and c (each on its own clock, c's a trillion ms
/// ahead; a's clock too is far from both) never judge it dead while it beats; after it stops,
/// neither judges it dead before a lease of its own clock has passed, and both do after.
#[test]
fn a_silent_host_is_dead_after_a_lease_on_every_observers_clock_and_not_before() {
    let hosts = Hosts::new(64 << 10);
    let (a, b, c) = (
        hosts.host("a", 5_000),
        hosts.host("b", 5_000),
        hosts.host("c", 5_000),
    );
    let a_clock = || clock() + 5_000_000;
    let b_clock = clock;
    let c_clock = || clock() + 1_000_000_000_000;
    let mut m = join(
        table(&a),
        &a.coherence,
        Identity::new("a", 1),
        FAST,
        &a_clock,
    )
    .unwrap();
    let i = m.index();
    let (mut ob, mut oc) = (Observer::new(N), Observer::new(N));
    let lease = FAST.lease_ms;
    let beat_until = Instant::now() + Duration::from_millis(3 * lease);
    let mut last_beat = Instant::now();
    while Instant::now() < beat_until {
        last_beat = Instant::now();
        m.beat(a_clock()).unwrap();
        for (o, h, now) in [(&mut ob, &b, b_clock()), (&mut oc, &c, c_clock())] {
            o.poll(&table(h), &h.coherence, now).unwrap();
            assert!(!o.is_dead(i, now, lease), "judged dead while beating");
        }
        std::thread::sleep(Duration::from_millis(FAST.heartbeat_ms));
    }
    // The observers saw the last beat after `last_beat`: neither may judge before a lease.
    let stopped = last_beat;
    loop {
        let elapsed = stopped.elapsed().as_millis() as u64;
        let mut dead = 0;
        for (o, h, now) in [(&mut ob, &b, b_clock()), (&mut oc, &c, c_clock())] {
            o.poll(&table(h), &h.coherence, now).unwrap();
            if o.is_dead(i, now, lease) {
                assert!(
                    elapsed + 1 >= lease,
                    "judged dead {elapsed} ms after the last beat"
                );
                dead += 1;
            }
        }
        if dead == 2 {
            assert!(
                elapsed < lease + 5 * FAST.heartbeat_ms,
                "dead only after {elapsed} ms"
            );
            break;
        }
        assert!(elapsed < 10 * lease, "never judged dead");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The fence: a host whose register was taken over gets `Fenced` at its next write path and
/// joins again under another index; the taker re-asserts over its late write.
#[test]
fn a_taken_over_host_is_fenced_before_writing_and_rejoins_elsewhere() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let mut ma = join(table(&a), &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let mut mb = join(table(&b), &b.coherence, Identity::new("b", 1), FAST, &clock).unwrap();
    let taken = mb.take_over(ma.index(), clock()).unwrap();
    assert_eq!(taken.state, State::TakenBy(mb.index()));
    assert_eq!(taken.epoch, ma.mine().epoch + 1);
    let hb_before = table(&b).read(&b.coherence, ma.index()).unwrap().heartbeat;
    assert_eq!(
        ma.beat(clock()),
        Err(HostsError::Fenced {
            index: ma.index(),
            why: Fence::TakenBy(mb.index())
        })
    );
    assert_eq!(
        table(&b).read(&b.coherence, ma.index()).unwrap().heartbeat,
        hb_before,
        "the fenced host wrote nothing"
    );
    let again = join(table(&a), &a.coherence, Identity::new("a", 2), FAST, &clock).unwrap();
    assert_ne!(again.index(), ma.index());
    assert_ne!(again.index(), mb.index());
}

/// A host state for the lease test: its thread's controls and what it saw.
struct Ctl {
    stop: AtomicBool,
    pause_ms: AtomicU64,
}

/// Runs host `h` as index-holder and lease participant until `ctl.stop`: beat, poll, and when
/// leading, act (under the guard) and take over dead registers. Every action takes a test-local
/// token that must be free: two leaders acting at once fail the test.
fn run_host<'a>(
    h: &'a Host,
    name: &str,
    ctl: &Ctl,
    acting: &AtomicU64,
    log: &Mutex<Vec<(Instant, usize, u64)>>,
    fenced: &Mutex<Vec<(usize, HostsError)>>,
) {
    let mut m: Membership<'a> =
        join(table(h), &h.coherence, Identity::new(name, 1), FAST, &clock).unwrap();
    let mut lease = Lease::new(true);
    let mut obs = Observer::new(N);
    let me = m.index();
    let mut last_term = None;
    while !ctl.stop.load(Ordering::Relaxed) {
        let p = ctl.pause_ms.swap(0, Ordering::Relaxed);
        if p > 0 {
            std::thread::sleep(Duration::from_millis(p));
            // Back from a pause: the very next write path is the fence check.
            if let Err(e) = lease.guard(&mut m, clock()) {
                fenced.lock().unwrap().push((me, e_hosts(e)));
            }
            if let Err(e) = m.beat(clock()) {
                fenced.lock().unwrap().push((me, e));
                return;
            }
        }
        let now = clock();
        if lease.beat(&mut m, now).is_err() {
            return;
        }
        let Ok((ev, seen)) = lease.poll(&mut m, &mut obs, clock()) else {
            return;
        };
        if let LeaseEvent::Acquired { term } = ev {
            log.lock().unwrap().push((Instant::now(), me, term));
            last_term = Some(term);
        }
        if matches!(ev, LeaseEvent::Acquired { .. } | LeaseEvent::Leading { .. }) {
            if let Ok(term) = lease.guard(&mut m, clock()) {
                assert_eq!(Some(term), last_term);
                let token = (me as u64 + 1) << 32 | term;
                let prev = acting.swap(token, Ordering::Relaxed);
                assert_eq!(prev, 0, "host {me} term {term} acts while {prev:#x} acts");
                for (j, o) in seen.iter().enumerate() {
                    let live = matches!(o.state, Ok(s) if s.state == State::Live);
                    if j != me && live && obs.is_dead(j, clock(), FAST.lease_ms) {
                        let _ = m.take_over(j, clock());
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
                acting.store(0, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(FAST.heartbeat_ms / 2));
    }
}

fn e_hosts(e: super::lease::LeaseError) -> HostsError {
    match e {
        super::lease::LeaseError::Hosts(h) => h,
        super::lease::LeaseError::NotLeader => HostsError::BadTiming("not leader"),
    }
}

/// Four hosts run the lease: one leader emerges; it stops (dies) and another acquires within
/// `L + 2H` (plus scheduling slack) and takes its register over; that one pauses past its lease
/// and a third acquires; the paused one, resuming, finds itself fenced before it writes. Never
/// two leaders acting at once. (Seen to fail — two hosts acting — with rule 3 of `decide`
/// removed.)
#[test]
fn four_hosts_elect_one_leader_at_a_time_and_a_deposed_one_is_fenced() {
    let hosts = Hosts::new(64 << 10);
    let names = ["h0", "h1", "h2", "h3"];
    let hs: Vec<Host> = names.iter().map(|n| hosts.host(n, 20_000)).collect();
    let ctls: Vec<Ctl> = (0..4)
        .map(|_| Ctl {
            stop: AtomicBool::new(false),
            pause_ms: AtomicU64::new(0),
        })
        .collect();
    let acting = AtomicU64::new(0);
    let log = Mutex::new(Vec::new());
    let fenced = Mutex::new(Vec::new());
    let bound = Duration::from_millis(FAST.lease_ms + 2 * FAST.heartbeat_ms + 150);
    std::thread::scope(|s| {
        let idx: Vec<_> = hs
            .iter()
            .zip(names)
            .zip(&ctls)
            .map(|((h, n), c)| {
                let (acting, log, fenced) = (&acting, &log, &fenced);
                s.spawn(move || run_host(h, n, c, acting, log, fenced))
            })
            .collect();
        let stop_all = || {
            ctls.iter()
                .for_each(|c| c.stop.store(true, Ordering::Relaxed))
        };
        struct Guard<F: Fn()>(F);
        impl<F: Fn()> Drop for Guard<F> {
            fn drop(&mut self) {
                (self.0)()
            }
        }
        let _g = Guard(stop_all);
        let leader_after = |n: usize, since: Instant| -> (Instant, usize, u64) {
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                if let Some(&e) = log.lock().unwrap().get(n) {
                    return e;
                }
                assert!(
                    Instant::now() < deadline,
                    "no leader #{n} since {:?}",
                    since.elapsed()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        let t0 = Instant::now();
        let (_, first, term1) = leader_after(0, t0);
        // Which thread is it? Registers say: find the host whose index is `first`.
        let who = |index: usize| {
            (0..4)
                .find(|&k| {
                    let t = table(&hs[0]);
                    t.read(&hs[0].coherence, index)
                        .is_ok_and(|s| s.identity == Identity::new(names[k], 1))
                })
                .expect("a host at the leader's index")
        };
        let k1 = who(first);
        std::thread::sleep(Duration::from_millis(50));
        let killed = Instant::now();
        ctls[k1].stop.store(true, Ordering::Relaxed);
        let (at, second, term2) = leader_after(1, killed);
        assert_ne!(second, first);
        assert!(term2 > term1);
        assert!(at - killed <= bound, "took {:?} > {bound:?}", at - killed);
        // The new leader takes the dead register over.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let s = table(&hs[0]).read(&hs[0].coherence, first);
            if matches!(s, Ok(s) if s.state == State::TakenBy(second)) {
                break;
            }
            assert!(Instant::now() < deadline, "never taken over: {s:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The second leader pauses past its lease: a third leads, and takes it over.
        let k2 = who(second);
        let paused = Instant::now();
        ctls[k2]
            .pause_ms
            .store(4 * FAST.lease_ms, Ordering::Relaxed);
        let (at3, third, term3) = leader_after(2, paused);
        assert!(third != second && third != first && term3 > term2);
        assert!(at3 - paused <= bound + Duration::from_millis(FAST.heartbeat_ms));
        let deadline = Instant::now() + Duration::from_secs(3);
        while fenced.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the paused leader never resumed");
            std::thread::sleep(Duration::from_millis(5));
        }
        let f = fenced.lock().unwrap().clone();
        assert!(
            f.iter().all(|(i, _)| *i == second),
            "only the paused leader is fenced: {f:?}"
        );
        // Its own write path refuses first: silent for longer than its self-lease, it writes
        // nothing even before it reads its register (which the new leader takes over).
        assert!(
            f.iter().any(|(_, e)| matches!(
                e,
                HostsError::Fenced {
                    why: Fence::Expired { .. },
                    ..
                }
            )),
            "the paused leader's beat is refused by its self-lease: {f:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let s = table(&hs[0]).read(&hs[0].coherence, second);
            if matches!(s, Ok(s) if s.state == State::TakenBy(third)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the paused leader's register was never taken over: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(_g);
        for j in idx {
            j.join().expect("host thread");
        }
    });
}

/// `decide`, exhaustively over a small domain: it leads exactly when the rules say so, follows
/// the lowest live lower ballot, and its term is the held one or one past the highest.
#[test]
fn the_lease_decision_follows_its_rules_exhaustively() {
    let (lease, self_lease) = (4u64, 3u64);
    let times: Vec<u64> = (0..=9).collect();
    let opt_times: Vec<Option<u64>> = std::iter::once(None)
        .chain(times.iter().map(|&t| Some(t)))
        .collect();
    let mut lowers: Vec<Vec<LowerBallot>> = vec![vec![]];
    for &c0 in &times {
        lowers.push(vec![LowerBallot {
            index: 1,
            last_change: c0,
        }]);
        for &c1 in &times {
            lowers.push(vec![
                LowerBallot {
                    index: 2,
                    last_change: c0,
                },
                LowerBallot {
                    index: 0,
                    last_change: c1,
                },
            ]);
        }
    }
    let mut n = 0u64;
    for &now in &times {
        for &landed in &opt_times {
            for &since in &opt_times {
                for lower in &lowers {
                    for leading in [None, Some(5)] {
                        for max_term in [0, 7] {
                            let i = Inputs {
                                now,
                                lease_ms: lease,
                                self_lease_ms: self_lease,
                                last_landed: landed,
                                ballot_since: since,
                                lower,
                                leading,
                                max_term,
                            };
                            let d = decide(&i);
                            n += 1;
                            let fresh = landed.is_some_and(|l| now.saturating_sub(l) <= self_lease);
                            let live: Vec<usize> = lower
                                .iter()
                                .filter(|b| now.saturating_sub(b.last_change) < lease)
                                .map(|b| b.index)
                                .collect();
                            let run_ok = since.is_some_and(|s| now.saturating_sub(s) >= lease);
                            let may = since.is_some() && fresh && live.is_empty() && run_ok;
                            match d {
                                Decision::Lead { term } => {
                                    assert!(may, "{i:?}");
                                    assert_eq!(term, leading.unwrap_or(max_term + 1), "{i:?}");
                                }
                                Decision::Follow { leader } => {
                                    assert_eq!(Some(leader), live.iter().copied().min(), "{i:?}")
                                }
                                _ => assert!(!may, "{i:?} -> {d:?}"),
                            }
                        }
                    }
                }
            }
        }
    }
    println!("{n} inputs");
}

/// A collision during the watch, made deterministic: while host a watches its claim, host b
/// writes its own claim over it (as a host that probed at the same moment would). a must lose
/// that index and own another. (Seen to fail with the confirmation watch removed from `claim`:
/// a's JOINING record never shows long enough for b to collide, or a keeps the index.)
#[test]
fn a_claim_overwritten_during_its_watch_loses_the_index() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let (ta, tb) = (table(&a), table(&b));
    let home = Identity::new("a", 1).home_index(N);
    std::thread::scope(|s| {
        let joiner = s.spawn(|| join(ta, &a.coherence, Identity::new("a", 1), FAST, &clock));
        let deadline = Instant::now() + Duration::from_secs(2);
        let seen = loop {
            if let Ok(r) = tb.read(&b.coherence, home) {
                if r.state == State::Joining {
                    break r;
                }
            }
            assert!(
                Instant::now() < deadline,
                "a's claim never showed as JOINING"
            );
            std::thread::yield_now();
        };
        let foreign = super::hosts::RegisterState {
            identity: Identity::new("b", 1),
            nonce: seen.nonce ^ 0x5555,
            ..seen
        };
        tb.write(&b.coherence, home, &foreign).unwrap();
        let m = joiner.join().unwrap().unwrap();
        assert_ne!(
            m.index(),
            home,
            "a kept an index b claimed during its watch"
        );
        assert_eq!(tb.read(&b.coherence, home).unwrap().nonce, foreign.nonce);
    });
}

/// A claimer that breaks the pause bound (probed FREE long ago, claims over a LIVE owner): the
/// owner's next fence check finds the foreign JOINING nonce and re-asserts inside the claimer's
/// watch, so the claimer sees the owner's nonce and the owner keeps its index. (Seen to fail
/// with the re-assertion removed from `check_fenced`: the owner is fenced instead.)
#[test]
fn an_owner_reasserts_over_a_late_claim_inside_the_claimers_watch() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let (ta, tb) = (table(&a), table(&b));
    let mut m = join(ta, &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let i = m.index();
    let late = super::hosts::RegisterState {
        identity: Identity::new("b", 1),
        nonce: 0xb0b,
        epoch: 1,
        state: State::Joining,
        heartbeat: 0,
        ballot: 0,
    };
    m.beat(clock()).unwrap();
    tb.write(&b.coherence, i, &late).unwrap();
    let watch_end = Instant::now() + Duration::from_millis(FAST.confirm_ms);
    let mut b_saw_owner = false;
    while Instant::now() < watch_end {
        std::thread::sleep(Duration::from_millis(FAST.heartbeat_ms / 2));
        m.beat(clock()).unwrap();
        b_saw_owner |= tb.read(&b.coherence, i).unwrap().nonce == m.mine().nonce;
    }
    assert!(
        b_saw_owner,
        "the late claimer never saw the owner inside its watch"
    );
    assert_eq!(tb.read(&b.coherence, i).unwrap().state, State::Live);
    // Past `C − P` of silence, the owner gives the index up instead of re-asserting.
    tb.write(&b.coherence, i, &late).unwrap();
    std::thread::sleep(Duration::from_millis(FAST.reassert_ms() + 5));
    assert!(matches!(
        m.beat(clock()),
        Err(HostsError::Fenced {
            why: Fence::Replaced { nonce: 0xb0b, .. },
            ..
        })
    ));
}

/// A new boot of a host whose previous boot stopped heartbeating claims the previous boot's
/// register once its lease expired (not a FREE one, not before); the old boot, resuming, is
/// fenced. A taker frees a register it took over (and only such a one).
#[test]
fn a_new_boot_takes_its_previous_boots_register_after_the_lease() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let mut old = join(table(&a), &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let stopped = Instant::now();
    let new = join(table(&b), &b.coherence, Identity::new("a", 2), FAST, &clock).unwrap();
    assert!(stopped.elapsed() >= Duration::from_millis(FAST.lease_ms));
    assert_eq!(new.index(), old.index());
    assert_eq!(new.mine().epoch, old.mine().epoch + 1);
    // Silent for a lease: refused by its self-lease before it reads; and the register is the
    // new boot's (a fence check within the self-lease would say so).
    assert!(matches!(
        old.beat(clock()),
        Err(HostsError::Fenced {
            why: Fence::Expired { .. },
            ..
        })
    ));
    assert_eq!(
        table(&a).read(&a.coherence, old.index()).unwrap().identity,
        Identity::new("a", 2)
    );
    // Take-over and free: c takes the new boot's register over and frees it.
    let c = hosts.host("c", 0);
    let mut mc = join(table(&c), &c.coherence, Identity::new("c", 1), FAST, &clock).unwrap();
    assert_eq!(
        mc.free_taken(new.index(), clock()),
        Err(HostsError::NotOurs { index: new.index() })
    );
    mc.take_over(new.index(), clock()).unwrap();
    mc.free_taken(new.index(), clock()).unwrap();
    assert_eq!(
        table(&c).read(&c.coherence, new.index()).unwrap().state,
        State::Free
    );
}

/// Whatever words a register holds (a bit flip, a stray writer, another version), reading it,
/// observing it, judging it and joining over it never panic: a state or a typed error.
#[test]
fn arbitrary_register_words_read_as_a_state_or_a_typed_error() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let hosts = Hosts::new(64 << 10);
    let a = hosts.host("a", 0);
    let t = table(&a);
    let mut runner = TestRunner::new(Config::with_cases(256));
    let words = proptest::collection::vec(
        prop_oneof![
            any::<u64>(),
            0..4u64,
            Just(0u64),
            (0..4u64).prop_map(|k| k << 16)
        ],
        8,
    );
    runner
        .run(&(words, 0..N), |(w, i)| {
            let reg = a.words(i * 16, 8);
            for (x, v) in reg.iter().zip(&w) {
                x.store(*v, Ordering::Relaxed);
            }
            super::lines::write_back(&a.coherence, reg);
            let r = t.read(&a.coherence, i);
            let o = t.observe(&a.coherence, i).unwrap();
            prop_assert_eq!(o.state, r);
            let mut obs = Observer::new(N);
            obs.poll(&t, &a.coherence, 0).unwrap();
            prop_assert!(!obs.is_dead(i, 0, 1));
            prop_assert!(obs.is_dead(i, 1, 1));
            Ok(())
        })
        .unwrap();
    // And a join over a table of such registers ends (joins or NoFreeRegister).
    for i in 0..N {
        let reg = a.words(i * 16, 8);
        for (k, x) in reg.iter().enumerate() {
            x.store(
                0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(k as u64 + 1 + i as u64),
                Ordering::Relaxed,
            );
        }
        super::lines::write_back(&a.coherence, reg);
    }
    let quick = Timing {
        heartbeat_ms: 2,
        confirm_ms: 10,
        lease_ms: 20,
        pause_ms: 2,
    };
    assert!(matches!(
        join(t, &a.coherence, Identity::new("a", 1), quick, &clock),
        Err(HostsError::NoFreeRegister { .. })
    ));
}

/// Review of the v2 blocks, H1 (scenario A): a host stopped between two beats for longer than
/// its self-lease — every observer may have judged it dead, and a taker may be recovering its
/// partition — writes nothing more, though its register still reads as its own. (Before, its
/// beat passed the fence check and wrote.)
#[test]
fn a_host_silent_past_its_self_lease_writes_nothing() {
    let hosts = Hosts::new(64 << 10);
    let a = hosts.host("a", 0);
    let mut ma = join(table(&a), &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let before = table(&a).read(&a.coherence, ma.index()).unwrap();
    let late = ma.last_landed() + FAST.self_lease_ms() + 1;
    assert!(matches!(
        ma.beat(late),
        Err(HostsError::Fenced {
            why: Fence::Expired { .. },
            ..
        })
    ));
    assert_eq!(
        table(&a).read(&a.coherence, ma.index()).unwrap(),
        before,
        "a silent host wrote its register"
    );
    // Within the self-lease it beats.
    let mut mb = join(table(&a), &a.coherence, Identity::new("b", 1), FAST, &clock).unwrap();
    assert!(mb.beat(mb.last_landed() + FAST.self_lease_ms()).is_ok());
}

/// Review of the v2 blocks, H1 (scenario B): a deposed owner's late write (an older epoch) lands
/// over the register of the index's new owner: the new owner's next fence check takes it back
/// (before, it gave its index up as `Replaced`, and the late writer kept it).
#[test]
fn a_late_write_of_an_earlier_owner_is_overwritten_not_obeyed() {
    let hosts = Hosts::new(64 << 10);
    let (a, b, c) = (hosts.host("a", 0), hosts.host("b", 0), hosts.host("c", 0));
    let names = colliding_names(2);
    let mut ma = join(
        table(&a),
        &a.coherence,
        Identity::new(&names[0], 1),
        FAST,
        &clock,
    )
    .unwrap();
    let mut mb = join(table(&b), &b.coherence, Identity::new("b", 1), FAST, &clock).unwrap();
    let i = ma.index();
    let late = *ma.mine();
    ma.beat(clock()).unwrap();
    // b judged a dead, took its register over and freed it; c (same home index) joins there.
    mb.take_over(i, clock()).unwrap();
    mb.free_taken(i, clock()).unwrap();
    let mut mc = join(
        table(&c),
        &c.coherence,
        Identity::new(&names[1], 1),
        FAST,
        &clock,
    )
    .unwrap();
    assert_eq!(
        mc.index(),
        i,
        "c did not get the freed index: the test tests nothing"
    );
    assert!(mc.mine().epoch > late.epoch);
    // a's write, decided before its deposition, lands now.
    table(&a).write(&a.coherence, i, &late).unwrap();
    assert_eq!(mc.beat(clock()).map(|_| ()), Ok(()));
    let now = table(&c).read(&c.coherence, i).unwrap();
    assert_eq!(
        (now.identity, now.nonce),
        (mc.mine().identity, mc.mine().nonce)
    );
    // And a, resuming at once (within its self-lease), finds the index is not its own.
    assert!(matches!(
        ma.check_fenced(ma.last_landed()),
        Err(HostsError::Fenced { .. })
    ));
}

/// Review of the v2 blocks, H2: a new boot watching its previous boot's register never claims it
/// once the leader has taken it over during the watch (TAKEN is its taker's). Before, the watch
/// checked the name and the time but not the state, and claimed over TAKEN: two writers of the
/// register and its partition, and the taker's `free_taken` failed.
#[test]
fn a_new_boot_never_claims_its_previous_register_once_taken_over() {
    const SLOW: Timing = Timing {
        heartbeat_ms: 50,
        confirm_ms: 200,
        lease_ms: 500,
        pause_ms: 20,
    };
    let hosts = Hosts::new(64 << 10);
    let (a, b, c) = (hosts.host("a", 0), hosts.host("b", 0), hosts.host("c", 0));
    let old = join(table(&a), &a.coherence, Identity::new("a", 1), SLOW, &clock).unwrap();
    let mut mc = join(table(&c), &c.coherence, Identity::new("c", 1), SLOW, &clock).unwrap();
    let new = std::thread::scope(|s| {
        let j = s.spawn(|| join(table(&b), &b.coherence, Identity::new("a", 2), SLOW, &clock));
        // The new boot has found the old register LIVE and watches it; the leader's takeover
        // lands during the watch.
        // (Early in it: the watch ends a lease and two beats after it began, so a TAKEN that
        // lands later than two beats in is not seen unchanged for a lease before the end.)
        std::thread::sleep(Duration::from_millis(20));
        mc.take_over(old.index(), clock()).unwrap();
        j.join().unwrap().unwrap()
    });
    assert_ne!(
        new.index(),
        old.index(),
        "the new boot claimed a TAKEN register"
    );
    assert_eq!(mc.free_taken(old.index(), clock()), Ok(()));
}

/// Review of the v2 blocks, M1: a register whose writer died mid-write (the seq odd for ever) or
/// whose body is torn can still be taken over — else the dead host's index and partition could
/// never be recovered — and its owner, if it comes back, is fenced. (Before, `take_over` failed
/// with the read's `Busy` / `Corrupt` error, every time.)
#[test]
fn a_register_left_mid_write_or_torn_can_be_taken_over() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let mut ma = join(table(&a), &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let mut mb = join(table(&b), &b.coherence, Identity::new("b", 1), FAST, &clock).unwrap();
    let i = ma.index();
    // a's write dies after its odd seq reached memory.
    let seq = &a.words(i * 16, 1)[0];
    seq.store(seq.load(Ordering::Relaxed) | 1, Ordering::Relaxed);
    write_back(&a.coherence, std::slice::from_ref(seq));
    assert!(matches!(
        table(&b).read(&b.coherence, i),
        Err(HostsError::Record { .. })
    ));
    let taken = mb.take_over(i, clock()).unwrap();
    assert_eq!(taken.state, State::TakenBy(mb.index()));
    assert!(taken.epoch > ma.mine().epoch);
    assert_eq!(table(&b).read(&b.coherence, i).unwrap(), taken);
    assert!(matches!(
        ma.check_fenced(ma.last_landed()),
        Err(HostsError::Fenced {
            why: Fence::TakenBy(_),
            ..
        })
    ));
    mb.free_taken(i, clock()).unwrap();
    // A torn body (a word that fails the check).
    let c = hosts.host("c", 0);
    let mc = join(table(&c), &c.coherence, Identity::new("c", 1), FAST, &clock).unwrap();
    let body = c.words(mc.index() * 16 + 2, 1);
    body[0].store(0xbad, Ordering::Relaxed);
    write_back(&c.coherence, body);
    assert_eq!(
        table(&b).read(&b.coherence, mc.index()),
        Err(HostsError::Corrupt { index: mc.index() })
    );
    let taken = mb.take_over(mc.index(), clock()).unwrap();
    assert_eq!(taken.state, State::TakenBy(mb.index()));
    mb.free_taken(mc.index(), clock()).unwrap();
}

/// Review of the v2 blocks, L3: a register showing the highest term (corrupt or hostile) makes
/// `decide` refuse to lead rather than wrap the new term to 0 (below the terms a deposed leader's
/// writes carry).
#[test]
fn the_lease_never_wraps_its_term() {
    let i = Inputs {
        now: 10_000,
        lease_ms: 100,
        self_lease_ms: 90,
        ballot_since: Some(0),
        last_landed: Some(9_990),
        lower: &[],
        leading: None,
        max_term: super::lease::TERM_MASK,
    };
    assert_eq!(decide(&i), Decision::TermsExhausted);
    assert_eq!(
        decide(&Inputs {
            max_term: super::lease::TERM_MASK - 1,
            ..i
        }),
        Decision::Lead {
            term: super::lease::TERM_MASK
        }
    );
}

/// Review of the v2 blocks, H1 (fix 3): the deposed owner's write, decided before the takeover
/// landed, lands after it (LIVE at the old epoch over TAKEN): the taker's next beat writes TAKEN
/// again, and the deposed owner's next fence check fails. (Before, the re-take was left to the
/// caller's loop, which none did: the deposed owner's check found its own record and passed.)
#[test]
fn a_taker_writes_taken_again_over_the_deposed_owners_late_write() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ma = join(table(&a), &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let mut mb = join(table(&b), &b.coherence, Identity::new("b", 1), FAST, &clock).unwrap();
    let i = ma.index();
    let mut ma = ma;
    let taken = mb.take_over(i, clock()).unwrap();
    assert_eq!(mb.taken().collect::<Vec<_>>(), [i]);
    // a's beat, decided before the takeover landed, lands now.
    table(&a).write(&a.coherence, i, ma.mine()).unwrap();
    mb.beat(clock()).unwrap();
    assert_eq!(table(&a).read(&a.coherence, i).unwrap(), taken);
    assert!(matches!(
        ma.check_fenced(ma.last_landed()),
        Err(HostsError::Fenced {
            why: Fence::TakenBy(_),
            ..
        })
    ));
    mb.free_taken(i, clock()).unwrap();
    assert_eq!(mb.taken().count(), 0);
}

/// Review of the v2 blocks, H2 (second part): a joiner that read a dead register just before the
/// leader's takeover landed writes its claim (JOINING, the same epoch as the TAKEN record: both
/// wrote the epoch they read plus one) over the TAKEN record; the taker's next beat writes TAKEN
/// again, inside the joiner's watch, so the joiner loses. (Before, the taker's re-take ignored a
/// record of its own epoch and forgot the register: two writers.)
#[test]
fn a_claim_racing_a_takeover_loses_to_the_takers_next_beat() {
    let hosts = Hosts::new(64 << 10);
    let (a, b) = (hosts.host("a", 0), hosts.host("b", 0));
    let ma = join(table(&a), &a.coherence, Identity::new("a", 1), FAST, &clock).unwrap();
    let mut mb = join(table(&b), &b.coherence, Identity::new("b", 1), FAST, &clock).unwrap();
    let i = ma.index();
    let before = *ma.mine();
    let taken = mb.take_over(i, clock()).unwrap();
    // The joiner's claim, decided on the LIVE record it read before the takeover landed.
    let claim = RegisterState {
        identity: Identity::new("c", 1),
        nonce: 0x5eed,
        epoch: before.epoch.wrapping_add(1),
        state: State::Joining,
        heartbeat: 0,
        ballot: 0,
    };
    assert_eq!(claim.epoch, taken.epoch);
    table(&a).write(&a.coherence, i, &claim).unwrap();
    mb.beat(clock()).unwrap();
    assert_eq!(table(&a).read(&a.coherence, i).unwrap(), taken);
    assert_eq!(
        mb.taken().collect::<Vec<_>>(),
        [i],
        "the taker forgot the register"
    );
}
