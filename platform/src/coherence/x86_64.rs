//! The x86-64 kernels: copy-and-write-back, write back, invalidate.
//!
//! # Copy
//!
//! A copy shorter than [`CopyStrategy::nt_threshold`] (or any copy when non-temporal stores are
//! off) is an ordinary `copy_nonoverlapping` followed by one write back (`clwb`, `clflushopt` or
//! `clflush`) per destination line and an `sfence`.
//!
//! A longer copy is split at the destination's 64-byte line boundaries:
//!
//! ```text
//!   dst ─┬── head ──┬──────── body: whole lines ────────┬── tail ──┐
//!        │ mov+flush│ non-temporal stores, 64 B aligned  │mov+flush │
//! ```
//!
//! The head and the tail are partial lines: a non-temporal store of a whole line would clobber
//! the bytes around the copy, so they are copied with ordinary stores and written back. The body
//! is loaded unaligned from the source and stored with aligned non-temporal stores, which go to
//! memory through the write-combining buffers without reading the line first (no
//! read-for-ownership) and leave no copy in the caches. A final `sfence` drains the
//! write-combining buffers and orders the weakly ordered write backs before any later store — in
//! particular before the `Release` store that publishes the object. (That fence is also what
//! Rust's memory model asks for after non-temporal stores; see `_mm_sfence`.)
//!
//! With `GISMO_WC_WORKAROUND=1` the SSE2 and AVX2 kernels issue an `sfence` after every 12 lines
//! (768 bytes): PMDK's workaround for the 12 write-combining buffers of older Intel cores, where
//! partially filled buffers evicted early become partial writes (`PERF_BARRIER_SIZE` in
//! `libpmem2/x86_64/memcpy_memset.h`; PMDK turns it on for every GenuineIntel CPU). It is off by
//! default because it measured 3-7x *slower* on the development machine (each `sfence` waits for
//! the previous 768 bytes to reach memory; `docs/coherence.md`). The AVX-512 kernel fills a whole
//! line with one store and never uses it.
//!
//! # Invalidate
//!
//! `clflushopt` (or `clflush`) on every line between two `mfence`s. The first keeps the flushes
//! from being performed before the caller's earlier `Acquire` load of the word that published the
//! object (neither flush instruction is ordered with older loads), so no line can be re-fetched
//! stale between the flush and that load; the second keeps later loads from being satisfied
//! before the lines are gone (`sfence` does not order loads).
//!
//! # The line invariant
//!
//! Every loop here touches whole 64-byte lines that overlap the caller's range. A line never
//! straddles a page, so every such line is mapped whenever the caller's bytes are: the flush
//! instructions (which fault like a one-byte read on an unmapped address) never fault.
//!
//! # Rust version
//!
//! The AVX-512 intrinsics and `#[target_feature(enable = "avx512f")]` are stable since Rust 1.89,
//! which is therefore the crate's minimum version (`rust-version` in `Cargo.toml`).

use std::arch::asm;
use std::arch::x86_64::{
    __m128i, __m256i, __m512i, _mm256_loadu_si256, _mm256_stream_si256, _mm512_loadu_si512,
    _mm512_stream_si512, _mm_clflush, _mm_loadu_si128, _mm_mfence, _mm_sfence, _mm_stream_si128,
};
use std::ptr;
use std::sync::OnceLock;

#[cfg(test)]
use super::counting::{self, Event};
use super::cpu::CACHE_LINE;
use super::strategy::{CopyStrategy, FlushInstr, NtStores};

/// Lines per `sfence` in the SSE2 and AVX2 kernels (PMDK's 768-byte `PERF_BARRIER_SIZE`).
const WC_BARRIER_LINES: usize = 12;

/// Copies `len` bytes and leaves every destination line written back to memory, then `sfence`.
///
/// # Safety
/// * `src..src+len` is readable and `dst..dst+len` writable; they do not overlap.
/// * `s.is_supported()`: every instruction it names exists on this CPU.
pub(super) unsafe fn copy_written_back(s: &CopyStrategy, dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: forwarded from this function's contract.
    unsafe { copy_written_back_wc(s, wc_workaround(), dst, src, len) }
}

/// [`copy_written_back`] with the write-combining workaround on or off (tests run both).
///
/// # Safety
/// As [`copy_written_back`].
pub(super) unsafe fn copy_written_back_wc(
    s: &CopyStrategy,
    wc_barrier: bool,
    dst: *mut u8,
    src: *const u8,
    len: usize,
) {
    debug_assert!(s.is_supported());
    if len == 0 {
        return;
    }
    if s.nt != NtStores::None && len >= s.nt_threshold {
        // SAFETY: forwarded from this function's contract.
        unsafe { copy_streaming(s, wc_barrier, dst, src, len) };
    } else {
        // SAFETY: the caller guarantees both ranges are valid and disjoint; the destination is
        // mapped, so each line overlapping it is (the line invariant); `s.flush` exists on this
        // CPU.
        unsafe {
            ptr::copy_nonoverlapping(src, dst, len);
            write_back_lines(s.flush, dst, len);
        }
    }
    sfence();
}

