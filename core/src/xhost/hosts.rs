//! Host registers: which host owns which host index, joining, heartbeats, liveness and takeover,
//! with no cross-host read-modify-write (`docs/protocol-v2.md`, "Host registers").
//!
//! # The table
//!
//! A fixed table of `n` registers (the caller passes its words; `n * 16` words, 128-byte
//! aligned). Register `R[h]` is 128 bytes: line 0 is one published [`Record`] — seq word plus a
//! seven-word body — and line 1 is padding (no other writer's words on the line next to it: the
//! adjacent-line prefetcher pulls pairs). The body:
//!
//! | word | field |
//! |---|---|
//! | 0 | identity: hash of the host's name |
//! | 1 | boot id (a new one each boot of the host) |
//! | 2 | join nonce (fresh random per claim, never 0) |
//! | 3 | status: `epoch:32 \| kind:16 \| arg:16` — kind FREE, JOINING, LIVE, TAKEN (arg = taker) |
//! | 4 | heartbeat counter |
//! | 5 | ballot of the lease (`lease.rs`: `wants:1 \| term:63`) |
//! | 6 | check: a hash of words 0–5 (a body of all zeros is the never-written FREE register) |
//!
//! The whole record is on one 64-byte line, so a write-back carries all of it: when two hosts
//! write the same register (a join collision, a late write of a deposed host) memory holds one
//! writer's line, never a mix. Assumption: a line's write-back is not torn (the unit of `clwb`
//! and of CXL.mem writes; the emulator transfers lines whole under a line lock). The check word
//! still catches a mix (and bit flips, stray writers): [`HostsError::Corrupt`].
//!
//! One writer per register: host `h` itself, or after a takeover the host named in `TAKEN`,
//! under the bumped epoch. The only moment two hosts write one register is a join collision,
//! which the join resolves before either acts as its owner.
//!
//! # Timing and the pause bound
//!
//! [`Timing`]: heartbeat period `H`, confirmation period `C`, lease `L`, and `P`, the assumed
//! **pause bound**: from the moment a host takes a clock reading or reads a register to decide a
//! write, until that write has landed in memory (its write-back returned), at most `P` passes.
//! Clocks are each host's own monotonic clock, assumed to run at the same *rate* (never
//! compared in value). Required: `C ≥ 2H`, `C > H + 2P`, `L > C + P`, `L > H + 2P`
//! ([`Timing::validate`]).
//!
//! A host that cannot keep to `P` (it was paused longer) does not trust what it decided before
//! the pause: every write path re-reads its own register first ([`Membership::check_fenced`]),
//! and a host whose own last landed write is older than its *self-lease* `S = L − P` does not
//! act: neither as leader (`lease.rs`) nor as its register's owner (`check_fenced` refuses
//! first, `Fence::Expired`: a stop *between* two beats is bounded by nothing, and after `L` of
//! silence a taker may be recovering its partition; see also the re-assertion rule below).
//!
//! # Join
//!
//! 1. A register of a previous boot of the joiner (its name, another boot id — or its own boot:
//!    the host's ticker process died without a handover, `super::ticker`), LIVE or JOINING,
//!    is claimed first, once the joiner has watched it unchanged for a lease (that boot is
//!    dead; the new boot keeps its index and partition). Otherwise probe registers from
//!    `hash(name) mod n`. A register is claimable when it is FREE, or it is JOINING (anyone's)
//!    or LIVE under the joiner's own name and the joiner has watched it unchanged for a lease
//!    (an abandoned claim, a dead previous boot). TAKEN
//!    registers belong to their taker (it frees them when it has recovered the partition);
//!    unreadable ones are skipped (the leader takes them over).
//! 2. Claim: write `{identity, boot, fresh nonce, epoch + 1, JOINING}` (write back: the record's
//!    writer order).
//! 3. Watch for `C`: evict and read the register repeatedly, the last read after `C` has passed
//!    on the joiner's clock. Anything but its own nonce and JOINING record (another nonce, a
//!    busy or corrupt read) means a collision: the joiner loses and probes the next index,
//!    without writing this one again.
//! 4. Seeing only its own nonce, it owns the index: it rewrites the record LIVE (heartbeat 1).
//!
//! **Why two hosts never both own an index.** Let A and B both claim `R[i]`, their claims
//! landing in memory at `wA ≤ wB` (each claim's last write-back). Neither writes `R[i]` during
//! its watch, and only A ever writes A's nonce.
//!
//! * `wB ≤ wA + C` — B landed within A's watch. From `wB` memory holds B's line; A's last read
//!   comes after `wA + C ≥ wB` and reads memory (evicted first), so it sees B's nonce: A loses.
//!   This is the case "both write before either reads": the later landing wins, the earlier one
//!   sees it; both may lose (an abandoned JOINING register, reclaimed after a lease), never both
//!   win. A read that was served stale is impossible: every read evicts first, and a spontaneous
//!   refetch only brings memory's line.
//! * `wB > wA + C` — B landed after A's watch. B probed `R[i]` before claiming and found it
//!   claimable. Had its (evicted) probe read come after `wA`, it would have found A's JOINING or
//!   LIVE record, claimable only after a lease of no change, which an owner heartbeating every
//!   `H < L` never shows. So B read before `wA` and landed after `wA + C`: its
//!   read-to-landing window exceeded `C > P`, which the pause bound excludes. For a B that
//!   breaks the bound anyway (a host paused between probe and claim), the owner's heartbeat is
//!   the second defence: A re-reads its register before every heartbeat
//!   ([`Membership::check_fenced`]); finding a foreign JOINING nonce there, A **re-asserts**
//!   (rewrites its LIVE record) if its own last write began less than `C − P` ago, else it
//!   treats itself as fenced and rejoins. A re-asserting A read B's claim, so its rewrite lands
//!   after `wB`; its last write began at `ℓA < wB` (the fence check of that write, after
//!   `ℓA`, still found A's own record), so the
//!   rewrite lands by `ℓA + (C − P) + P < wB + C`: inside B's watch, and B loses. Either way
//!   one owner. (Only a B and an A that *both* break the bound can both own; then A's next
//!   fence check fails — it finds B's nonce LIVE — before A writes again.)
//!
//! So the confirmation period must exceed a host's read-to-write-back latency (`P`) and span the
//! owner's heartbeat plus its check-to-landing window (`C > H + 2P`).
//!
//! # Heartbeat and liveness
//!
//! A host's process advances the heartbeat counter and writes the record back every `H`, after
//! [`Membership::check_fenced`]. (Several processes of one host would pick which one writes a
//! tick with a host-local CAS on a host-local word; [`Membership`] is that one writer's state.)
//! An [`Observer`] remembers, per index, the last record it read (seq and check word: every
//! write changes the seq) and *when it changed on the observer's own monotonic clock*. A host is
//! dead for that observer once its record has not changed for a lease; an index first seen
//! counts as changed then, so a new observer watches a whole lease before judging. Unreadable
//! records (busy: a writer died mid write, corrupt) count as unchanged while their seq stays.
//! No host's clock value is ever compared with another's.
//!
//! # Takeover and fencing
//!
//! The leader ([`super::lease`]) takes a dead host's register over: it writes `epoch + 1,
//! TAKEN(leader)` ([`Membership::take_over`]) and is that register's writer from then on. The
//! returning host finds TAKEN, another epoch or another nonce at its next
//! [`Membership::check_fenced`] — before every write path — gets [`HostsError::Fenced`], stops
//! writing and joins again (under another index: TAKEN is not claimable). A late write of the
//! deposed host (one that passed its check just before the takeover landed, or a line its cache
//! wrote back late) carries the old epoch, so it is recognisable; the taker, re-reading a
//! register it took and finding an older epoch there, writes its TAKEN record again (the deposed
//! host's next fence check then fails): every [`Membership::beat`] re-reads the registers its
//! host took and has not freed. An owner that finds a record of an *older* epoch than its own
//! over its register (a late write of an index's earlier owner, deposed before this owner
//! claimed it) rewrites its own: an older epoch is never a newer claim. A new boot's watch of
//! its previous boot's register gives up as soon as that register reads TAKEN, and no claim is
//! ever written over TAKEN.

