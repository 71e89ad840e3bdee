//! The leader lease without any cross-host read-modify-write (`docs/protocol-v2.md`, "Leader
//! lease without CAS"): ballots in the host registers ([`super::hosts`]), the lowest live
//! ballot leads.
//!
//! # Ballots
//!
//! Every live host that wants to lead publishes a [`Ballot`] in its own register: `wants:1 |
//! term:63`, where `term` is the highest leadership term it knows (its own while it leads). A
//! ballot is *live* for an observer while the register carrying it keeps changing: a host that
//! heartbeats rewrites its record every `H`, so a ballot whose record has not changed for a lease
//! `L` (the observer's own clock, [`Observer`]) is a dead host's. An unreadable register of a
//! lower index (busy, corrupt) counts as a ballot — it cannot be shown not to be one — that the
//! observer times out like any other.
//!
//! # The decision
//!
//! [`decide`] is a pure function of what one host saw and its clock ([`Inputs`]), so it can be
//! tested exhaustively. Host `me` leads at `now` when, in this order:
//!
//! 1. it publishes a ballot, and has continuously since `ballot_since`: a *run* of landed
//!    writes, each within the self-lease `S = L − P` of the one before (a gap longer than `S`
//!    — a pause — starts a new run);
//! 2. its own last landed write is younger than `S` (else [`Decision::Stale`]);
//! 3. no lower index shows a live ballot: every lower ballot's record unchanged for `L`
//!    (else [`Decision::Follow`] the lowest live one);
//! 4. its run has lasted a full lease: `now − ballot_since ≥ L` (else [`Decision::Wait`]).
//!
//! It then leads under `term` = the term it already leads under, or one more than the highest
//! term any register shows; it publishes that term (a heartbeat) before its first action, and
//! every leader action carries it and is preceded by [`Lease::guard`] (still leading, on a
//! decision younger than `L − 2P`, within the self-lease, and the fence check).
//!
//! # Safety: at most one leader acts at a time
//!
//! Assumptions (`hosts.rs`, "Timing"): the pause bound `P` on each read-or-clock-to-landed-write
//! window; clocks that run at the same rate; `L > H + 2P`; every host polls the lease at least
//! every `H`. Suppose `a < b` both act at time `τ`.
//!
//! * `b` decided at `d_b ≤ τ` that `a`'s record had not changed for `L`: it read the same record
//!   at some `f ≤ d_b − L` and at `d_b`, so none of `a`'s writes landed in `[f, d_b]`.
//! * `a` acts at `τ` only after [`Lease::guard`] at `g ∈ [τ − P, τ]` found its self-lease
//!   holding: its last write began at `ℓ ≥ g − S ≥ τ − P − (L − P) = τ − L ≥ d_b − L ≥ f`, and
//!   it landed by `ℓ + P`.
//! * If that write landed by `d_b`, it landed in `[f, d_b]`: contradiction. So it landed after
//!   `d_b` (so `ℓ > d_b − P`), and `a`'s write before it began before `f`: a gap of more than
//!   `d_b − P − f ≥ L − P = S` between two writes, so the write at `ℓ` started a new run; by
//!   rule 4 `a` acts no earlier than `ℓ + L`. Meanwhile `b` polls at least every `H`: it sees `a`'s
//!   change (landed by `ℓ + P`) at its first poll after that and decides `Follow`, which ends
//!   its term. Its actions rest on its last `Lead` decision `d`, taken before it saw the change,
//!   so `d < ℓ + P`; the guard refuses a decision older than `L − 2P`
//!   ([`Timing::decision_ms`](super::hosts::Timing::decision_ms)), so each of them lands by
//!   `d + (L − 2P) + P < ℓ + L`. The two never act at once. (A host that polls every `H` always
//!   has a decision younger than `L − 2P > H`.)
//!
//! So two leaders' actions overlap only if a host breaks the pause bound, e.g. stops for longer
//! than `P` between its guard and its write. Even then the epoch and the term make it harmless
//! to those who check: its register is taken over at a bumped epoch (its next fence check fails,
//! [`super::hosts::Fence`]) and its actions carry a term lower than the one the new leader
//! publishes, so structures that record their writer's term recognise and ignore them.
//!
//! # Liveness: a leader emerges within a bound
//!
//! When the leader dies at `t` (its last write landed by `t`), take the lowest host `b` whose
//! ballot run is older than `L` and that is live: every lower ballot's record is unchanged from
//! `t` (the lower ones that were alive were not leading, so they were dead or had no ballot —
//! or `b` would not be the lowest), `b` sees the last change by `t + H` (its poll), and decides
//! `Lead` at its first poll after `L` more: **a new leader acts by `t + L + 2H`** (plus the
//! rate difference of the clocks over `L`). A host that has only just started watching or
//! balloting first completes its own `L` (rule 4 and the observer's first sight).

