//! A cross-host message ring: host `s` sends fixed-size messages to host `d` through memory
//! without cross-host coherence and without any cross-host read-modify-write.
//!
//! # Problem
//!
//! Protocol v2 (`docs/protocol-v2.md`) lets hosts affect each other only through lines with one
//! writer host. A queue needs two moving words — where producers write (`head`) and how far the
//! consumer has read (`tail`) — and cells in between; each must have one writer host, and every
//! cross-host read may be stale (a line in the reader's cache, a stale prefetch) or torn (a
//! line written back spontaneously while its writer is half-way through it). Several processes
//! of `s` may produce at once; a producer may die, or pause for a long time, after it claimed a
//! cell and before it published it.
//!
//! # Layout
//!
//! One ring `Q[s][d]` is [`Ring::words_needed`]`(capacity)` words, 128-byte aligned:
//!
//! | words | block | writer |
//! |---|---|---|
//! | 0..16 | producer block: `head` (next position to claim), `late` (drops) | processes of `s` |
//! | 16..32 | consumer block: `tail` (next position to read), `holes`, `corrupt` | the consumer on `d` |
//! | 32.. | `capacity` cells of 8 words (one 64-byte line each) | processes of `s` |
//!
//! The two blocks are 128 bytes each (adjacent-line prefetch). A cell is
//! `[kind, payload × 5, check, seq]` (the seq last, see below). Position `p` (a `u64` that only
//! grows) lives in cell `p % capacity`; its lap is `p / capacity`. The cell's `seq` word says
//! which position's message it holds and in which state:
//!
//! * `0`: never written;
//! * `2(p+1)`: **published** position `p`;
//! * `2(p+1) + 1`: a producer of host `s` is **writing** position `p`;
//!
//! any other value (`1`, a position ≥ 2⁶⁰, one of another cell's index) is corrupt. `check` is a
//! 64-bit mix of `(seq, kind, payload)` ([`cell_checksum`]).
//!
//! # Invariants
//!
//! 1. Only processes of `s` store to the producer block and the cells; only the consumer on `d`
//!    stores to the consumer block. Read-modify-writes (`head`'s claim CAS, a cell's `seq` CAS)
//!    are made only by processes of `s`, on words only they write: they are host-local, which
//!    the host's own caches make sound.
//! 2. `tail ≤ head`, and `head - tail ≤ capacity` as the producers see it: a position is
//!    claimed only when the cell's previous lap has been read or skipped.
//! 3. A cell's `seq` goes to *writing p* only by a producer that claimed `p`, and to *published
//!    p* only from *writing p* (CAS, host-local), after the body is written back.
//!
//! # Protocol
//!
//! Producer ([`Ring::claim`], [`Claim::publish`]; [`Ring::send`] is both):
//!
//! 1. Evict `tail` and load it (Acquire); load `head`. `head - tail ≥ capacity` → [`Full`].
//! 2. CAS `head` → `head + 1` (host-local; retry on failure, bounded); write back the producer
//!    block, so the consumer can tell a claimed position from an empty ring.
//! 3. Take the cell: CAS its `seq` from a state of an earlier position of the same cell (never
//!    written, published, or *writing* — the last is a producer of an earlier lap that was
//!    skipped, see below) to *writing p*. A state of a later position means this producer is
//!    itself late: [`Skipped`].
//! 4. The seq still *writing p* (a host-local load; else the next lap took the cell while this
//!    producer paused: [`Skipped`]), store `kind`, the payload and `check`; write back the cell
//!    line (`clwb` + `sfence`).
//! 5. Evict `tail`: past `p` → the consumer skipped this position; do not publish, [`Skipped`].
//! 6. CAS `seq` *writing p* → *published p* (Release); failure → another producer took the cell
//!    over, [`Skipped`]. Write back the cell line.
//!
//! Consumer ([`Consumer::try_recv`]; one process on `d` at a time, which the caller guarantees,
//! e.g. with a host-local lease; its progress is the region's `tail`, so a successor resumes):
//!
//! 1. Evict cell `tail % capacity`, load `seq` (Acquire). *Published tail* → load the body; a
//!    matching `check` → advance: `tail += 1` (Release), write back the consumer block, deliver.
//! 2. Otherwise evict `head` and load it: `head == tail` → the ring is empty. `head > tail` →
//!    the position is claimed and not (validly) published: a **pending** cell. A cell pending
//!    for [`Consumer::hole_timeout`] on the consumer's monotonic clock (from when this consumer
//!    first saw it pending) is **skipped**: `tail += 1`, `holes += 1` (or `corrupt += 1` when a
//!    published seq carried a bad checksum), written back.
//! 3. A `seq` no producer writes for this position (corrupt, or of a lap ahead of `tail`) is
//!    skipped at once and counted in `corrupt` if the position is claimed (`head > tail`); the
//!    call returns [`CorruptCell`]. An unclaimed position is left alone (the ring reads as
//!    empty): its producer takes the cell over the bad seq (it is the cells' only writer host
//!    and the consumer is done with the previous lap), and the checksum still guards the body.
//!
//! # Why body, write back, then seq (last word, loaded first) suffices — and the checksum
//!
//! How lines move. Memory's copy of a line changes only by write-backs; a cache's copy (a host's
//! view) is refilled from memory by evictions, prefetches and spontaneous refills. On hardware a
//! write-back or a fill moves the 64-byte line at once. In the emulator every transfer holds the
//! line's lock (so transfers of one line are serialised) and copies words 0 to 7 *in order*,
//! while the host's processes load and store the view without the lock. A write-back therefore
//! stores into memory, word by word, whatever the view held when that word was copied; a refill
//! replaces the view's words one by one while a reader may be loading them.
//!
//! * **Writer.** Every body store of position `p` precedes the explicit write-back of step 4,
//!   and that write-back (whole, under the lock, after any transfer in flight) completes with an
//!   `sfence` before the seq store of step 6. From then on memory holds `p`'s final body words,
//!   and every later write-back copies them again: memory never holds *published p* beside a
//!   body word of another message. (Without the step-4 write-back a spontaneous write-back
//!   copying word 1 before the body store and word 7 after the seq store would put exactly that
//!   in memory.) A write-back before step 6 carries an older seq — *writing p*, or a value
//!   naming another position — which no consumer at `p` accepts.
//! * **Body stability.** The next lap's producer stores into the cell only after it read
//!   `tail > p`, i.e. after the consumer finished reading `p` (its Release store of `tail`
//!   follows its loads). So while the consumer is at `p`, every copy of the line in memory that
//!   shows *published p* holds `p`'s body.
//! * **Reader.** The seq is the line's last word and the consumer loads it first. If that load
//!   returns *published p*, the word came from a refill (the explicit evict's, or a spontaneous
//!   one) that copied it last, after copying words 0..6 from a memory line that already showed
//!   *published p*, i.e. `p`'s body. Each later body load returns that refill's word or a later
//!   refill's, and later refills copy memory that still holds `p`'s body (stability). A stale
//!   line from before the evict is gone (the evict refilled it under the lock). With the seq in
//!   word 0 instead, a reader could load the new seq from a refill in flight and then body words
//!   the refill had not reached yet — the previous lap's. On hardware, where a fill installs the
//!   line whole, the position does not matter; the layout is right for both.
//!
//! The order alone is therefore enough while every producer of a cell is its position's only
//! writer. Two things break that, and the checksum over `(seq, kind, payload)` catches both:
//!
//! * **A late producer.** A producer paused (not dead) for longer than the hole timeout between
//!   its step 3 and the end of its step 4 resumes after the consumer skipped its position and
//!   a producer of the next lap took the cell. Its seq CAS (step 6) fails, so it never publishes
//!   into the next lap's cell; but nothing can stop its remaining body stores, which may land in
//!   the next lap's message. That message then fails its checksum (its seq names the next lap,
//!   its body is partly another message's): the consumer treats the cell as pending and, after
//!   the timeout, skips it and counts it as `corrupt`. No mix of two laps is ever delivered.
//! * **Corruption**: any other bit in the cell line, or a line torn by a bug in a transfer.
//!
//! # What is lost, and how a caller notices
//!
//! A skipped position's message is lost: that of a producer that died (or stopped) between
//! claim and publish, of one that paused past the timeout (it gets [`Skipped`] when it notices in
//! steps 3, 5 or 6, and counts in `late`; if the consumer skips it between its steps 5 and 6, it
//! returns `Ok` and the message is lost all the same), and a next-lap message damaged by such a
//! producer. Every loss shows on the consumer's side as a gap in [`Message::position`] and in
//! [`ConsumerStats`] (`holes`, `corrupt`, kept in the region so a successor consumer sees them);
//! a caller for which a lost message matters rescans the state the messages describe. Each hole
//! delays the messages behind it by up to one timeout (plus the caller's polling interval).
//!
//! # Orderings
//!
//! With `hardware` coherence the write-backs and evicts are no-ops and this is a bounded MPSC
//! queue: the Release publish CAS pairs with the consumer's Acquire load of `seq` (the body loads
//! see the body); the consumer's Release store of `tail` pairs with the producer's Acquire load of
//! `tail` (the next lap's body stores follow the consumer's loads of this lap). `head` orders
//! nothing (it is a counter for claims). Without coherence the write-backs (`clwb` + `sfence`) and
//! evicts (`clflushopt` between `mfence`s) carry these orders to memory as argued above.
//!
//! [`Full`]: RingError::Full
//! [`Skipped`]: RingError::Skipped
//! [`CorruptCell`]: RingError::CorruptCell