use crate::coherence::Coherence;
use crate::sync::AtomicU64;

use super::record::{Record, RecordError};

/// Words of one register (128 bytes: the record line and a padding line).
pub const REGISTER_WORDS: usize = 16;
/// Body words of the register's record.
pub const BODY_WORDS: usize = 7;
/// Most registers a table may have (a taker's index fits the status word's 16-bit arg).
pub const MAX_HOSTS: usize = 1 << 16;

/// Why a host-register operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostsError {
    /// The words given for the table cannot be one.
    #[error("host table of {words} words: {reason}")]
    BadTable { words: usize, reason: &'static str },
    /// A host index (given, or read from the region) outside the table.
    #[error("host index {index} out of range (table of {len})")]
    IndexOutOfRange { index: usize, len: usize },
    /// The register's record could not be read consistently.
    #[error("register {index}: {source}")]
    Record {
        index: usize,
        #[source]
        source: RecordError,
    },
    /// The register's check word does not match its fields.
    #[error("register {index}: corrupt (check word mismatch)")]
    Corrupt { index: usize },
    /// The status word names no state.
    #[error("register {index}: bad status word {word:#x}")]
    BadState { index: usize, word: u64 },
    /// This host no longer owns its index: the register shows what replaced it.
    #[error("host index {index} is fenced: {why}")]
    Fenced { index: usize, why: Fence },
    /// A taker's operation on a register it did not take over.
    #[error("register {index} is not taken over by this host")]
    NotOurs { index: usize },
    /// Every register was taken or unclaimable for the whole join.
    #[error("no claimable host register after {probes} probes")]
    NoFreeRegister { probes: usize },
    /// The timing parameters break the protocol's inequalities.
    #[error("bad timing: {0}")]
    BadTiming(&'static str),
}

/// What a fenced host found (or why it gave its index up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// Another host took the register over (its index).
    TakenBy(usize),
    /// Another claim or owner: the nonce or epoch is not this host's.
    Replaced { nonce: u64, epoch: u32 },
    /// The register is FREE again (released by a taker).
    Freed,
    /// This host's own last landed write is older than its self-lease: it may have been judged
    /// dead, so it does not write as the owner again.
    Expired { silent_ms: u64 },
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fence::TakenBy(h) => write!(f, "taken over by host index {h}"),
            Fence::Replaced { nonce, epoch } => {
                write!(f, "replaced by nonce {nonce:#x} at epoch {epoch}")
            }
            Fence::Freed => write!(f, "freed by its taker"),
            Fence::Expired { silent_ms } => {
                write!(f, "no write of ours landed for {silent_ms} ms (self-lease)")
            }
        }
    }
}

