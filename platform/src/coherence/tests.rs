//! Unit tests: byte-exact copies for every strategy this CPU supports, line coverage of every
//! write back (through the `counting` recorder), the overrides, and the emulation.

use std::sync::Arc;

use super::*;

/// Lengths the exhaustive sweep covers: every one in `0..=MAX_SWEEP_LEN`.
const MAX_SWEEP_LEN: usize = 4160;
/// Untouched bytes checked on each side of a destination window.
const GUARD: usize = 128;
/// The destination's filler; no source pattern byte has this value.
const FILL: u8 = 0;

/// A 64-byte-aligned heap buffer, used only through raw pointers.
struct Buffer {
    lines: Vec<Line>,
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

impl Buffer {
    fn new(len: usize, fill: u8) -> Buffer {
        Buffer {
            lines: vec![Line([fill; 64]); len.div_ceil(64)],
        }
    }

    fn ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr().cast::<u8>()
    }

    fn len(&self) -> usize {
        self.lines.len() * 64
    }
}

/// Two source patterns that differ from each other and from [`FILL`] at every index, and vary
/// inside a line (so that a copy from the wrong offset shows).
fn pattern(i: usize, which: u8) -> u8 {
    let h = (i as u32).wrapping_mul(0x9e37_79b9).rotate_left(13) ^ (i as u32 >> 5);
    let low = 1 + (h % 127) as u8; // 1..=127
    if which == 0 {
        low
    } else {
        low + 127 // 128..=254
    }
}

/// Every strategy this CPU can run: each write-back instruction with each non-temporal kernel
/// (including none of either). The threshold is `threshold`.
fn strategies(threshold: usize) -> Vec<CopyStrategy> {
    let mut all = Vec::new();
    for flush in [
        FlushInstr::Clwb,
        FlushInstr::Clflushopt,
        FlushInstr::Clflush,
        FlushInstr::None,
    ] {
        for nt in [
            NtStores::Avx512,
            NtStores::Avx2,
            NtStores::Sse2,
            NtStores::None,
        ] {
            let s = CopyStrategy {
                flush,
                invalidate: FlushInstr::Clflushopt,
                nt,
                nt_threshold: threshold,
            }
            .supported();
            if s.flush == flush && s.nt == nt && !all.contains(&s) {
                all.push(s);
            }
        }
    }
    all
}

/// Which (length, source offset, destination offset) triples a [`sweep`] copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// Every length with every pair of offsets: `(max_len + 1) * 64 * 64` copies.
    Every,
    /// Every (length, destination offset) pair once, with the source offset
    /// `(len + dst_off) % 64`: every pair of the three dimensions occurs, each pair of offsets
    /// with 1/64 of the lengths. 64 times cheaper than [`Coverage::Every`].
    Pairs,
}

static FILLED: [u8; GUARD] = [FILL; GUARD];

/// Copies lengths `0..=max_len` at offsets `0..64` with `c`, as `coverage` says, checking each
/// destination window byte-exact and `GUARD` bytes on each side untouched.
///
/// Cheap by construction: one source and one destination buffer; the destination is reset once
/// per offset pair, not once per copy. For a pair of offsets the lengths grow, and successive
/// copies alternate between two patterns that differ at every index (and from `FILL`), so any
/// byte a copy fails to write still holds the other pattern (or `FILL` past the previous end)
/// and shows. All checks are `memcmp`s.
fn sweep(c: &Coherence, max_len: usize, coverage: Coverage) {
    sweep_with(
        &c.strategy().to_string(),
        max_len,
        coverage,
        // SAFETY: `sweep_with` passes valid, disjoint ranges.
        |d, s, len| unsafe { c.memory_copy(d, s, len) },
    );
}

