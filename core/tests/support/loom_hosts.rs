//! Emulated hosts for the `loom` models of the cross-host protocols: the whole-region emulator's
//! semantics (`gismo_platform::emulation`, `docs/coherence.md`) over words a model owns, so that
//! loom explores every interleaving of the protocol's loads and stores with its write-backs and
//! evictions — and a write-back or an eviction the protocol leaves out makes a model fail.
//!
//! A model has one *device* (what memory holds) and per host a *view* (what the host's caches
//! hold; its threads load, store and CAS there, coherent among themselves) and a *clean copy*
//! (the device's line as the host last fetched or wrote it back). Each host's [`Coherence`] is
//! made with [`Coherence::with_line_model`], so the production code's `flush` / `invalidate`
//! (`xhost::lines::{write_back, evict}`) call this module:
//!
//! * write-back copies the view's line to the device, whole (also words this host did not
//!   write), and records it as clean;
//! * evict writes a dirty line back first, then refetches it, keeping any word the host stored
//!   since its clean copy (as a store after an eviction lands on the refetched line);
//! * [`Hosts::spontaneous_write_back`] / [`Hosts::spontaneous_refresh`] are what a cache may do
//!   at any time; a model runs them on a thread of their own so that loom places them anywhere.
//!
//! Line transfers are serialised by one lock (the emulator's per-line locks), and copy a line's
//! words in order, as the emulator does. Lines are 8 consecutive words from the start of the
//! device (loom's atomics are not 8 bytes, so lines are counted in words, not bytes); a section
//! that must start on a line starts at a multiple of 8 words.
//!
//! The knobs [`Knobs::skip_write_back`] and [`Knobs::skip_evict`] are the emulator's
//! `GISMO_EMULATION_SKIP_WRITEBACK` / `_SKIP_INVALIDATE` for one host: the negative controls.

use std::fmt;

use gismo_platform::coherence::{Coherence, CoherenceMode, LineModel};
use gismo_platform::sync::{AtomicU32, AtomicU64, Ordering};

/// Words per 64-byte line.
pub const LINE_WORDS: usize = 8;

/// Per-host negative-control switches.
#[derive(Clone, Copy, Debug, Default)]
pub struct Knobs {
    /// This host's write-backs do nothing (its evictions still write a dirty line back first,
    /// as `clflushopt` does).
    pub skip_write_back: Option<usize>,
    /// This host's evictions do nothing.
    pub skip_evict: Option<usize>,
}

/// One word of a view: the region's fields are 64- and 32-bit atomics (a value of either is
/// kept as a `u64` in the device and the clean copies).
#[derive(Clone, Copy)]
pub enum Cell<'a> {
    U64(&'a AtomicU64),
    U32(&'a AtomicU32),
}

impl Cell<'_> {
    fn addr(self) -> usize {
        match self {
            Cell::U64(a) => a as *const AtomicU64 as usize,
            Cell::U32(a) => a as *const AtomicU32 as usize,
        }
    }

    fn load(self) -> u64 {
        match self {
            Cell::U64(a) => a.load(Ordering::Relaxed),
            Cell::U32(a) => u64::from(a.load(Ordering::Relaxed)),
        }
    }

    /// Compare-and-swap (Relaxed: the transfer lock orders the transfers).
    fn cas(self, current: u64, new: u64) -> bool {
        match self {
            Cell::U64(a) => a
                .compare_exchange(current, new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok(),
            Cell::U32(a) => a
                .compare_exchange(
                    current as u32,
                    new as u32,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok(),
        }
    }
}

/// What a host's view holds: the region's structures the model needs, as a numbered list of
/// cells. Cell `i` of every host's view is the same field of the region; [`View::line`] says
/// which line it lies in (by default cells `8k..8k+8` make line `k`). A structure lists the
/// fields the protocol under test moves between hosts, grouped into lines as in the region (a
/// directory slot's state word, commit record and key share its first line).
pub trait View: Send + Sync + 'static {
    fn len(&self) -> usize;
    fn cell(&self, i: usize) -> Cell<'_>;
    fn line(&self, i: usize) -> usize {
        i / LINE_WORDS
    }
}

impl View for Vec<AtomicU64> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn cell(&self, i: usize) -> Cell<'_> {
        Cell::U64(&self[i])
    }
}

/// The device and the hosts' views (module docs). Only the views are loom atomics (the memory
/// the protocol's threads race on); the device and the clean copies are plain words under the
/// transfer lock, which every line transfer holds.
pub struct Hosts<V: View = Vec<AtomicU64>> {
    views: Vec<V>,
    /// The cells of each line.
    lines: Vec<Vec<usize>>,
    memory: loom::sync::Mutex<Memory>,
}

/// What only line transfers touch.
struct Memory {
    device: Vec<u64>,
    clean: Vec<Vec<u64>>,
    knobs: Knobs,
}

impl<V: View> fmt::Debug for Hosts<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hosts")
            .field("hosts", &self.views.len())
            .field("words", &self.views[0].len())
            .finish()
    }
}

impl Hosts<Vec<AtomicU64>> {
    /// `hosts` hosts over a device of `words` words (rounded up to whole lines), all zero, with
    /// every write-back and eviction working (see [`Hosts::set_knobs`]).
    pub fn new(hosts: usize, words: usize) -> std::sync::Arc<Self> {
        let words = words.div_ceil(LINE_WORDS) * LINE_WORDS;
        Hosts::with_views(
            (0..hosts)
                .map(|_| (0..words).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        )
    }
}

impl<V: View> Hosts<V> {
    /// Hosts over `views` (one per host, all of one length, zero: the device starts zero).
    pub fn with_views(views: Vec<V>) -> std::sync::Arc<Self> {
        let hosts = views.len();
        let words = views[0].len();
        let mut lines: Vec<Vec<usize>> = Vec::new();
        for i in 0..words {
            let line = views[0].line(i);
            if lines.len() <= line {
                lines.resize(line + 1, Vec::new());
            }
            lines[line].push(i);
        }
        std::sync::Arc::new(Hosts {
            views,
            lines,
            memory: loom::sync::Mutex::new(Memory {
                device: vec![0; words],
                clean: vec![vec![0; words]; hosts],
                knobs: Knobs::default(),
            }),
        })
    }