/// The protocol's periods, in ms of each host's own monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `H`: a live host writes its heartbeat at least this often.
    pub heartbeat_ms: u64,
    /// `C`: how long a joiner watches its claim.
    pub confirm_ms: u64,
    /// `L`: a record unchanged this long belongs to a dead host.
    pub lease_ms: u64,
    /// `P`: the assumed bound on a host's read-or-clock-reading-to-landed-write window.
    pub pause_ms: u64,
}

impl Timing {
    /// Checks the inequalities of the module docs.
    ///
    /// # Errors
    /// [`HostsError::BadTiming`] naming the first one broken.
    pub fn validate(&self) -> Result<(), HostsError> {
        let (h, c, l, p) = (
            self.heartbeat_ms,
            self.confirm_ms,
            self.lease_ms,
            self.pause_ms,
        );
        if h == 0 {
            return Err(HostsError::BadTiming("heartbeat period is 0"));
        }
        if c < 2 * h {
            return Err(HostsError::BadTiming("confirmation < 2 heartbeats"));
        }
        if c <= h + 2 * p {
            return Err(HostsError::BadTiming(
                "confirmation <= heartbeat + 2 pauses",
            ));
        }
        if l <= c + p || l <= h + 2 * p {
            return Err(HostsError::BadTiming(
                "lease too short for confirmation, pause",
            ));
        }
        Ok(())
    }

    /// `S = L − P`: a host acts as owner or leader only while its last landed write is younger.
    pub fn self_lease_ms(&self) -> u64 {
        self.lease_ms.saturating_sub(self.pause_ms)
    }

    /// `L − 2P`: a leader acts only on a lease decision younger than this (`lease.rs`,
    /// "Safety").
    pub fn decision_ms(&self) -> u64 {
        self.lease_ms.saturating_sub(2 * self.pause_ms)
    }

    /// `C − P`: an owner re-asserts over a foreign claim only while its last landed write is
    /// younger (module docs, "Why two hosts never both own an index").
    pub fn reassert_ms(&self) -> u64 {
        self.confirm_ms.saturating_sub(self.pause_ms)
    }
}

/// A register's state (the status word's kind and arg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Free,
    Joining,
    Live,
    /// Taken over by the host at this index, which writes the register now.
    TakenBy(usize),
}

const KIND_FREE: u64 = 0;
const KIND_JOINING: u64 = 1;
const KIND_LIVE: u64 = 2;
const KIND_TAKEN: u64 = 3;

/// Who a host is: its name's hash and its boot id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name_hash: u64,
    pub boot: u64,
}

impl Identity {
    /// The identity of host `name` in boot `boot`.
    pub fn new(name: &str, boot: u64) -> Identity {
        Identity {
            name_hash: name_hash(name),
            boot,
        }
    }

    /// Where this host's probe starts in a table of `n` registers.
    pub fn home_index(&self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (mix(self.name_hash) % n as u64) as usize
        }
    }
}

/// FNV-1a of `name` (never 0: 0 is the never-written register's identity).
pub fn name_hash(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3)
    });
    h.max(1)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn check_word(fields: &[u64]) -> u64 {
    fields.iter().fold(0x6a09_e667_f3bc_c908_u64, |h, &w| {
        mix(h ^ w).rotate_left(17)
    })
}

/// One register's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterState {
    pub identity: Identity,
    pub nonce: u64,
    pub epoch: u32,
    pub state: State,
    pub heartbeat: u64,
    /// The lease ballot word (`lease::Ballot`).
    pub ballot: u64,
}