/// [`sweep`] with any copy function; `label` names it in failures. `copy` is called only with
/// valid, disjoint ranges.
fn sweep_with(
    label: &str,
    max_len: usize,
    coverage: Coverage,
    copy: impl Fn(*mut u8, *const u8, usize),
) {
    // Two halves, one per pattern, each long enough for the largest offset plus length.
    let half = (64 + max_len).next_multiple_of(64);
    let mut src = Buffer::new(2 * half, FILL);
    let sp = src.ptr();
    for i in 0..half {
        // SAFETY: `i < half`, so both writes are inside `src` (`2 * half` bytes).
        unsafe {
            *sp.add(i) = pattern(i, 0);
            *sp.add(half + i) = pattern(i, 1);
        }
    }
    let mut dst = Buffer::new(GUARD + 64 + max_len + GUARD, FILL);
    let dst_len = dst.len();
    let dp = dst.ptr();
    for dst_off in 0..64 {
        for src_off in 0..64 {
            // SAFETY: `dp..dp+dst_len` is `dst`'s storage.
            unsafe { std::ptr::write_bytes(dp, FILL, dst_len) };
            // SAFETY: `GUARD + dst_off` plus at most `max_len` bytes and a `GUARD` fit in `dst`.
            let d = unsafe { dp.add(GUARD + dst_off) };
            let (first, step) = match coverage {
                Coverage::Every => (0, 1),
                Coverage::Pairs => ((src_off + 64 - dst_off) % 64, 64),
            };
            for (n, len) in (first..=max_len).step_by(step).enumerate() {
                let which = n % 2;
                // SAFETY: `src_off + len <= 64 + max_len <= half`, inside pattern `which`.
                let s = unsafe { sp.add(which * half + src_off) };
                // `s..s+len` is inside `src`, `d..d+len` inside `dst`: distinct buffers.
                copy(d, s, len);
                // SAFETY: the slices cover `src` and `dst` bytes checked above; no pointer writes
                // to them while the slices live.
                let (got, want, before, after) = unsafe {
                    (
                        std::slice::from_raw_parts(d, len),
                        std::slice::from_raw_parts(s, len),
                        std::slice::from_raw_parts(d.sub(GUARD), GUARD),
                        std::slice::from_raw_parts(d.add(len), GUARD),
                    )
                };
                if got != want || before != FILLED || after != FILLED {
                    panic!("{label}: wrong copy for len {len} src_off {src_off} dst_off {dst_off}");
                }
            }
        }
    }
}

/// Copies `len` bytes at the given offsets with each coherence, checked byte-exact with guards.
/// The source is built once; the destination window is reset to `FILL` before every copy.
fn copy_large(coherences: &[Coherence], len: usize, src_off: usize, dst_off: usize) {
    let mut src = Buffer::new(src_off + len, FILL);
    let sp = src.ptr();
    for i in 0..src_off + len {
        // SAFETY: inside `src`.
        unsafe { *sp.add(i) = pattern(i, 1) };
    }
    let mut dst = Buffer::new(GUARD + dst_off + len + GUARD, FILL);
    let dst_len = dst.len();
    let dp = dst.ptr();
    for c in coherences {
        // SAFETY: inside `dst`.
        let d = unsafe {
            std::ptr::write_bytes(dp, FILL, dst_len);
            dp.add(GUARD + dst_off)
        };
        // SAFETY: distinct buffers, both long enough.
        unsafe { c.memory_copy(d, sp.add(src_off), len) };
        // SAFETY: inside the buffers; no writes while the slices live.
        let (got, want, before, after) = unsafe {
            (
                std::slice::from_raw_parts(d, len),
                std::slice::from_raw_parts(sp.add(src_off), len),
                std::slice::from_raw_parts(d.sub(GUARD), GUARD),
                std::slice::from_raw_parts(d.add(len), GUARD),
            )
        };
        assert!(
            got == want && before == FILLED && after == FILLED,
            "{}: len {len} src_off {src_off} dst_off {dst_off}",
            c.strategy()
        );
    }
}

#[test]
fn mode_round_trips() {
    for mode in [CoherenceMode::Hardware, CoherenceMode::Flush] {
        assert_eq!(CoherenceMode::from_u32(mode as u32), Some(mode));
        assert_eq!(mode.to_string().parse::<CoherenceMode>(), Ok(mode));
    }
    assert_eq!(CoherenceMode::from_u32(0), None);
    assert_eq!(CoherenceMode::from_u32(3), None);
    assert!("Flush".parse::<CoherenceMode>().is_err());
}