/// Writes back every line overlapping `ptr..ptr+len` with `s.flush`, then `sfence`.
///
/// # Safety
/// `ptr..ptr+len` is mapped; `s.is_supported()`.
pub(super) unsafe fn write_back(s: &CopyStrategy, ptr: *const u8, len: usize) {
    debug_assert!(s.is_supported());
    // SAFETY: forwarded from this function's contract.
    unsafe { write_back_lines(s.flush, ptr, len) };
    sfence();
}

/// Drops every line overlapping `ptr..ptr+len` from this CPU's caches, fenced on both sides.
///
/// # Safety
/// `ptr..ptr+len` is mapped; `s.is_supported()` (so `s.invalidate` is not `clwb`).
pub(super) unsafe fn invalidate(s: &CopyStrategy, ptr: *const u8, len: usize) {
    debug_assert!(s.is_supported());
    mfence();
    match s.invalidate {
        FlushInstr::Clflushopt => each_line(ptr, len, |line| {
            #[cfg(test)]
            counting::record(Event::Invalidate(line as usize, FlushInstr::Clflushopt));
            // SAFETY: the line overlaps the caller's mapped range, so it is mapped (the line
            // invariant); `is_supported` guarantees the CPU has `clflushopt`.
            unsafe { clflushopt(line) }
        }),
        FlushInstr::Clflush => each_line(ptr, len, |line| {
            #[cfg(test)]
            counting::record(Event::Invalidate(line as usize, FlushInstr::Clflush));
            // SAFETY: as above, with `clflush`.
            unsafe { _mm_clflush(line) }
        }),
        // `supported()` never leaves `clwb` here; `None` has nothing to invalidate with.
        FlushInstr::Clwb | FlushInstr::None => {}
    }
    mfence();
}

/// Whether the SSE2 and AVX2 kernels fence every 768 bytes: `GISMO_WC_WORKAROUND=1` (read once
/// per process). Off by default: on the development machine it made those kernels 3-7x slower.
fn wc_workaround() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("GISMO_WC_WORKAROUND").is_ok_and(|v| v.trim() == "1"))
}

/// Head and tail with ordinary stores + write back, body with non-temporal stores. No fence.
///
/// # Safety
/// As [`copy_written_back`].
unsafe fn copy_streaming(
    s: &CopyStrategy,
    barrier: bool,
    dst: *mut u8,
    src: *const u8,
    len: usize,
) {
    let misalign = dst as usize % CACHE_LINE;
    let head = if misalign == 0 {
        0
    } else {
        (CACHE_LINE - misalign).min(len)
    };
    let lines = (len - head) / CACHE_LINE;
    let body_end = head + lines * CACHE_LINE;
    // SAFETY: `head`, `body_end` and `len` are within `0..=len`, so every sub-range lies in the
    // caller's valid, disjoint ranges; the body's destination `dst + head` is 64-byte aligned
    // (that is what `head` is for), as the aligned non-temporal stores require; `s.nt` and
    // `s.flush` exist on this CPU (`is_supported`), which is what calling the
    // `#[target_feature]` kernels requires.
    unsafe {
        if head > 0 {
            ptr::copy_nonoverlapping(src, dst, head);
            write_back_lines(s.flush, dst, head);
        }
        let (body_dst, body_src) = (dst.add(head), src.add(head));
        match s.nt {
            NtStores::Avx512 if lines >= INTERLEAVE_MIN_LINES => {
                stream_avx512_interleaved(body_dst, body_src, lines)
            }
            NtStores::Avx512 => stream_avx512(body_dst, body_src, lines),
            NtStores::Avx2 => stream_avx2(body_dst, body_src, lines, barrier),
            NtStores::Sse2 => stream_sse2(body_dst, body_src, lines, barrier),
            NtStores::None => {
                ptr::copy_nonoverlapping(body_src, body_dst, lines * CACHE_LINE);
                write_back_lines(s.flush, body_dst, lines * CACHE_LINE);
            }
        }
        if body_end < len {
            ptr::copy_nonoverlapping(src.add(body_end), dst.add(body_end), len - body_end);
            write_back_lines(s.flush, dst.add(body_end), len - body_end);
        }
    }
}

/// Calls `f` with the start of every 64-byte line overlapping `ptr..ptr+len` (none if `len` is
/// 0), in address order. Only computes addresses.
#[inline(always)]
fn each_line(ptr: *const u8, len: usize, mut f: impl FnMut(*const u8)) {
    if len == 0 {
        return;
    }
    let offset = ptr as usize % CACHE_LINE;
    let mut line = ptr.wrapping_sub(offset);
    for _ in 0..(offset + len).div_ceil(CACHE_LINE) {
        f(line);
        line = line.wrapping_add(CACHE_LINE);
    }
}