use super::hosts::{HostsError, Membership, Observed, Observer, State};

/// Bit 63 of the ballot word: the host wants to lead.
pub const WANTS: u64 = 1 << 63;
/// The term bits of a ballot word.
pub const TERM_MASK: u64 = !WANTS;

/// A ballot word: `wants:1 | term:63`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ballot {
    pub wants: bool,
    pub term: u64,
}

impl Ballot {
    pub fn pack(self) -> u64 {
        (if self.wants { WANTS } else { 0 }) | (self.term & TERM_MASK)
    }

    pub fn unpack(word: u64) -> Ballot {
        Ballot {
            wants: word & WANTS != 0,
            term: word & TERM_MASK,
        }
    }
}

/// A lower index's ballot as one host observed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerBallot {
    pub index: usize,
    /// When its record last changed (the observer's clock).
    pub last_change: u64,
}

/// What [`decide`] needs: one host's observations and its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// The observer's clock now.
    pub now: u64,
    /// `L`.
    pub lease_ms: u64,
    /// `S = L − P`.
    pub self_lease_ms: u64,
    /// Clock reading before our last landed write; `None`: nothing written yet.
    pub last_landed: Option<u64>,
    /// Start of our current run with a ballot; `None`: no ballot published.
    pub ballot_since: Option<u64>,
    /// The lower indices showing a ballot (or unreadable).
    pub lower: &'a [LowerBallot],
    /// The term we lead under, if we lead.
    pub leading: Option<u64>,
    /// The highest term any register shows (ours included).
    pub max_term: u64,
}

/// What a host should be now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Lead under `term`.
    Lead { term: u64 },
    /// Do not lead yet: our run of ballots is younger than a lease; may lead at `until`.
    Wait { until: u64 },
    /// A lower index shows a live ballot.
    Follow { leader: usize },
    /// Our last write is older than the self-lease: beat first (a new run starts).
    Stale,
    /// We publish no ballot.
    NoBallot,
    /// Every term is used up: a register shows the highest term (only a corrupt or hostile
    /// region gets there: a term per acquisition, 2^63 of them). No leader can take a term
    /// that a deposed leader's writes would not already carry, so nobody leads.
    TermsExhausted,
}

/// The lease decision (module docs, "The decision"): pure, total, no clock of its own.
pub fn decide(i: &Inputs<'_>) -> Decision {
    let Some(since) = i.ballot_since else {
        return Decision::NoBallot;
    };
    match i.last_landed {
        Some(l) if i.now.saturating_sub(l) <= i.self_lease_ms => {}
        _ => return Decision::Stale,
    }
    // A change at or after `now` (a clock step) is as live as one just seen.
    if let Some(b) = i
        .lower
        .iter()
        .filter(|b| i.now.saturating_sub(b.last_change) < i.lease_ms)
        .min_by_key(|b| b.index)
    {
        return Decision::Follow { leader: b.index };
    }
    if i.now.saturating_sub(since) < i.lease_ms {
        return Decision::Wait {
            until: since.saturating_add(i.lease_ms),
        };
    }
    let term = match i.leading {
        Some(t) => t,
        // A new term above every one shown; never wrapped to 0 (a deposed leader's writes would
        // then carry a higher term than ours).
        None if i.max_term & TERM_MASK == TERM_MASK => return Decision::TermsExhausted,
        None => (i.max_term & TERM_MASK) + 1,
    };
    Decision::Lead { term }
}

/// What one [`Lease::poll`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// We lead from now on under `term` (published).
    Acquired { term: u64 },
    /// We still lead under `term`.
    Leading { term: u64 },
    /// We led and stopped: `why` is the decision that ended it.
    Lost { why: Decision },
    /// We do not lead.
    NotLeader { why: Decision },
}

/// One host's side of the lease: its ballot run and its term.
#[derive(Clone, Debug, Default)]
pub struct Lease {
    wants: bool,
    ballot_since: Option<u64>,
    /// `last_landed` of our membership as the run last saw it.
    run_last: Option<u64>,
    term: Option<u64>,
    /// Clock reading of the poll that last decided `Lead`.
    decided_at: u64,
}

/// Why a leader action may not go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// We do not lead (any more).
    #[error("not the leader")]
    NotLeader,
    /// Our register or self-lease says we are fenced.
    #[error(transparent)]
    Hosts(#[from] HostsError),
}

impl Lease {
    /// A lease that publishes a ballot when `wants` (a host that never wants to lead: false).
    pub fn new(wants: bool) -> Lease {
        Lease {
            wants,
            ..Lease::default()
        }
    }