#[test]
fn detected_strategy_is_supported() {
    let s = CopyStrategy::detect();
    assert!(s.is_supported());
    assert_ne!(s.invalidate, FlushInstr::Clwb);
    let cpu = CpuFeatures::get();
    if cpu.clwb {
        assert_eq!(s.flush, FlushInstr::Clwb);
    }
    if cpu.avx512f {
        assert_eq!(s.nt, NtStores::Avx512);
    }
    assert!(CopyStrategy::portable().is_supported());
    assert!(!cpu_model().is_empty());
}

#[test]
fn overrides_narrow_and_ignore_garbage() {
    let base = CopyStrategy {
        flush: FlushInstr::Clwb,
        invalidate: FlushInstr::Clflushopt,
        nt: NtStores::Avx512,
        nt_threshold: 1000,
    };
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let none = base.with_overrides(env(&[]));
    assert_eq!(none, base.supported());

    let s = base.with_overrides(env(&[("GISMO_NO_CLWB", "1")]));
    assert_ne!(s.flush, FlushInstr::Clwb);
    let s = base.with_overrides(env(&[
        ("GISMO_NO_CLWB", "1"),
        ("GISMO_NO_CLFLUSHOPT", " 1 "),
    ]));
    assert!(matches!(s.flush, FlushInstr::Clflush | FlushInstr::None));
    assert!(matches!(
        s.invalidate,
        FlushInstr::Clflush | FlushInstr::None
    ));
    let s = base.with_overrides(env(&[("GISMO_NO_MOVNT", "1")]));
    assert_eq!(s.nt, NtStores::None);
    let s = base.with_overrides(env(&[("GISMO_NO_AVX512", "1")]));
    assert_ne!(s.nt, NtStores::Avx512);
    let s = base.with_overrides(env(&[("GISMO_MOVNT_THRESHOLD", "4096")]));
    assert_eq!(s.nt_threshold, 4096);

    // Anything but "1" leaves a flag off; an unparsable threshold keeps the old one.
    let s = base.with_overrides(env(&[
        ("GISMO_NO_CLWB", "0"),
        ("GISMO_NO_MOVNT", "yes"),
        ("GISMO_NO_AVX512", ""),
        ("GISMO_MOVNT_THRESHOLD", "4k"),
    ]));
    assert_eq!(s, base.supported());
}

#[test]
fn supported_never_invalidates_with_clwb() {
    let s = CopyStrategy {
        flush: FlushInstr::Clwb,
        invalidate: FlushInstr::Clwb,
        nt: NtStores::Avx512,
        nt_threshold: 0,
    }
    .supported();
    assert_ne!(s.invalidate, FlushInstr::Clwb);
    assert!(s.is_supported());
}

/// Threshold used by the sweeps: inside the swept lengths, so both paths run (PMDK's value,
/// and the measured crossover on the development machine).
const SWEEP_THRESHOLD: usize = 256;

/// Pairwise coverage up to 4160 bytes for every non-temporal kernel, with the threshold inside
/// the range. (The write-back instruction does not change which bytes are stored; each one is
/// swept below with plain copies and in `every_destination_line_is_written_back`.)
#[test]
fn pairwise_sweep_non_temporal() {
    for s in strategies(SWEEP_THRESHOLD) {
        if s.nt != NtStores::None && s.flush == CopyStrategy::detect().flush {
            sweep(
                &Coherence::with_strategy(CoherenceMode::Flush, s),
                MAX_SWEEP_LEN,
                Coverage::Pairs,
            );
        }
    }
}

/// Pairwise coverage for copy + write back with the detected instruction (no non-temporal
/// stores), the portable strategy and Hardware mode.
#[test]
fn pairwise_sweep_copy_and_write_back() {
    let detected = CopyStrategy::detect();
    for s in strategies(SWEEP_THRESHOLD) {
        if s.nt == NtStores::None && (s.flush == detected.flush || s.flush == FlushInstr::None) {
            sweep(
                &Coherence::with_strategy(CoherenceMode::Flush, s),
                MAX_SWEEP_LEN,
                Coverage::Pairs,
            );
        }
    }
    sweep(
        &Coherence::new(CoherenceMode::Hardware),
        MAX_SWEEP_LEN,
        Coverage::Pairs,
    );
}

