//! Ctrl-C and SIGTERM while gismoctl holds store state.
//!
//! A gismoctl process killed while it is attached leaves its client table entry (and, during a
//! put, an unsealed object) behind until a reaper reclaims them. So the commands that wait or
//! write — `get` while it waits, `put` while it copies — install these handlers just *before*
//! they attach (so no signal can kill them once their client is in the table), poll
//! [`Interrupt::requested`] between short steps, and then fail normally: dropping the client
//! releases its references, aborts an unsealed object and frees its table entry. Until then (e.g.
//! while `put -` reads a terminal) the signals keep their default action.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::failure::{CmdResult, ExitCode, Failure};

/// Whether SIGINT or SIGTERM arrived since [`Interrupt::install`].
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Routes SIGINT and SIGTERM to a flag (for the rest of the process's life).
    ///
    /// # Errors
    /// A generic failure if a handler cannot be installed.
    pub fn install() -> CmdResult<Interrupt> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(|e| {
                Failure::new(
                    ExitCode::Error,
                    format!("cannot install signal handler: {e}"),
                )
            })?;
        }
        Ok(Interrupt(flag))
    }

    pub fn requested(&self) -> bool {
        // Relaxed: the flag carries no data; the command only has to notice it soon.
        self.0.load(Ordering::Relaxed)
    }

    /// Fails with [`ExitCode::Interrupted`] if a signal arrived.
    ///
    /// # Errors
    /// `what: interrupted` when a signal arrived.
    pub fn check(&self, what: &str) -> CmdResult {
        if self.requested() {
            Err(Failure::new(
                ExitCode::Interrupted,
                format!("{what}: interrupted"),
            ))
        } else {
            Ok(())
        }
    }
}