impl RegisterState {
    /// The never-written register.
    pub const FREE: RegisterState = RegisterState {
        identity: Identity {
            name_hash: 0,
            boot: 0,
        },
        nonce: 0,
        epoch: 0,
        state: State::Free,
        heartbeat: 0,
        ballot: 0,
    };

    fn encode(&self) -> [u64; BODY_WORDS] {
        let (kind, arg) = match self.state {
            State::Free => (KIND_FREE, 0),
            State::Joining => (KIND_JOINING, 0),
            State::Live => (KIND_LIVE, 0),
            State::TakenBy(h) => (KIND_TAKEN, h as u64 & 0xffff),
        };
        let status = u64::from(self.epoch) << 32 | kind << 16 | arg;
        let mut w = [
            self.identity.name_hash,
            self.identity.boot,
            self.nonce,
            status,
            self.heartbeat,
            self.ballot,
            0,
        ];
        w[6] = check_word(&w[..6]);
        w
    }

    fn decode(index: usize, n: usize, w: &[u64; BODY_WORDS]) -> Result<RegisterState, HostsError> {
        if w.iter().all(|&x| x == 0) {
            return Ok(RegisterState::FREE);
        }
        if check_word(&w[..6]) != w[6] {
            return Err(HostsError::Corrupt { index });
        }
        let status = w[3];
        let (kind, arg) = ((status >> 16) & 0xffff, (status & 0xffff) as usize);
        let state = match kind {
            KIND_FREE if arg == 0 => State::Free,
            KIND_JOINING if arg == 0 => State::Joining,
            KIND_LIVE if arg == 0 => State::Live,
            KIND_TAKEN if arg < n => State::TakenBy(arg),
            KIND_TAKEN => return Err(HostsError::IndexOutOfRange { index: arg, len: n }),
            _ => {
                return Err(HostsError::BadState {
                    index,
                    word: status,
                })
            }
        };
        Ok(RegisterState {
            identity: Identity {
                name_hash: w[0],
                boot: w[1],
            },
            nonce: w[2],
            epoch: (status >> 32) as u32,
            state,
            heartbeat: w[4],
            ballot: w[5],
        })
    }
}

/// What one read of a register found: the record's seq and check word (what an [`Observer`]
/// compares) and the decoded state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub seq: u64,
    pub check: u64,
    pub state: Result<RegisterState, HostsError>,
}

/// The table of host registers, as one host's process sees it.
#[derive(Clone, Copy)]
pub struct HostTable<'a> {
    words: &'a [AtomicU64],
}

impl<'a> HostTable<'a> {
    /// The table over `words` (`n * REGISTER_WORDS` words of the region, 128-byte aligned).
    ///
    /// # Errors
    /// [`HostsError::BadTable`] for an empty, ragged, too large or misaligned table.
    pub fn new(words: &'a [AtomicU64]) -> Result<HostTable<'a>, HostsError> {
        let bad = |reason| HostsError::BadTable {
            words: words.len(),
            reason,
        };
        if words.is_empty() || words.len() % REGISTER_WORDS != 0 {
            return Err(bad("not a whole number of 16-word registers"));
        }
        if words.len() / REGISTER_WORDS > MAX_HOSTS {
            return Err(bad("more than MAX_HOSTS registers"));
        }
        if words.as_ptr() as usize % (REGISTER_WORDS * 8) != 0 {
            return Err(bad("not 128-byte aligned"));
        }
        Ok(HostTable { words })
    }

    /// Number of registers.
    pub fn len(&self) -> usize {
        self.words.len() / REGISTER_WORDS
    }

    /// Whether the table has no registers (never: [`HostTable::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    fn record(&self, index: usize) -> Result<Record<'a>, HostsError> {
        if index >= self.len() {
            return Err(HostsError::IndexOutOfRange {
                index,
                len: self.len(),
            });
        }
        let r = &self.words[index * REGISTER_WORDS..(index + 1) * REGISTER_WORDS];
        Ok(Record::new(&r[0], &r[1..1 + BODY_WORDS]))
    }

    /// Reads register `index` (evicted, validated).
    ///
    /// # Errors
    /// [`HostsError::IndexOutOfRange`]; the read's errors in [`Observed::state`].
    pub fn observe(&self, c: &Coherence, index: usize) -> Result<Observed, HostsError> {
        let rec = self.record(index)?;
        let mut w = [0u64; BODY_WORDS];
        match rec.read(c, &mut w) {
            Ok(seq) => Ok(Observed {
                seq,
                check: w[6],
                state: RegisterState::decode(index, self.len(), &w),
            }),
            Err(source) => Ok(Observed {
                seq: match source {
                    RecordError::Busy { seq } => seq,
                    RecordError::WrongLength { .. } => 0,
                },
                check: 0,
                state: Err(HostsError::Record { index, source }),
            }),
        }
    }