    /// Switches negative controls on or off from now on (a model sets them after its set-up).
    pub fn set_knobs(&self, knobs: Knobs) {
        self.memory.lock().unwrap().knobs = knobs;
    }

    /// Host `h`'s view: the structures its threads load, store and CAS.
    pub fn view(&self, h: usize) -> &V {
        &self.views[h]
    }

    /// Word `w` as memory holds it (for a model's final checks).
    pub fn device_word(&self, w: usize) -> u64 {
        self.memory.lock().unwrap().device[w]
    }

    /// Host `h`'s coherence: `Flush` mode whose write-backs and evictions are this model's.
    pub fn coherence(self: &std::sync::Arc<Self>, h: usize) -> Coherence {
        Coherence::with_line_model(
            CoherenceMode::Flush,
            std::sync::Arc::new(HostCache {
                hosts: self.clone(),
                host: h,
            }),
        )
    }

    /// The lines of host `h`'s view holding a word inside `ptr..ptr+len`, in order.
    ///
    /// # Panics
    /// If the range holds no word of host `h`'s view: the protocol handed its coherence a word
    /// of another host's view, or of no view at all.
    fn lines_of(&self, h: usize, ptr: *const u8, len: usize) -> Vec<usize> {
        let range = ptr as usize..(ptr as usize).saturating_add(len);
        let view = &self.views[h];
        let mut lines: Vec<usize> = (0..view.len())
            .filter(|&i| range.contains(&view.cell(i).addr()))
            .map(|i| view.line(i))
            .collect();
        lines.sort_unstable();
        lines.dedup();
        assert!(
            len == 0 || !lines.is_empty(),
            "a write-back or evict outside host {h}'s view"
        );
        lines
    }

    /// The cells of line `line`, in order (a transfer copies them in that order).
    fn words(&self, line: usize) -> impl Iterator<Item = usize> + '_ {
        self.lines.get(line).into_iter().flatten().copied()
    }

    fn is_dirty(&self, m: &Memory, h: usize, line: usize) -> bool {
        self.words(line)
            .any(|w| self.views[h].cell(w).load() != m.clean[h][w])
    }

    /// View → device, whole; the clean copy records what was copied.
    fn copy_back(&self, m: &mut Memory, h: usize, line: usize) {
        for w in self.words(line) {
            let v = self.views[h].cell(w).load();
            m.device[w] = v;
            m.clean[h][w] = v;
        }
    }

    /// Device → view, keeping a word the host stored since its clean copy.
    fn refresh(&self, m: &mut Memory, h: usize, line: usize) {
        for w in self.words(line) {
            let (d, c) = (m.device[w], m.clean[h][w]);
            if c != d && self.views[h].cell(w).cas(c, d) {
                m.clean[h][w] = d;
            }
        }
    }

    fn write_back_lines(&self, h: usize, lines: Vec<usize>) {
        let mut m = self.memory.lock().unwrap();
        if m.knobs.skip_write_back == Some(h) {
            return;
        }
        for line in lines {
            self.copy_back(&mut m, h, line);
        }
    }

    fn evict_lines(&self, h: usize, lines: Vec<usize>) {
        let mut m = self.memory.lock().unwrap();
        if m.knobs.skip_evict == Some(h) {
            return;
        }
        for line in lines {
            if self.is_dirty(&m, h, line) {
                self.copy_back(&mut m, h, line);
            }
            self.refresh(&mut m, h, line);
        }
    }

    /// A write-back host `h`'s cache may do at any time: the line holding cell `word`, if dirty.
    pub fn spontaneous_write_back(&self, h: usize, word: usize) {
        let line = self.views[h].line(word);
        let mut m = self.memory.lock().unwrap();
        if self.is_dirty(&m, h, line) {
            self.copy_back(&mut m, h, line);
        }
    }

    /// A refill host `h`'s cache may do at any time (a clean line dropped and fetched again, a
    /// prefetch): the line holding word `word`, if clean.
    pub fn spontaneous_refresh(&self, h: usize, word: usize) {
        let line = self.views[h].line(word);
        let mut m = self.memory.lock().unwrap();
        if !self.is_dirty(&m, h, line) {
            self.refresh(&mut m, h, line);
        }
    }
}

/// One host's [`LineModel`].
struct HostCache<V: View> {
    hosts: std::sync::Arc<Hosts<V>>,
    host: usize,
}

impl<V: View> fmt::Debug for HostCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostCache({})", self.host)
    }
}

impl<V: View> LineModel for HostCache<V> {
    fn write_back(&self, ptr: *const u8, len: usize) {
        let lines = self.hosts.lines_of(self.host, ptr, len);
        self.hosts.write_back_lines(self.host, lines);
    }

    fn evict(&self, ptr: *const u8, len: usize) {
        let lines = self.hosts.lines_of(self.host, ptr, len);
        self.hosts.evict_lines(self.host, lines);
    }
}

/// `loom::model` with room for the line transfers (every transfer loads and compares whole lines
/// of the view: many more branches per execution than loom's default limit allows), and
/// optionally a lower preemption bound than `LOOM_MAX_PREEMPTIONS` (for models with a thread
/// of spontaneous cache events).
pub fn model(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    if let Some(bound) = preemptions {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}