use std::time::{Duration, Instant};

use crate::coherence::Coherence;
use crate::sync::{spin_hint, AtomicU64, Ordering};

use super::lines::{evict, write_back};

/// Payload words of a message.
pub const PAYLOAD_WORDS: usize = 5;
/// Words of a cell: `seq`, `kind`, the payload, `check` (one 64-byte line).
pub const CELL_WORDS: usize = 8;
/// Words of each of the producer and consumer blocks (128 bytes).
pub const BLOCK_WORDS: usize = 16;
/// The largest capacity a ring may have (cells).
pub const MAX_CAPACITY: usize = 1 << 20;
/// Positions at or above this are corrupt (a ring sending a billion messages a second reaches it
/// after 36 years).
pub const MAX_POSITION: u64 = 1 << 60;
/// Host-local CAS attempts a producer makes (claim, cell take) before [`RingError::Contended`].
pub const CAS_ATTEMPTS: u32 = 1024;
/// The hole timeout of [`Consumer::new`]: far longer than a live producer needs between claim
/// and publish (microseconds), short enough that a dead producer delays the ring little.
pub const DEFAULT_HOLE_TIMEOUT: Duration = Duration::from_secs(1);

// Word indices in the blocks.
const HEAD: usize = 0;
const LATE: usize = 1;
const TAIL: usize = 0;
const HOLES: usize = 1;
const CORRUPT: usize = 2;
// Word indices in a cell. `seq` is the line's last word: the emulator copies a line's words in
// order, so a fill that has reached `seq` has filled the body already (see the module doc).
const KIND: usize = 0;
const PAYLOAD: usize = 1;
const CHECK: usize = PAYLOAD + PAYLOAD_WORDS;
const SEQ: usize = CELL_WORDS - 1;
const _: () = assert!(CHECK + 1 == SEQ);
const _: () = assert!(CELL_WORDS * 8 == 64 && BLOCK_WORDS * 8 == 128);