    /// Reads register `index`.
    ///
    /// # Errors
    /// As [`HostTable::observe`], and every error of the read itself.
    pub fn read(&self, c: &Coherence, index: usize) -> Result<RegisterState, HostsError> {
        self.observe(c, index)?.state
    }

    /// What a taker can learn of register `index` when [`HostTable::read`] fails on it (left
    /// mid-write, a torn or corrupt body, an unknown state): the body as memory holds it,
    /// decoded if its check word holds; otherwise a record that only carries the epoch word as
    /// memory has it (`identity`, `nonce` cleared, LIVE). Either is only a base for a TAKEN
    /// record: every fence check refuses TAKEN, whatever the epoch.
    ///
    /// # Errors
    /// [`HostsError::IndexOutOfRange`].
    pub fn read_for_takeover(
        &self,
        c: &Coherence,
        index: usize,
    ) -> Result<RegisterState, HostsError> {
        if let Ok(s) = self.read(c, index) {
            return Ok(s);
        }
        let rec = self.record(index)?;
        let mut w = [0u64; BODY_WORDS];
        rec.read_unvalidated(c, &mut w)
            .map_err(|source| HostsError::Record { index, source })?;
        Ok(
            RegisterState::decode(index, self.len(), &w).unwrap_or(RegisterState {
                epoch: (w[3] >> 32) as u32,
                state: State::Live,
                ..RegisterState::FREE
            }),
        )
    }

    /// Writes register `index` (the record's writer order). Only the register's writer calls
    /// this: its owner, its taker, or a joiner claiming it.
    ///
    /// # Errors
    /// [`HostsError::IndexOutOfRange`].
    pub fn write(&self, c: &Coherence, index: usize, s: &RegisterState) -> Result<(), HostsError> {
        let rec = self.record(index)?;
        rec.write(c, &s.encode())
            .map(|_| ())
            .map_err(|source| HostsError::Record { index, source })
    }
}

/// Per index, when its record last changed on this observer's own monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    seen: Vec<Option<Seen>>,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    key: (u64, u64),
    since: u64,
}

impl Observer {
    /// An observer of a table of `n` registers that has seen nothing yet.
    pub fn new(n: usize) -> Observer {
        Observer {
            seen: vec![None; n],
        }
    }

    /// Records what a read of `index` found at `now_ms`.
    ///
    /// # Errors
    /// [`HostsError::IndexOutOfRange`].
    pub fn note(&mut self, index: usize, o: &Observed, now_ms: u64) -> Result<(), HostsError> {
        let len = self.seen.len();
        let slot = self
            .seen
            .get_mut(index)
            .ok_or(HostsError::IndexOutOfRange { index, len })?;
        let key = (o.seq, o.check);
        match slot {
            Some(s) if s.key == key => {}
            _ => *slot = Some(Seen { key, since: now_ms }),
        }
        Ok(())
    }

    /// Reads every register and notes it; returns what it read.
    ///
    /// # Errors
    /// [`HostsError::IndexOutOfRange`] when the table is longer than the observer.
    pub fn poll(
        &mut self,
        table: &HostTable<'_>,
        c: &Coherence,
        now_ms: u64,
    ) -> Result<Vec<Observed>, HostsError> {
        let mut out = Vec::with_capacity(table.len());
        for i in 0..table.len() {
            let o = table.observe(c, i)?;
            self.note(i, &o, now_ms)?;
            out.push(o);
        }
        Ok(out)
    }

    /// When `index`'s record last changed (observer's clock); `None`: never read.
    pub fn last_change(&self, index: usize) -> Option<u64> {
        self.seen.get(index).copied().flatten().map(|s| s.since)
    }

    /// Whether `index`'s record has not changed for `lease_ms` at `now_ms` (never read: no).
    pub fn is_dead(&self, index: usize, now_ms: u64, lease_ms: u64) -> bool {
        self.last_change(index)
            .is_some_and(|since| now_ms.saturating_sub(since) >= lease_ms)
    }
}

/// A fresh random join nonce (never 0), from the process's random hash keys, the time and a
/// counter (core has no random-number dependency; a nonce needs uniqueness, not secrecy).
pub fn fresh_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Process-local (never in the region), so a thread-local counter: no atomic to model.
    thread_local! {
        static COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = COUNTER.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(crate::clock::unix_ns());
    h.write_u32(std::process::id());
    h.write_u64(n);
    h.finish().max(1)
}

/// This host's ownership of its index: what it wrote last and when.
#[derive(Debug)]
pub struct Membership<'a> {
    table: HostTable<'a>,
    c: &'a Coherence,
    timing: Timing,
    index: usize,
    mine: RegisterState,
    /// Clock reading taken before our last write began (so not after it landed).
    last_landed: u64,
    /// The registers we took over and have not freed, with the record we wrote: each beat
    /// re-reads them and writes TAKEN again over a deposed owner's late write.
    taken: Vec<(usize, RegisterState)>,
}