/// The SSE2 and AVX2 kernels with PMDK's write-combining barrier on (`GISMO_WC_WORKAROUND=1`),
/// up to 2048 bytes (the barrier falls every 768).
#[cfg(target_arch = "x86_64")]
#[test]
fn pairwise_sweep_with_wc_barrier() {
    for s in strategies(0) {
        if matches!(s.nt, NtStores::Sse2 | NtStores::Avx2)
            && s.flush == CopyStrategy::detect().flush
        {
            sweep_with(
                &format!("{s} +wc"),
                MAX_SWEEP_LEN,
                Coverage::Pairs,
                // SAFETY: `sweep_with` passes valid, disjoint ranges; `s` is supported.
                |d, src, len| unsafe { super::x86_64::copy_written_back_wc(&s, true, d, src, len) },
            );
        }
    }
}

/// Every (len, src_off, dst_off) triple for short lengths: up to 320 bytes (across the 256-byte
/// threshold) with the detected strategy, and up to 192 bytes (every head / one or two whole lines
/// / tail split) with every non-temporal kernel at threshold 0.
#[test]
fn every_triple_short() {
    let detected = CopyStrategy {
        nt_threshold: SWEEP_THRESHOLD,
        ..CopyStrategy::detect()
    };
    sweep(
        &Coherence::with_strategy(CoherenceMode::Flush, detected),
        320,
        Coverage::Every,
    );
    for s in strategies(0) {
        if s.nt != NtStores::None && s.flush == detected.flush {
            sweep(
                &Coherence::with_strategy(CoherenceMode::Flush, s),
                192,
                Coverage::Every,
            );
        }
    }
}

/// Every (len, src_off, dst_off) triple for every length `0..=4160`, for every strategy: 17
/// million copies each, bound by the write backs themselves (about 20 s per strategy in release
/// on the development machine, so several minutes in all). Run with
/// `cargo test --release -p gismo-platform --lib coherence -- --ignored`.
#[test]
#[ignore = "minutes: run with --release -- --ignored"]
fn every_triple_up_to_4160() {
    for s in strategies(SWEEP_THRESHOLD) {
        let t = std::time::Instant::now();
        sweep(
            &Coherence::with_strategy(CoherenceMode::Flush, s),
            MAX_SWEEP_LEN,
            Coverage::Every,
        );
        eprintln!(
            "{s}: every triple up to {MAX_SWEEP_LEN} in {:.1?}",
            t.elapsed()
        );
    }
    sweep(
        &Coherence::new(CoherenceMode::Hardware),
        MAX_SWEEP_LEN,
        Coverage::Every,
    );
}

/// Every (len, src_off, dst_off) triple up to 4160 for the strategies this machine actually uses
/// (the detected Flush strategy, and Hardware mode): about 40 s in release, so `tools/test.sh`
/// runs it in release (`--ignored`); the all-strategies sweep above is the by-hand soak.
#[test]
#[ignore = "tens of seconds: tools/test.sh runs it with --release -- --ignored"]
fn every_triple_up_to_4160_detected() {
    let detected = CopyStrategy {
        nt_threshold: SWEEP_THRESHOLD,
        ..CopyStrategy::detect()
    };
    for c in [
        Coherence::with_strategy(CoherenceMode::Flush, detected),
        Coherence::new(CoherenceMode::Hardware),
    ] {
        let t = std::time::Instant::now();
        sweep(&c, MAX_SWEEP_LEN, Coverage::Every);
        eprintln!(
            "{:?}: every triple up to {MAX_SWEEP_LEN} in {:.1?}",
            c.mode(),
            t.elapsed()
        );
    }
}

#[test]
fn large_copies_are_exact() {
    let mut all: Vec<Coherence> = strategies(SWEEP_THRESHOLD)
        .into_iter()
        .map(|s| Coherence::with_strategy(CoherenceMode::Flush, s))
        .collect();
    all.push(Coherence::new(CoherenceMode::Flush));
    all.push(Coherence::new(CoherenceMode::Hardware));
    for (len, src_off, dst_off) in [
        ((1 << 20) + 17, 0, 0),
        ((1 << 20) + 17, 5, 63),
        ((1 << 20) + 1, 63, 1),
        ((16 << 20) + 3, 3, 61),
    ] {
        copy_large(&all, len, src_off, dst_off);
    }
}