/// Why a ring operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Every cell holds a message the consumer has not read (as far as the producer can see).
    #[error("ring full: head {head}, tail {tail}")]
    Full { head: u64, tail: u64 },
    /// The host-local CAS lost [`CAS_ATTEMPTS`] times in a row to other producers.
    #[error("ring contended: {CAS_ATTEMPTS} claim attempts lost")]
    Contended,
    /// The consumer skipped this position before it was published (the producer was late, see
    /// the module doc); the message was not delivered and is counted in the producer's `late`.
    #[error("position {position} was skipped by the consumer before it was published")]
    Skipped { position: u64 },
    /// A cell's seq is no state a producer writes for this position; the consumer skipped it.
    #[error("cell of position {position} holds corrupt seq {seq:#x}")]
    CorruptCell { position: u64, seq: u64 },
    /// `head` and `tail` are inconsistent (`tail > head`, or beyond [`MAX_POSITION`]).
    #[error("ring counters corrupt: head {head}, tail {tail}")]
    CorruptCounters { head: u64, tail: u64 },
    /// The words given for a ring do not make one (`capacity` 0 or above [`MAX_CAPACITY`], the
    /// wrong number of words, or not 128-byte aligned).
    #[error("bad ring layout: capacity {capacity}, {words} words")]
    BadLayout { capacity: usize, words: usize },
}