impl std::fmt::Debug for HostTable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostTable({} registers)", self.len())
    }
}

/// Joins the table as `id`: the protocol of the module docs. `clock` is this host's monotonic
/// clock in ms; the join sleeps in steps while it watches.
///
/// # Errors
/// [`HostsError::BadTiming`]; [`HostsError::NoFreeRegister`] when no claim succeeded in
/// `2 + (L + C) / H` rounds over the table; read errors of the table itself.
pub fn join<'a>(
    table: HostTable<'a>,
    c: &'a Coherence,
    id: Identity,
    timing: Timing,
    clock: &dyn Fn() -> u64,
) -> Result<Membership<'a>, HostsError> {
    timing.validate()?;
    let n = table.len();
    let home = id.home_index(n);
    let mut observer = Observer::new(n);
    let rounds = 2 + (timing.lease_ms + timing.confirm_ms) / timing.heartbeat_ms;
    let mut probes = 0;
    // A previous boot of ours (same name, another boot id) keeps its register, and with it its
    // partition: wait for its lease to expire and claim it, before any FREE one. If it keeps
    // changing for a lease and two heartbeats, another live host has our name: probe normally.
    // Also our own boot's register: another process of this host held it as the host's ticker
    // and died without a handover (`super::ticker`).
    let previous = (0..n).find(|&i| {
        table.read(c, i).is_ok_and(|s| {
            s.identity.name_hash == id.name_hash && matches!(s.state, State::Live | State::Joining)
        })
    });
    if let Some(p) = previous {
        let until = clock().saturating_add(timing.lease_ms + 2 * timing.heartbeat_ms);
        for _ in 0..rounds {
            let now = clock();
            let o = table.observe(c, p)?;
            observer.note(p, &o, now)?;
            probes += 1;
            let Ok(prev) = o.state else { break };
            // Still a previous boot's own record: a TAKEN register is its taker's (the leader
            // judged that boot dead first), however long it stays unchanged.
            if prev.identity.name_hash != id.name_hash
                || !matches!(prev.state, State::Live | State::Joining)
                || now >= until
            {
                break;
            }
            if observer.is_dead(p, now, timing.lease_ms) {
                if let Some(m) = claim(table, c, id, timing, clock, p, &prev)? {
                    return Ok(m);
                }
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(timing.heartbeat_ms));
        }
    }
    let mut cursor = home;
    for _ in 0..rounds {
        let mut claimed = false;
        for _ in 0..n {
            let i = cursor;
            cursor = (cursor + 1) % n;
            probes += 1;
            let now = clock();
            let o = table.observe(c, i)?;
            observer.note(i, &o, now)?;
            let Ok(prev) = o.state else { continue };
            let stale = observer.is_dead(i, now, timing.lease_ms);
            let claimable = match prev.state {
                State::Free => true,
                State::Joining => stale,
                State::Live => stale && prev.identity.name_hash == id.name_hash,
                State::TakenBy(_) => false,
            };
            if !claimable {
                continue;
            }
            if let Some(m) = claim(table, c, id, timing, clock, i, &prev)? {
                return Ok(m);
            }
            // Lost: the cursor already names the next index; this one is left to its winner.
            claimed = true;
        }
        if !claimed {
            std::thread::sleep(std::time::Duration::from_millis(timing.heartbeat_ms));
        }
    }
    Err(HostsError::NoFreeRegister { probes })
}

/// Whether epoch `a` is older than `b` (wrapping: epochs only grow, one step per claim or
/// takeover, so two live values are within half the range of each other).
fn epoch_older(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

/// Claims register `i` (read as `prev`) and watches it: `Some` if this host now owns it.
fn claim<'a>(
    table: HostTable<'a>,
    c: &'a Coherence,
    id: Identity,
    timing: Timing,
    clock: &dyn Fn() -> u64,
    i: usize,
    prev: &RegisterState,
) -> Result<Option<Membership<'a>>, HostsError> {
    // TAKEN belongs to its taker, whoever asks.
    if matches!(prev.state, State::TakenBy(_)) {
        return Ok(None);
    }
    let claim = RegisterState {
        identity: id,
        nonce: fresh_nonce(),
        epoch: prev.epoch.wrapping_add(1),
        state: State::Joining,
        heartbeat: 0,
        ballot: 0,
    };
    table.write(c, i, &claim)?;
    let start = clock();
    let step = (timing.confirm_ms / 8).max(1);
    // Bounded: the watch ends after C on our clock, or after 8·C/step + 2 reads at most if the
    // clock stands still.
    let max_reads = 8 * timing.confirm_ms / step + 2;
    for _ in 0..max_reads {
        std::thread::sleep(std::time::Duration::from_millis(step));
        let seen = table.read(c, i);
        if seen != Ok(claim) {
            return Ok(None);
        }
        if clock().saturating_sub(start) >= timing.confirm_ms {
            break;
        }
    }
    let live = RegisterState {
        state: State::Live,
        heartbeat: 1,
        ..claim
    };
    let m = Membership::with_record(table, c, timing, i, live, clock());
    table.write(c, i, &m.mine)?;
    Ok(Some(m))
}