/// Which lines the kernels touched, through the `counting` recorder (x86-64 only: the portable
/// fallback touches no line).
#[cfg(target_arch = "x86_64")]
mod line_coverage {
    use std::collections::BTreeSet;

    use super::super::counting::{record_during, Event};
    use super::*;

    /// The lines a copy/flush of `len` bytes at `ptr` must cover.
    fn lines_of(ptr: usize, len: usize) -> BTreeSet<usize> {
        if len == 0 {
            return BTreeSet::new();
        }
        (ptr / 64..(ptr + len).div_ceil(64))
            .map(|l| l * 64)
            .collect()
    }

    /// In Flush mode every destination line is written back or streamed — streamed only if the copy
    /// covers it whole — nothing else is touched, and an `sfence` comes after the last of them.
    #[test]
    fn every_destination_line_is_written_back() {
        let lengths: Vec<usize> = (0..300)
            .chain([511, 512, 513, 1000, 4095, 4096, 4097, 10_000, 65_536 + 65])
            .collect();
        for threshold in [DEFAULT_NT_THRESHOLD, 0, 4096] {
            for s in strategies(threshold) {
                if s.flush == FlushInstr::None {
                    continue;
                }
                let c = Coherence::with_strategy(CoherenceMode::Flush, s);
                for &len in &lengths {
                    for (src_off, dst_off) in [(0, 0), (0, 1), (7, 33), (63, 63), (1, 0), (32, 60)]
                    {
                        let mut src = Buffer::new(len + 64, 1);
                        let mut dst = Buffer::new(len + 64, FILL);
                        // SAFETY: inside the buffers, which are distinct.
                        let (d, sp) = unsafe { (dst.ptr().add(dst_off), src.ptr().add(src_off)) };
                        // SAFETY: as above.
                        let ((), events) = record_during(|| unsafe { c.memory_copy(d, sp, len) });
                        check_copy_events(&s, d as usize, len, &events);
                    }
                }
            }
        }
    }

    /// Large copies take the page-interleaved stream: still every line exactly once.
    #[test]
    fn large_streamed_copies_cover_every_line() {
        for s in strategies(DEFAULT_NT_THRESHOLD) {
            if s.flush == FlushInstr::None || s.nt == NtStores::None {
                continue;
            }
            let c = Coherence::with_strategy(CoherenceMode::Flush, s);
            for (len, src_off, dst_off) in [((1 << 20) + 4096 + 100, 3, 17), (3 << 20, 0, 0)] {
                let mut src = Buffer::new(len + 64, 1);
                let mut dst = Buffer::new(len + 64, FILL);
                // SAFETY: inside the buffers, which are distinct.
                let (d, sp) = unsafe { (dst.ptr().add(dst_off), src.ptr().add(src_off)) };
                // SAFETY: as above.
                let ((), events) = record_during(|| unsafe { c.memory_copy(d, sp, len) });
                check_copy_events(&s, d as usize, len, &events);
                let streamed: Vec<usize> = events
                    .iter()
                    .filter_map(|e| {
                        if let Event::Stream(l) = e {
                            Some(*l)
                        } else {
                            None
                        }
                    })
                    .collect();
                let unique: std::collections::BTreeSet<usize> = streamed.iter().copied().collect();
                assert_eq!(unique.len(), streamed.len(), "{s:?}: a line streamed twice");
            }
        }
    }

    fn check_copy_events(s: &CopyStrategy, dst: usize, len: usize, events: &[Event]) {
        let want = lines_of(dst, len);
        let mut covered = BTreeSet::new();
        let mut streamed = 0;
        for e in events {
            match *e {
                Event::WriteBack(line, instr) => {
                    assert_eq!(instr, s.flush);
                    covered.insert(line);
                }
                Event::Stream(line) => {
                    assert!(
                        line >= dst && line + 64 <= dst + len,
                        "partial line streamed"
                    );
                    streamed += 1;
                    covered.insert(line);
                }
                Event::Sfence | Event::Mfence | Event::Invalidate(..) => {}
            }
        }
        assert_eq!(covered, want, "{s:?} len {len} dst {dst:#x}");
        if len == 0 {
            assert!(events.is_empty());
            return;
        }
        assert_eq!(
            events.last(),
            Some(&Event::Sfence),
            "{s:?} len {len}: no final sfence"
        );
        let nt = s.nt != NtStores::None && len >= s.nt_threshold;
        if !nt {
            assert_eq!(streamed, 0, "{s:?} len {len} streamed below the threshold");
        } else {
            let whole = ((dst + len) / 64).saturating_sub(dst.div_ceil(64));
            assert_eq!(
                streamed, whole,
                "{s:?} len {len}: not every whole line streamed"
            );
        }
    }