/// A received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its position in the ring: consecutive unless positions were skipped.
    pub position: u64,
    pub kind: u64,
    pub payload: [u64; PAYLOAD_WORDS],
}

/// The consumer's counters, as its block in the region holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// The next position to read.
    pub tail: u64,
    /// Positions skipped because they stayed claimed and unpublished for the hole timeout.
    pub holes: u64,
    /// Positions skipped because their cell failed validation (bad checksum, corrupt seq).
    pub corrupt: u64,
}

impl ConsumerStats {
    /// All positions skipped (lost messages).
    pub fn skipped(&self) -> u64 {
        self.holes + self.corrupt
    }
}

/// A cell's state as its seq word encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CellState {
    Never,
    Writing(u64),
    Published(u64),
}

fn published(p: u64) -> u64 {
    (p + 1) << 1
}

fn writing(p: u64) -> u64 {
    ((p + 1) << 1) | 1
}

/// The state `seq` encodes, if it is one of `index`'s of a ring of `capacity` cells.
fn decode(seq: u64, index: u64, capacity: u64) -> Option<CellState> {
    if seq == 0 {
        return Some(CellState::Never);
    }
    let p = (seq >> 1).checked_sub(1)?;
    if p >= MAX_POSITION || p % capacity != index {
        return None;
    }
    Some(if seq & 1 == 1 {
        CellState::Writing(p)
    } else {
        CellState::Published(p)
    })
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: every input bit affects every output bit.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `check` word of a cell holding `(seq, kind, payload)`.
pub fn cell_checksum(seq: u64, kind: u64, payload: &[u64; PAYLOAD_WORDS]) -> u64 {
    let mut h = mix(seq ^ 0x6a09_e667_f3bc_c908);
    for w in std::iter::once(kind).chain(payload.iter().copied()) {
        h = mix(h.rotate_left(23) ^ w);
    }
    h
}

/// A view of one ring's words in the region (as this process maps them).
#[derive(Clone, Copy)]
pub struct Ring<'a> {
    producer: &'a [AtomicU64],
    consumer: &'a [AtomicU64],
    cells: &'a [AtomicU64],
    capacity: u64,
}

impl<'a> Ring<'a> {
    /// Words a ring of `capacity` cells occupies.
    pub const fn words_needed(capacity: usize) -> usize {
        2 * BLOCK_WORDS + capacity * CELL_WORDS
    }