/// Writes back every line overlapping `ptr..ptr+len` with `instr`. No fence.
///
/// # Safety
/// `ptr..ptr+len` is mapped; `instr` exists on this CPU.
#[inline]
unsafe fn write_back_lines(instr: FlushInstr, ptr: *const u8, len: usize) {
    #[cfg(test)]
    if counting::recording() {
        each_line(ptr, len, |line| {
            counting::record(Event::WriteBack(line as usize, instr))
        });
    }
    match instr {
        FlushInstr::Clwb => each_line(ptr, len, |line| {
            // SAFETY: the line overlaps the caller's mapped range, so it is mapped (the line
            // invariant); the caller guarantees the CPU has `clwb`.
            unsafe { clwb(line) }
        }),
        FlushInstr::Clflushopt => each_line(ptr, len, |line| {
            // SAFETY: as above, with `clflushopt`.
            unsafe { clflushopt(line) }
        }),
        FlushInstr::Clflush => each_line(ptr, len, |line| {
            // SAFETY: as above, with `clflush` (baseline x86-64).
            unsafe { _mm_clflush(line) }
        }),
        FlushInstr::None => {}
    }
}

/// `clwb [line]`. Not in `std::arch`, hence `asm!`.
///
/// # Safety
/// `line` is mapped and the CPU has CLWB.
#[inline(always)]
unsafe fn clwb(line: *const u8) {
    // SAFETY: the caller guarantees the address is mapped (so no fault) and the instruction
    // exists. No `nomem`: the compiler must treat it as touching memory so that stores to the line
    // are not moved after it.
    unsafe { asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags)) }
}

/// `clflushopt [line]`. Not in `std::arch`, hence `asm!`.
///
/// # Safety
/// `line` is mapped and the CPU has CLFLUSHOPT.
#[inline(always)]
unsafe fn clflushopt(line: *const u8) {
    // SAFETY: as `clwb`.
    unsafe { asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags)) }
}

/// Drains the write-combining buffers and orders earlier stores, non-temporal stores, `clwb` and
/// `clflushopt` before every later store.
#[inline(always)]
fn sfence() {
    #[cfg(test)]
    counting::record(Event::Sfence);
    // SAFETY: SSE is part of the x86-64 baseline, so the instruction exists.
    unsafe { _mm_sfence() };
}

/// Orders every earlier load, store and flush before every later one.
#[inline(always)]
fn mfence() {
    #[cfg(test)]
    counting::record(Event::Mfence);
    // SAFETY: SSE2 is part of the x86-64 baseline, so the instruction exists.
    unsafe { _mm_mfence() };
}

/// Records `count` lines starting at `dst` as written non-temporally (test builds only, and only
/// when the thread records).
#[inline(always)]
fn record_streamed(dst: *mut u8, count: usize) {
    #[cfg(test)]
    if counting::recording() {
        each_line(dst, count * CACHE_LINE, |line| {
            counting::record(Event::Stream(line as usize))
        });
    }
    #[cfg(not(test))]
    let _ = (dst, count);
}

/// From this many lines on (1 MiB), the AVX-512 stream copies four 4 KiB pages at a time.
const INTERLEAVE_MIN_LINES: usize = (1 << 20) / CACHE_LINE;
/// Lines per 4 KiB page.
const PAGE_LINES: usize = 4096 / CACHE_LINE;

/// Streams `lines` lines like [`stream_avx512`], but through blocks of four 4 KiB pages, one line
/// of each page in turn: four concurrent streams keep more DRAM pages open and the source
/// prefetchers busier than one (the technique glibc's `memcpy` uses above its non-temporal
/// threshold). On this machine it lifts a cold 256 MiB copy from 9.5 to 12.2 GB/s, past a plain
/// `memcpy` (10.7 GB/s).
///
/// # Safety
/// As [`stream_avx512`].
#[target_feature(enable = "avx512f")]
unsafe fn stream_avx512_interleaved(mut dst: *mut u8, mut src: *const u8, lines: usize) {
    let mut left = lines;
    // SAFETY: (whole loop) every line read and written lies in the first `4 * PAGE_LINES` lines
    // of what remains (`left >= 4 * PAGE_LINES`), inside the caller's ranges; `dst` stays 64-byte
    // aligned (it advances in multiples of 64).
    unsafe {
        while left >= 4 * PAGE_LINES {
            for l in 0..PAGE_LINES {
                for p in 0..4 {
                    let off = p * 4096 + l * CACHE_LINE;
                    let a = _mm512_loadu_si512(src.add(off).cast::<__m512i>());
                    _mm512_stream_si512(dst.add(off).cast::<__m512i>(), a);
                    record_streamed(dst.add(off), 1);
                }
            }
            src = src.add(4 * 4096);
            dst = dst.add(4 * 4096);
            left -= 4 * PAGE_LINES;
        }
        stream_avx512(dst, src, left);
    }
}