    #[test]
    fn flush_and_invalidate_cover_every_line() {
        let s = CopyStrategy::detect();
        let c = Coherence::with_strategy(CoherenceMode::Flush, s);
        let mut buf = Buffer::new(4096 + 128, 1);
        let base = buf.ptr();
        for len in [0, 1, 2, 63, 64, 65, 127, 128, 129, 1000, 4096] {
            for off in [0, 1, 31, 63, 64] {
                // SAFETY: inside `buf`.
                let p = unsafe { base.add(off) };
                // SAFETY: `p..p+len` is inside `buf`.
                let ((), events) = record_during(|| unsafe { c.flush(p, len) });
                let lines: BTreeSet<usize> = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::WriteBack(l, _) => Some(*l),
                        _ => None,
                    })
                    .collect();
                assert_eq!(lines, lines_of(p as usize, len));
                assert_eq!(events.last(), Some(&Event::Sfence));

                // SAFETY: `p..p+len` is inside `buf`; nothing unwritten-back must survive.
                let ((), events) = record_during(|| unsafe { c.invalidate(p, len) });
                let lines: BTreeSet<usize> = events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Invalidate(l, instr) => {
                            assert_ne!(*instr, FlushInstr::Clwb);
                            Some(*l)
                        }
                        _ => None,
                    })
                    .collect();
                assert_eq!(lines, lines_of(p as usize, len));
                assert_eq!(events.first(), Some(&Event::Mfence));
                assert_eq!(events.last(), Some(&Event::Mfence));
            }
        }
    }

    #[test]
    fn hardware_mode_touches_no_line() {
        let c = Coherence::new(CoherenceMode::Hardware);
        let mut src = Buffer::new(8192, 3);
        let mut dst = Buffer::new(8192, FILL);
        let (sp, dp) = (src.ptr(), dst.ptr());
        // SAFETY: distinct buffers of 8192 bytes.
        let ((), events) = record_during(|| unsafe {
            c.memory_copy(dp, sp, 8192);
            c.flush(dp, 8192);
            c.invalidate(dp, 8192);
        });
        assert!(events.is_empty());
    }
}

#[cfg(feature = "emulation")]
mod emulation {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A shared "memory" and two hosts mirroring it.
    /// Field order matters: `_shared` is dropped last, after both hosts.
    struct TwoHosts {
        writer: Coherence,
        reader: Coherence,
        len: usize,
        _shared: Buffer,
    }

    fn two_hosts(len: usize) -> TwoHosts {
        let mut shared = Buffer::new(len, FILL);
        let base = shared.ptr();
        // SAFETY: `shared` is `len` bytes of heap, moved (not reallocated) into `TwoHosts`,
        // which drops it after both hosts.
        let (w, r) = unsafe { (EmulatedHost::new(base, len), EmulatedHost::new(base, len)) };
        TwoHosts {
            writer: Coherence::emulated(CoherenceMode::Flush, w),
            reader: Coherence::emulated(CoherenceMode::Flush, r),
            len,
            _shared: shared,
        }
    }

    impl TwoHosts {
        fn host(c: &Coherence) -> &Arc<EmulatedHost> {
            c.emulated_host().expect("emulated")
        }

        /// Writer copies `data` at `offset`; reader invalidates and returns what it reads.
        fn publish_and_read(&self, offset: usize, data: &[u8]) -> Vec<u8> {
            let wbase = Self::host(&self.writer).shared_base();
            let wp = self.writer.payload_base(wbase);
            let rp = self
                .reader
                .payload_base(Self::host(&self.reader).shared_base());
            assert!(offset + data.len() <= self.len);
            // SAFETY: `wp + offset .. + len` is inside the writer's private view; `data` is a
            // distinct slice.
            unsafe {
                self.writer
                    .memory_copy(wp.add(offset), data.as_ptr(), data.len())
            };
            // SAFETY: inside the reader's private view.
            unsafe { self.reader.invalidate(rp.add(offset), data.len()) };
            let mut out = vec![0; data.len()];
            // SAFETY: inside the reader's private view; `out` is distinct.
            unsafe { std::ptr::copy_nonoverlapping(rp.add(offset), out.as_mut_ptr(), data.len()) };
            out
        }
    }