    /// The ring of `capacity` cells in `words` (exactly [`Ring::words_needed`] words, 128-byte
    /// aligned). All-zero words are an empty ring.
    ///
    /// # Errors
    /// [`RingError::BadLayout`] when they do not make one.
    pub fn new(words: &'a [AtomicU64], capacity: usize) -> Result<Ring<'a>, RingError> {
        let bad = RingError::BadLayout {
            capacity,
            words: words.len(),
        };
        if capacity == 0 || capacity > MAX_CAPACITY || words.len() != Self::words_needed(capacity) {
            return Err(bad);
        }
        // Under loom the words are instrumented heap objects of another size: no layout.
        #[cfg(not(loom))]
        if words.as_ptr() as usize % 128 != 0 {
            return Err(bad);
        }
        let (producer, rest) = words.split_at(BLOCK_WORDS);
        let (consumer, cells) = rest.split_at(BLOCK_WORDS);
        Ok(Ring {
            producer,
            consumer,
            cells,
            capacity: capacity as u64,
        })
    }

    /// Number of cells.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn cell(&self, position: u64) -> &'a [AtomicU64] {
        // `capacity` ≤ MAX_CAPACITY, so the index fits a usize and the range is in `cells`.
        let i = (position % self.capacity) as usize * CELL_WORDS;
        &self.cells[i..i + CELL_WORDS]
    }

    /// The consumer's `tail` as memory holds it (evicted first): what a producer may rely on.
    fn read_tail(&self, c: &Coherence) -> u64 {
        evict(c, &self.consumer[..1]);
        // Acquire: pairs with the consumer's Release store of `tail` in `advance`: its loads of
        // the cells below `tail` happened before, so a new lap's stores into them follow.
        self.consumer[TAIL].load(Ordering::Acquire)
    }

    /// Sends one message: [`claim`](Self::claim), then [`publish`](Claim::publish). Returns its
    /// position.
    ///
    /// # Errors
    /// As `claim` and `publish`.
    pub fn send(
        &self,
        c: &Coherence,
        kind: u64,
        payload: &[u64; PAYLOAD_WORDS],
    ) -> Result<u64, RingError> {
        self.claim(c)?.publish(c, kind, payload)
    }

    /// Producer steps 1–3: claims the next position and takes its cell. Any process of the
    /// source host may call it, concurrently with others. A claim dropped without
    /// [`publish`](Claim::publish) (or a process that dies holding one) leaves a hole that the
    /// consumer skips after its timeout.
    ///
    /// # Errors
    /// [`RingError::Full`]; [`RingError::Contended`] (when lost at the cell's take, after the
    /// claim, the position is a hole); [`RingError::CorruptCounters`];
    /// [`RingError::Skipped`] (this producer paused so long after claiming that the consumer
    /// skipped the position and another producer took the cell).
    pub fn claim(&self, c: &Coherence) -> Result<Claim<'a>, RingError> {
        let head_word = &self.producer[HEAD];
        let mut position = None;
        for _ in 0..CAS_ATTEMPTS {
            // `tail` first: it never passes the `head` loaded after it (invariant 2), so a larger
            // one is corrupt.
            let tail = self.read_tail(c);
            let head = head_word.load(Ordering::Relaxed);
            if tail > head || head >= MAX_POSITION {
                return Err(RingError::CorruptCounters { head, tail });
            }
            if head - tail >= self.capacity {
                return Err(RingError::Full { head, tail });
            }
            // Relaxed: the claim only needs uniqueness; the cell's take below orders the rest.
            if head_word
                .compare_exchange(head, head + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                position = Some(head);
                break;
            }
            spin_hint();
        }
        let p = position.ok_or(RingError::Contended)?;
        write_back(c, &self.producer[..1]);