impl<'a> Membership<'a> {
    /// The host index this host owns.
    pub fn index(&self) -> usize {
        self.index
    }

    /// What this host last wrote in its register.
    pub fn mine(&self) -> &RegisterState {
        &self.mine
    }

    /// The timing it joined with.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The table.
    pub fn table(&self) -> &HostTable<'a> {
        &self.table
    }

    /// The coherence it reads and writes the table with.
    pub fn coherence(&self) -> &'a Coherence {
        self.c
    }

    /// The membership of register `index` holding record `mine`, with `last_landed` the clock
    /// reading before the last write of it: a join's (after its watch), or one carried on by
    /// another process of the same host (the host's next ticker, `super::ticker`, from its
    /// predecessor's handover, on a clock shared by the host's processes). The registers the previous ticker took over are not carried over: it takes
    /// them over again when it finds them dead.
    pub fn with_record(
        table: HostTable<'a>,
        c: &'a Coherence,
        timing: Timing,
        index: usize,
        mine: RegisterState,
        last_landed: u64,
    ) -> Membership<'a> {
        Membership {
            table,
            c,
            timing,
            index,
            mine,
            last_landed,
            taken: Vec::new(),
        }
    }

    /// The clock reading taken before our last write began.
    pub fn last_landed(&self) -> u64 {
        self.last_landed
    }

    /// The fence check, before every write path: reads our register and requires it to be
    /// ours (our nonce, epoch, LIVE). A foreign JOINING claim over it is overwritten (the owner
    /// re-asserts) while our last write is younger than `C − P`; otherwise, or for TAKEN, a
    /// foreign LIVE record or FREE, the index is lost.
    ///
    /// # Errors
    /// [`HostsError::Fenced`]; read errors of the register (busy, corrupt: not ours either, but
    /// possibly transient; the caller retries at its next tick or rejoins).
    pub fn check_fenced(&mut self, now_ms: u64) -> Result<(), HostsError> {
        // Silent for longer than the self-lease (stopped between two beats: no bound covers
        // that): every observer may have judged us dead and a taker may be recovering our
        // partition, so nothing more is written, even if the register still reads as ours (the
        // taker's write may not have landed yet). A host then stops after at most one late
        // write: `last_landed` is read before each write, so the next check sees the pause.
        self.check_self_lease(now_ms)?;
        let index = self.index;
        let fenced = |why| Err(HostsError::Fenced { index, why });
        let seen = self.table.read(self.c, index)?;
        if seen.nonce == self.mine.nonce && seen.epoch == self.mine.epoch {
            return match seen.state {
                State::Live => Ok(()),
                State::TakenBy(h) => fenced(Fence::TakenBy(h)),
                State::Free => fenced(Fence::Freed),
                State::Joining => fenced(Fence::Replaced {
                    nonce: seen.nonce,
                    epoch: seen.epoch,
                }),
            };
        }
        match seen.state {
            State::TakenBy(h) => fenced(Fence::TakenBy(h)),
            State::Free => fenced(Fence::Freed),
            // An older epoch than ours: a late write of an earlier owner of this index (deposed
            // before we claimed it, its write decided before that), never a newer claim (a claim
            // writes the epoch it read plus one). Ours again by rewriting it; the late writer's
            // next check finds our record and stops.
            State::Joining | State::Live if epoch_older(seen.epoch, self.mine.epoch) => {
                self.write_mine(now_ms)
            }
            State::Joining
                if now_ms.saturating_sub(self.last_landed) < self.timing.reassert_ms() =>
            {
                // A claim by a host that probed before our claim landed and was paused past `P`:
                // it is still watching (module docs), our rewrite lands in its watch.
                self.write_mine(now_ms)
            }
            State::Joining | State::Live => fenced(Fence::Replaced {
                nonce: seen.nonce,
                epoch: seen.epoch,
            }),
        }
    }

    fn write_mine(&mut self, now_ms: u64) -> Result<(), HostsError> {
        self.table.write(self.c, self.index, &self.mine)?;
        self.last_landed = now_ms;
        Ok(())
    }

    /// One heartbeat tick at `now_ms` (taken before the call's reads): the fence check, then the
    /// counter advanced and written back (with the current ballot).
    ///
    /// # Errors
    /// As [`Membership::check_fenced`].
    pub fn beat(&mut self, now_ms: u64) -> Result<u64, HostsError> {
        self.check_fenced(now_ms)?;
        self.mine.heartbeat = self.mine.heartbeat.wrapping_add(1);
        self.write_mine(now_ms)?;
        self.retake();
        Ok(self.mine.heartbeat)
    }

    /// The registers we took over, re-read: one that no longer reads as the TAKEN record we
    /// wrote but as LIVE or JOINING at an epoch *not newer* than ours — its deposed owner's
    /// write, decided before our takeover landed and landing after it (an older epoch), or a
    /// joiner's claim that read the register just before our takeover landed (our epoch: both
    /// wrote the epoch they read plus one) — or unreadable (such a write torn against ours),
    /// gets our record again. The deposed owner's next fence check then fails, and the joiner's
    /// watch sees our record and loses: we re-read at every beat, so our rewrite lands within
    /// `H + 2P < C` of its claim (the owner's re-assertion argument). A newer epoch, or a state we
    /// did not write, is not ours any more (another taker's, or freed): forgotten.
    fn retake(&mut self) {
        let (table, c) = (self.table, self.c);
        self.taken.retain(|&(x, ours)| match table.read(c, x) {
            Ok(seen) if seen == ours => true,
            Ok(seen)
                if matches!(seen.state, State::Live | State::Joining)
                    && !epoch_older(ours.epoch, seen.epoch) =>
            {
                // Best effort: a failed write is retried at the next beat.
                let _ = table.write(c, x, &ours);
                true
            }
            Ok(_) => false,
            Err(_) => {
                let _ = table.write(c, x, &ours);
                true
            }
        });
    }

    /// The registers this host has taken over and not freed.
    pub fn taken(&self) -> impl Iterator<Item = usize> + '_ {
        self.taken.iter().map(|&(x, _)| x)
    }

    /// Sets the ballot word published by the next [`Membership::beat`].
    pub fn set_ballot(&mut self, ballot: u64) {
        self.mine.ballot = ballot;
    }

    /// Whether our last write is younger than the self-lease `S = L − P` at `now_ms`.
    ///
    /// # Errors
    /// [`HostsError::Fenced`] with [`Fence::Expired`] when it is not.
    pub fn check_self_lease(&self, now_ms: u64) -> Result<(), HostsError> {
        let silent_ms = now_ms.saturating_sub(self.last_landed);
        if silent_ms > self.timing.self_lease_ms() {
            return Err(HostsError::Fenced {
                index: self.index,
                why: Fence::Expired { silent_ms },
            });
        }
        Ok(())
    }

    /// Takes register `x` over (the leader, for a host it judged dead): after our own fence
    /// check, writes `epoch + 1, TAKEN(us)` over what `x` holds. Also writes TAKEN again over a
    /// late write of `x`'s old owner (an older epoch than the one we wrote). Returns what it
    /// wrote.
    ///
    /// # Errors
    /// Our own [`HostsError::Fenced`]; [`HostsError::IndexOutOfRange`]; read errors of `x`.
    pub fn take_over(&mut self, x: usize, now_ms: u64) -> Result<RegisterState, HostsError> {
        if x == self.index {
            return Err(HostsError::IndexOutOfRange {
                index: x,
                len: self.table.len(),
            });
        }
        self.check_fenced(now_ms)?;
        // Also a register left unreadable (its writer killed mid-write leaves the seq odd for
        // ever; a torn or corrupt body): else its index and partition could never be recovered
        // (review M1). A fresh nonce: the record we write is ours, whatever it was based on.
        let prev = self.table.read_for_takeover(self.c, x)?;
        let taken = RegisterState {
            nonce: fresh_nonce(),
            epoch: prev.epoch.wrapping_add(1),
            state: State::TakenBy(self.index),
            ballot: prev.ballot & super::lease::TERM_MASK,
            ..prev
        };
        self.table.write(self.c, x, &taken)?;
        self.taken.retain(|&(y, _)| y != x);
        self.taken.push((x, taken));
        Ok(taken)
    }

    /// Frees register `x`, which we took over (once its partition is recovered).
    ///
    /// # Errors
    /// [`HostsError::Fenced`] (ours), or `x` not TAKEN by us: [`HostsError::NotOurs`].
    pub fn free_taken(&mut self, x: usize, now_ms: u64) -> Result<(), HostsError> {
        self.check_fenced(now_ms)?;
        // Ours only if it reads as our TAKEN record; one left torn by our own write dying is
        // taken over again first (`take_over` accepts it).
        let prev = self.table.read(self.c, x)?;
        if prev.state != State::TakenBy(self.index) {
            return Err(HostsError::NotOurs { index: x });
        }
        let free = RegisterState {
            epoch: prev.epoch,
            ..RegisterState::FREE
        };
        // An all-zero body reads as FREE epoch 0; a freed register keeps its epoch so the next
        // claim bumps past it (the encoding's check word makes it non-zero).
        self.table.write(self.c, x, &free)?;
        self.taken.retain(|&(y, _)| y != x);
        Ok(())
    }
}
