//! A discrete-time model of the lease with the real [`decide`]: four hosts over an abstract
//! memory of registers, writes landing up to `P` after they are decided, leader actions lasting
//! up to `P`, random pauses (up to three leases) between any two steps, hosts dying, and clocks
//! with different offsets. Safety: no two hosts' actions overlap. The model's guard follows
//! `Lease::guard` (decision age `L − 2P`, self-lease `S`); with a guard that only remembers it
//! leads, the model must find an overlap (its own negative control: a leader paused between its
//! poll and its action acts on a stale decision). Removing only one of the two checks is not
//! caught here: either bounds the action's lateness (the decision age within `P` of what the
//! argument needs, which random pauses rarely hit). Seen to fail with rule 4 of `decide` (the
//! run must be a lease old) removed, and with the run rule (a gap longer than `S` starts a new
//! run) removed from the model's beat. The model re-types `Lease`'s run bookkeeping and guard
//! (a few lines each); the decision is the production function.

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::lease::{decide, Decision, Inputs, LowerBallot};

const K: usize = 4;
const H: u64 = 10;
const P: u64 = 3;
const L: u64 = 30;
const S: u64 = L - P;
const AGE: u64 = L - 2 * P;
const T: u64 = 3000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Beat,
    Poll,
    Guard,
}

struct ModelHost {
    off: u64,
    next_at: u64,
    step: Step,
    dies_at: u64,
    run_last: Option<u64>,
    ballot_since: Option<u64>,
    term: Option<u64>,
    decided_at: u64,
    seen: [Option<(u64, u64)>; K],
    ver: u64,
}

/// Runs one schedule; returns the first overlap of two hosts' actions, if any.
fn run(seed: u64, full_guard: bool) -> Option<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut mem_ver = [0u64; K];
    let mut mem_term = [0u64; K];
    let mut pending: Vec<(u64, usize, u64, u64)> = Vec::new();
    let mut hosts: Vec<ModelHost> = (0..K)
        .map(|_| ModelHost {
            off: rng.gen_range(0..1_000_000),
            next_at: rng.gen_range(0..H),
            step: Step::Beat,
            dies_at: if rng.gen_bool(0.5) {
                rng.gen_range(0..T)
            } else {
                u64::MAX
            },
            run_last: None,
            ballot_since: None,
            term: None,
            decided_at: 0,
            seen: [None; K],
            ver: 0,
        })
        .collect();
    let mut acts: Vec<(usize, u64, u64, u64)> = Vec::new();
    for t in 0..T {
        pending.retain(|&(at, j, ver, term)| {
            if at <= t {
                if ver > mem_ver[j] {
                    mem_ver[j] = ver;
                    mem_term[j] = term;
                }
                false
            } else {
                true
            }
        });
        for (me, h) in hosts.iter_mut().enumerate() {
            if h.next_at != t || t >= h.dies_at {
                continue;
            }
            let c = t + h.off;
            let beat = |h: &mut ModelHost, pending: &mut Vec<_>, rng: &mut SmallRng| {
                let gap_ok = h.run_last.is_some_and(|p| c - p <= S);
                if !gap_ok || h.ballot_since.is_none() {
                    h.ballot_since = Some(c);
                }
                h.run_last = Some(c);
                h.ver += 1;
                let term = h.term.unwrap_or(0);
                pending.push((t + rng.gen_range(0..=P), me, h.ver, term));
            };
            let next = match h.step {
                Step::Beat => {
                    beat(h, &mut pending, &mut rng);
                    Step::Poll
                }
                Step::Poll => {
                    let mut lower = Vec::new();
                    for (k, &v) in mem_ver.iter().enumerate() {
                        match h.seen[k] {
                            Some((sv, _)) if sv == v => {}
                            _ => h.seen[k] = Some((v, c)),
                        }
                        if k < me && v > 0 {
                            lower.push(LowerBallot {
                                index: k,
                                last_change: h.seen[k].map_or(c, |s| s.1),
                            });
                        }
                    }
                    let max_term = mem_term.iter().copied().max().unwrap_or(0);
                    let d = decide(&Inputs {
                        now: c,
                        lease_ms: L,
                        self_lease_ms: S,
                        last_landed: h.run_last,
                        ballot_since: h.ballot_since,
                        lower: &lower,
                        leading: h.term,
                        max_term: max_term.max(h.term.unwrap_or(0)),
                    });
                    match d {
                        Decision::Lead { term } => {
                            h.decided_at = c;
                            if h.term != Some(term) {
                                h.term = Some(term);
                                beat(h, &mut pending, &mut rng);
                            }
                        }
                        _ => h.term = None,
                    }
                    Step::Guard
                }
                Step::Guard => {
                    let fresh = !full_guard || h.run_last.is_some_and(|l| c - l <= S);
                    let young = !full_guard || c - h.decided_at <= AGE;
                    if let (Some(term), true, true) = (h.term, fresh, young) {
                        acts.push((me, t, t + rng.gen_range(0..=P), term));
                    }
                    Step::Beat
                }
            };
            h.step = next;
            let pause = rng.gen_bool(0.03);
            h.next_at = t + if pause {
                rng.gen_range(1..=3 * L)
            } else if next == Step::Beat {
                H / 2 + rng.gen_range(0..H / 2)
            } else {
                rng.gen_range(0..=1)
            }
            .max(1);
        }
    }
    for (i, a) in acts.iter().enumerate() {
        for b in &acts[i + 1..] {
            if a.0 != b.0 && a.1 <= b.2 && b.1 <= a.2 {
                return Some(format!("seed {seed}: {a:?} overlaps {b:?}"));
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_two_leaders_act_at_once_in_the_lease_model(seed in any::<u64>()) {
        let overlap = run(seed, true);
        prop_assert!(overlap.is_none(), "{}", overlap.unwrap_or_default());
    }
}

/// The model's negative control: with a guard that checks only "I lead", a leader paused
/// between its poll and its action acts after another took over.
#[test]
fn the_lease_model_catches_a_guard_that_only_remembers_it_leads() {
    let caught = (0..300u64).find_map(|s| run(s, false));
    assert!(
        caught.is_some(),
        "the model found no overlap without the check"
    );
    println!("caught: {}", caught.unwrap_or_default());
}