        let cell = self.cell(p);
        let index = p % self.capacity;
        let mut seq = cell[SEQ].load(Ordering::Relaxed);
        for _ in 0..CAS_ATTEMPTS {
            let earlier = match decode(seq, index, self.capacity) {
                // A bad seq (a flipped or stray word): the consumer is done with the cell's
                // previous lap (the `tail` check above) and this host is the cells' only writer,
                // so the cell is ours to take over it; the checksum still guards the body.
                None => true,
                Some(CellState::Never) => true,
                Some(CellState::Writing(q) | CellState::Published(q)) => q < p,
            };
            if !earlier {
                return Err(self.late(p));
            }
            // Relaxed: the cell is this host's alone and the consumer has read its previous lap
            // (the Acquire load of `tail` above orders that); the publish CAS is the Release.
            match cell[SEQ].compare_exchange(seq, writing(p), Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Claim {
                        ring: *self,
                        position: p,
                    })
                }
                Err(now) => seq = now,
            }
            spin_hint();
        }
        Err(RingError::Contended)
    }

    /// Counts a late drop of position `p` and returns its error.
    fn late(&self, p: u64) -> RingError {
        // A host-local counter (only this host's processes touch it): no write-back needed.
        self.producer[LATE].fetch_add(1, Ordering::Relaxed);
        RingError::Skipped { position: p }
    }

    /// Producer-side counter: messages this host's producers dropped because they were late.
    pub fn late_drops(&self) -> u64 {
        self.producer[LATE].load(Ordering::Relaxed)
    }

    /// The consumer's counters, as memory holds them (evicted first).
    pub fn consumer_stats(&self, c: &Coherence) -> ConsumerStats {
        evict(c, &self.consumer[..CORRUPT + 1]);
        ConsumerStats {
            tail: self.consumer[TAIL].load(Ordering::Relaxed),
            holes: self.consumer[HOLES].load(Ordering::Relaxed),
            corrupt: self.consumer[CORRUPT].load(Ordering::Relaxed),
        }
    }
}

/// A claimed position whose cell this producer holds (state *writing*).
#[must_use = "a claim not published is a hole the consumer waits out"]
pub struct Claim<'a> {
    ring: Ring<'a>,
    position: u64,
}

impl Claim<'_> {
    /// The claimed position.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Producer steps 4–6: writes the message into the cell and publishes it. Returns the
    /// position.
    ///
    /// # Errors
    /// [`RingError::Skipped`] when the consumer skipped the position first (the message is not
    /// delivered; counted in the producer block's `late`).
    pub fn publish(
        self,
        c: &Coherence,
        kind: u64,
        payload: &[u64; PAYLOAD_WORDS],
    ) -> Result<u64, RingError> {
        let (ring, p) = (self.ring, self.position);
        let cell = ring.cell(p);
        let seq = published(p);
        // A producer of the next lap took the cell (this one was skipped while it paused): keep
        // out of its message. (A pause between this check and the stores below is the window
        // the checksum covers.)
        if cell[SEQ].load(Ordering::Relaxed) != writing(p) {
            return Err(ring.late(p));
        }
        cell[KIND].store(kind, Ordering::Relaxed);
        for (w, &v) in cell[PAYLOAD..CHECK].iter().zip(payload) {
            w.store(v, Ordering::Relaxed);
        }
        cell[CHECK].store(cell_checksum(seq, kind, payload), Ordering::Relaxed);
        // The body reaches memory (and the sfence completes) before the seq store below.
        write_back(c, cell);
        if ring.read_tail(c) > p {
            return Err(ring.late(p));
        }
        // Release: pairs with the consumer's Acquire load of `seq` in `try_recv_at`; publishes
        // the body stored above.
        match cell[SEQ].compare_exchange(writing(p), seq, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => {
                write_back(c, cell);
                Ok(p)
            }
            Err(_) => Err(ring.late(p)),
        }
    }
}

/// Why the cell at `tail` is not delivered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// Claimed, not published.
    Unpublished,
    /// Published with a body that fails its checksum.
    BadChecksum,
}