    fn random_data(rng: &mut impl Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.gen_range(1..=255)).collect()
    }

    #[test]
    fn skipped_flush_leaves_reader_stale() {
        let hosts = two_hosts(1 << 16);
        TwoHosts::host(&hosts.writer).set_skip_flush(true);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        for _ in 0..200 {
            let len = rng.gen_range(1..4096);
            let offset = rng.gen_range(0..hosts.len - len);
            let data = random_data(&mut rng, len);
            assert_ne!(hosts.publish_and_read(offset, &data), data);
        }
        assert_eq!(TwoHosts::host(&hosts.writer).lines_written_back(), 0);
    }

    #[test]
    fn skipped_invalidate_leaves_reader_stale() {
        let hosts = two_hosts(1 << 16);
        TwoHosts::host(&hosts.reader).set_skip_invalidate(true);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(2);
        for _ in 0..200 {
            let len = rng.gen_range(1..4096);
            let offset = rng.gen_range(0..hosts.len - len);
            let data = random_data(&mut rng, len);
            assert_ne!(hosts.publish_and_read(offset, &data), data);
        }
    }

    #[test]
    fn flush_and_invalidate_make_every_write_visible() {
        let hosts = two_hosts(1 << 20);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for round in 0..2000 {
            let len = if round % 10 == 0 {
                rng.gen_range(0..200_000)
            } else {
                rng.gen_range(0..3000)
            };
            let offset = rng.gen_range(0..=hosts.len - len);
            let data = random_data(&mut rng, len);
            assert_eq!(hosts.publish_and_read(offset, &data), data, "round {round}");
        }
    }

    #[test]
    fn flush_writes_back_in_place_writes() {
        let hosts = two_hosts(4096);
        let w = TwoHosts::host(&hosts.writer);
        let wp = hosts.writer.payload_base(w.shared_base());
        let rp = hosts
            .reader
            .payload_base(TwoHosts::host(&hosts.reader).shared_base());
        // SAFETY: offsets 100..300 are inside both 4096-byte views.
        unsafe {
            std::ptr::write_bytes(wp.add(100), 7, 200);
            hosts.reader.invalidate(rp.add(100), 200);
            assert_eq!(*rp.add(150), FILL, "unflushed in-place write leaked");
            hosts.writer.flush(wp.add(100), 200);
            hosts.reader.invalidate(rp.add(100), 200);
            assert_eq!(*rp.add(150), 7);
        }
        // Bytes 100..300 touch lines 1..=4 (64..320).
        assert_eq!(w.lines_written_back(), 4);
    }

    #[test]
    fn exactly_the_touched_lines_move() {
        let hosts = two_hosts(4096);
        let w = TwoHosts::host(&hosts.writer);
        let wp = hosts.writer.payload_base(w.shared_base());
        for (offset, len, lines) in [(63, 1, 1), (63, 2, 2), (64, 64, 1), (0, 0, 0), (1, 128, 3)] {
            let before = w.lines_written_back();
            let data = vec![9u8; len];
            // SAFETY: inside the writer's view; `data` is distinct.
            unsafe { hosts.writer.memory_copy(wp.add(offset), data.as_ptr(), len) };
            assert_eq!(w.lines_written_back() - before, lines, "{offset}+{len}");
        }
    }

    #[test]
    fn hardware_mode_is_not_emulated() {
        let mut shared = Buffer::new(4096, FILL);
        let base = shared.ptr();
        // SAFETY: `shared` outlives the host (both dropped at the end of this test).
        let host = unsafe { EmulatedHost::new(base, 4096) };
        let c = Coherence::emulated(CoherenceMode::Hardware, host);
        assert_eq!(c.payload_base(base), base);
        assert!(c.emulated_host().is_none());
    }
}
