//! Test-only recorder of what the kernels did to which line: written back, streamed
//! (non-temporal), invalidated, fenced.
//!
//! Compiled only into unit-test builds (`cfg(test)`), so release code carries no trace of it. The
//! recorder is thread-local: a test turns it on with [`record_during`], runs kernels on the same
//! thread, and gets the events back in program order. Tests running in parallel on other threads
//! do not interfere.

use std::cell::{Cell, RefCell};

use super::strategy::FlushInstr;

/// One thing a kernel did. Addresses are line starts (multiples of 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The line was written back with the instruction (after being written with ordinary stores).
    WriteBack(usize, FlushInstr),
    /// The whole line was written with non-temporal stores.
    Stream(usize),
    /// The line was invalidated with the instruction.
    Invalidate(usize, FlushInstr),
    /// An `sfence` closing a copy or write back.
    Sfence,
    /// An `mfence` around an invalidate.
    Mfence,
}

thread_local! {
    static EVENTS: RefCell<Option<Vec<Event>>> = const { RefCell::new(None) };
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is recording (cheap: kernels test it once per call, not once per line).
pub(crate) fn recording() -> bool {
    RECORDING.with(Cell::get)
}

/// Appends `event` if this thread is recording.
pub(crate) fn record(event: Event) {
    if !recording() {
        return;
    }
    EVENTS.with(|events| {
        if let Some(events) = events.borrow_mut().as_mut() {
            events.push(event);
        }
    });
}

/// Runs `f` with recording on for this thread and returns its result and the events.
pub(crate) fn record_during<R>(f: impl FnOnce() -> R) -> (R, Vec<Event>) {
    EVENTS.with(|events| *events.borrow_mut() = Some(Vec::new()));
    RECORDING.with(|on| on.set(true));
    let result = f();
    RECORDING.with(|on| on.set(false));
    let events = EVENTS
        .with(|events| events.borrow_mut().take())
        .unwrap_or_default();
    (result, events)
}