/// The ring's consumer on the destination host. One at a time per ring: the caller guarantees
/// it (e.g. with a host-local lease); two consumers would deliver a message twice and skip
/// positions the other one is reading.
pub struct Consumer<'a> {
    ring: Ring<'a>,
    tail: u64,
    hole_timeout: Duration,
    /// The position found pending, since when (this process's monotonic clock), and why.
    pending: Option<(u64, Instant, Pending)>,
    /// Reads of a published seq whose body failed its checksum (see [`Self::mismatches`]).
    mismatches: u64,
}

impl<'a> Consumer<'a> {
    /// The consumer of `ring`, resuming at the region's `tail` (evicted first: the consumer
    /// may start on another host than the previous one, e.g. a taker of a dead destination
    /// host, whose cached `tail` would be stale — and a stale `tail` written back would move
    /// memory's `tail` backwards under producers). A position claimed and not published for
    /// `hole_timeout` is skipped.
    ///
    /// # Errors
    /// [`RingError::CorruptCounters`] when `tail` is beyond [`MAX_POSITION`] (with
    /// `head: u64::MAX`, not read) or beyond `head`.
    pub fn new(
        c: &Coherence,
        ring: Ring<'a>,
        hole_timeout: Duration,
    ) -> Result<Consumer<'a>, RingError> {
        evict(c, &ring.consumer[..CORRUPT + 1]);
        // Acquire: pairs with a previous consumer's Release store in `advance` (a process of
        // this host: the line is this host's, coherent among its processes; another host's
        // store reached memory by its write-back, which the evict above lets us see).
        let tail = ring.consumer[TAIL].load(Ordering::Acquire);
        if tail >= MAX_POSITION {
            return Err(RingError::CorruptCounters {
                head: u64::MAX,
                tail,
            });
        }
        evict(c, &ring.producer[..1]);
        let head = ring.producer[HEAD].load(Ordering::Relaxed);
        if head < tail {
            return Err(RingError::CorruptCounters { head, tail });
        }
        Ok(Consumer {
            ring,
            tail,
            hole_timeout,
            pending: None,
            mismatches: 0,
        })
    }

    /// The hole timeout.
    pub fn hole_timeout(&self) -> Duration {
        self.hole_timeout
    }

    /// The next position to read.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// How many times this consumer read a published seq with a body that failed its checksum
    /// (each read counts; the cell is retried until the hole timeout). Zero unless a late
    /// producer wrote into a cell of the next lap, or the cell was corrupted: the write order
    /// alone keeps torn lines from showing (module doc), which the tests check with this.
    pub fn mismatches(&self) -> u64 {
        self.mismatches
    }

    /// The counters (this host's own line: no evict).
    pub fn stats(&self) -> ConsumerStats {
        let w = self.ring.consumer;
        ConsumerStats {
            tail: w[TAIL].load(Ordering::Relaxed),
            holes: w[HOLES].load(Ordering::Relaxed),
            corrupt: w[CORRUPT].load(Ordering::Relaxed),
        }
    }

    /// [`try_recv_at`](Self::try_recv_at) now.
    ///
    /// # Errors
    /// As `try_recv_at`.
    pub fn try_recv(&mut self, c: &Coherence) -> Result<Option<Message>, RingError> {
        self.try_recv_at(c, Instant::now())
    }

    /// Polls [`try_recv`](Self::try_recv) until a message arrives or `wait` has passed.
    ///
    /// # Errors
    /// As `try_recv_at`.
    pub fn recv(&mut self, c: &Coherence, wait: Duration) -> Result<Option<Message>, RingError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(m) = self.try_recv(c)? {
                return Ok(Some(m));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::yield_now();
        }
    }

    /// The next message, or `None` if there is none yet (the ring is empty, or the next position
    /// is pending and has not been for the hole timeout at `now`). Skips the positions whose
    /// timeout has passed (at most `capacity` in one call).
    ///
    /// # Errors
    /// [`RingError::CorruptCell`] (that position was skipped; call again);
    /// [`RingError::CorruptCounters`] when `head` is below `tail`.
    pub fn try_recv_at(
        &mut self,
        c: &Coherence,
        now: Instant,
    ) -> Result<Option<Message>, RingError> {
        let ring = self.ring;
        for _ in 0..ring.capacity {
            let t = self.tail;
            let cell = ring.cell(t);
            evict(c, cell);
            // Acquire: pairs with the producer's Release publish CAS in `Claim::publish`; the
            // body loads below see its body.
            let seq = cell[SEQ].load(Ordering::Acquire);
            let pending = match decode(seq, t % ring.capacity, ring.capacity) {
                Some(CellState::Published(q)) if q == t => {
                    let kind = cell[KIND].load(Ordering::Relaxed);
                    let mut payload = [0; PAYLOAD_WORDS];
                    for (o, w) in payload.iter_mut().zip(&cell[PAYLOAD..CHECK]) {
                        *o = w.load(Ordering::Relaxed);
                    }
                    if cell[CHECK].load(Ordering::Relaxed) == cell_checksum(seq, kind, &payload) {
                        self.advance(c, None);
                        return Ok(Some(Message {
                            position: t,
                            kind,
                            payload,
                        }));
                    }
                    self.mismatches += 1;
                    Pending::BadChecksum
                }
                Some(CellState::Never) => Pending::Unpublished,
                Some(CellState::Writing(q) | CellState::Published(q)) if q <= t => {
                    Pending::Unpublished
                }
                // Corrupt, or a lap ahead of `tail` (which no producer can reach before the
                // consumer passed `t`): never deliverable — but only a claimed position is
                // skipped. An unclaimed one (`head == t`: a word flipped in an idle cell) is left
                // for its producer, which takes the cell over its bad seq; skipping it would put
                // `tail` past `head`, which both sides refuse from then on.
                _ => {
                    if self.read_head(c, t)? == t {
                        self.pending = None;
                        return Ok(None);
                    }
                    self.advance(c, Some(CORRUPT));
                    return Err(RingError::CorruptCell { position: t, seq });
                }
            };
            if pending == Pending::Unpublished && self.read_head(c, t)? == t {
                self.pending = None;
                return Ok(None);
            }
            match self.pending {
                Some((q, since, _)) if q == t => {
                    if now.saturating_duration_since(since) < self.hole_timeout {
                        self.pending = Some((q, since, pending));
                        return Ok(None);
                    }
                    let counter = match pending {
                        Pending::Unpublished => HOLES,
                        Pending::BadChecksum => CORRUPT,
                    };
                    self.advance(c, Some(counter));
                }
                _ => {
                    self.pending = Some((t, now, pending));
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// The producers' `head` (evicted first), checked against our tail `t`: never below it,
    /// never more than a ring ahead of it (invariant 2), never past the position range.
    fn read_head(&self, c: &Coherence, t: u64) -> Result<u64, RingError> {
        let ring = self.ring;
        evict(c, &ring.producer[..1]);
        let head = ring.producer[HEAD].load(Ordering::Relaxed);
        if head < t || head - t > ring.capacity || head >= MAX_POSITION {
            return Err(RingError::CorruptCounters { head, tail: t });
        }
        Ok(head)
    }

    /// Moves past position `tail` (counting it in `skipped` when it is skipped), in memory.
    fn advance(&mut self, c: &Coherence, skipped: Option<usize>) {
        let w = self.ring.consumer;
        if let Some(counter) = skipped {
            // Wrapping: a region word, possibly corrupt (u64::MAX must not panic).
            w[counter].store(
                w[counter].load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
        self.tail += 1;
        self.pending = None;
        // Release: pairs with the producer's Acquire load of `tail` in `read_tail`: the loads of
        // this cell above happen before a new lap's stores into it.
        w[TAIL].store(self.tail, Ordering::Release);
        write_back(c, &w[..CORRUPT + 1]);
    }
}