    /// The term we lead under.
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Notes our membership's latest write in the run (call after every beat).
    fn track_run(&mut self, m: &Membership<'_>) {
        let l = m.last_landed();
        let gap_ok = self
            .run_last
            .is_some_and(|prev| l.saturating_sub(prev) <= m.timing().self_lease_ms());
        if !gap_ok || !self.wants || self.ballot_since.is_none() {
            self.ballot_since = self.wants.then_some(l);
        }
        self.run_last = Some(l);
    }

    /// A heartbeat with our ballot: [`Membership::beat`], then the run noted.
    ///
    /// # Errors
    /// As [`Membership::beat`].
    pub fn beat(&mut self, m: &mut Membership<'_>, now_ms: u64) -> Result<u64, HostsError> {
        let max_known = Ballot::unpack(m.mine().ballot).term;
        m.set_ballot(
            Ballot {
                wants: self.wants,
                term: self.term.unwrap_or(max_known),
            }
            .pack(),
        );
        let hb = m.beat(now_ms)?;
        self.track_run(m);
        Ok(hb)
    }

    /// Reads every register (noting them in `observer`), decides, and publishes a new term.
    ///
    /// # Errors
    /// Read errors of the table; [`HostsError::Fenced`] from publishing the term.
    pub fn poll(
        &mut self,
        m: &mut Membership<'_>,
        observer: &mut Observer,
        now_ms: u64,
    ) -> Result<(LeaseEvent, Vec<Observed>), HostsError> {
        let seen = observer.poll(m.table(), m.coherence(), now_ms)?;
        let me = m.index();
        let mut lower = Vec::new();
        let mut max_term = Ballot::unpack(m.mine().ballot).term;
        for (j, o) in seen.iter().enumerate() {
            let ballot = match &o.state {
                Ok(s) => {
                    max_term = max_term.max(Ballot::unpack(s.ballot).term);
                    s.state == State::Live && Ballot::unpack(s.ballot).wants
                }
                Err(_) => true,
            };
            if j < me && ballot {
                lower.push(LowerBallot {
                    index: j,
                    last_change: observer.last_change(j).unwrap_or(now_ms),
                });
            }
        }
        let d = decide(&Inputs {
            now: now_ms,
            lease_ms: m.timing().lease_ms,
            self_lease_ms: m.timing().self_lease_ms(),
            last_landed: self.run_last,
            ballot_since: self.ballot_since,
            lower: &lower,
            leading: self.term,
            max_term,
        });
        if let Decision::Lead { .. } = d {
            self.decided_at = now_ms;
        }
        let event = match d {
            Decision::Lead { term } if self.term == Some(term) => LeaseEvent::Leading { term },
            Decision::Lead { term } => {
                // Publish the term in our register before the first action under it; keep our
                // self-lease fresh as the decision assumed.
                let max_known = max_term;
                self.term = Some(term);
                m.set_ballot(Ballot { wants: true, term }.pack());
                if let Err(e) = m.beat(now_ms) {
                    self.term = None;
                    m.set_ballot(
                        Ballot {
                            wants: self.wants,
                            term: max_known,
                        }
                        .pack(),
                    );
                    return Err(e);
                }
                self.track_run(m);
                LeaseEvent::Acquired { term }
            }
            why => {
                let was = self.term.take();
                // Remember the highest term seen in our ballot (a later leader goes past it).
                m.set_ballot(
                    Ballot {
                        wants: self.wants,
                        term: max_term,
                    }
                    .pack(),
                );
                if was.is_some() {
                    LeaseEvent::Lost { why }
                } else {
                    LeaseEvent::NotLeader { why }
                }
            }
        };
        Ok((event, seen))
    }

    /// The check before every leader action: we lead, decided so by a poll at most `L − 2P` ago,
    /// our self-lease holds at `now_ms`, and our register is still ours (the fence check).
    /// Returns the term the action carries.
    ///
    /// # Errors
    /// [`LeaseError::NotLeader`]; [`LeaseError::Hosts`] with [`HostsError::Fenced`].
    pub fn guard(&mut self, m: &mut Membership<'_>, now_ms: u64) -> Result<u64, LeaseError> {
        let Some(term) = self.term else {
            return Err(LeaseError::NotLeader);
        };
        if now_ms.saturating_sub(self.decided_at) > m.timing().decision_ms() {
            self.term = None;
            return Err(LeaseError::NotLeader);
        }
        if let Err(e) = m
            .check_self_lease(now_ms)
            .and_then(|()| m.check_fenced(now_ms))
        {
            self.term = None;
            return Err(e.into());
        }
        Ok(term)
    }
}