/// Streams `lines` whole lines with 64-byte non-temporal stores, four lines per iteration.
///
/// # Safety
/// `dst` is 64-byte aligned; `src..+lines*64` readable, `dst..+lines*64` writable, disjoint; the
/// CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn stream_avx512(mut dst: *mut u8, mut src: *const u8, lines: usize) {
    let mut left = lines;
    // SAFETY: (whole loop) each iteration reads and writes lines inside the caller's ranges
    // (`left` counts what remains); `dst` stays 64-byte aligned as `_mm512_stream_si512` requires.
    unsafe {
        while left >= 4 {
            let a = _mm512_loadu_si512(src.cast::<__m512i>());
            let b = _mm512_loadu_si512(src.add(64).cast::<__m512i>());
            let c = _mm512_loadu_si512(src.add(128).cast::<__m512i>());
            let d = _mm512_loadu_si512(src.add(192).cast::<__m512i>());
            _mm512_stream_si512(dst.cast::<__m512i>(), a);
            _mm512_stream_si512(dst.add(64).cast::<__m512i>(), b);
            _mm512_stream_si512(dst.add(128).cast::<__m512i>(), c);
            _mm512_stream_si512(dst.add(192).cast::<__m512i>(), d);
            record_streamed(dst, 4);
            src = src.add(256);
            dst = dst.add(256);
            left -= 4;
        }
        while left > 0 {
            let a = _mm512_loadu_si512(src.cast::<__m512i>());
            _mm512_stream_si512(dst.cast::<__m512i>(), a);
            record_streamed(dst, 1);
            src = src.add(64);
            dst = dst.add(64);
            left -= 1;
        }
    }
}

/// Streams `lines` whole lines with 32-byte non-temporal stores; with `barrier`, an `sfence`
/// after every [`WC_BARRIER_LINES`] lines.
///
/// # Safety
/// As [`stream_avx512`], with AVX2 instead of AVX-512F.
#[target_feature(enable = "avx2")]
unsafe fn stream_avx2(mut dst: *mut u8, mut src: *const u8, lines: usize, barrier: bool) {
    let mut left = lines;
    let mut since_barrier = 0;
    // SAFETY: (whole loop) as `stream_avx512`; `dst` stays 32-byte aligned.
    unsafe {
        while left > 0 {
            let a = _mm256_loadu_si256(src.cast::<__m256i>());
            let b = _mm256_loadu_si256(src.add(32).cast::<__m256i>());
            _mm256_stream_si256(dst.cast::<__m256i>(), a);
            _mm256_stream_si256(dst.add(32).cast::<__m256i>(), b);
            record_streamed(dst, 1);
            src = src.add(64);
            dst = dst.add(64);
            left -= 1;
            since_barrier += 1;
            if barrier && since_barrier == WC_BARRIER_LINES {
                _mm_sfence();
                since_barrier = 0;
            }
        }
    }
}

/// Streams `lines` whole lines with 16-byte non-temporal stores; with `barrier`, an `sfence`
/// after every [`WC_BARRIER_LINES`] lines.
///
/// # Safety
/// As [`stream_avx512`], with SSE2 instead of AVX-512F.
#[target_feature(enable = "sse2")]
unsafe fn stream_sse2(mut dst: *mut u8, mut src: *const u8, lines: usize, barrier: bool) {
    let mut left = lines;
    let mut since_barrier = 0;
    // SAFETY: (whole loop) as `stream_avx512`; `dst` stays 16-byte aligned.
    unsafe {
        while left > 0 {
            let a = _mm_loadu_si128(src.cast::<__m128i>());
            let b = _mm_loadu_si128(src.add(16).cast::<__m128i>());
            let c = _mm_loadu_si128(src.add(32).cast::<__m128i>());
            let d = _mm_loadu_si128(src.add(48).cast::<__m128i>());
            _mm_stream_si128(dst.cast::<__m128i>(), a);
            _mm_stream_si128(dst.add(16).cast::<__m128i>(), b);
            _mm_stream_si128(dst.add(32).cast::<__m128i>(), c);
            _mm_stream_si128(dst.add(48).cast::<__m128i>(), d);
            record_streamed(dst, 1);
            src = src.add(64);
            dst = dst.add(64);
            left -= 1;
            since_barrier += 1;
            if barrier && since_barrier == WC_BARRIER_LINES {
                _mm_sfence();
                since_barrier = 0;
            }
        }
    }
}
