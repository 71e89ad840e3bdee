//! Stopping on SIGTERM and SIGINT: the handlers only set a flag, which the service loop polls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// Set once a stop was requested.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// Installs the SIGTERM and SIGINT handlers.
    ///
    /// # Errors
    /// The OS error if a handler cannot be installed.
    pub fn install() -> std::io::Result<Shutdown> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGTERM, SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
        }
        Ok(Shutdown(flag))
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        // Relaxed: the flag carries no data; the loop only has to notice it eventually.
        self.0.load(Ordering::Relaxed)
    }
}
