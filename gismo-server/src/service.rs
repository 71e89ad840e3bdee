//! The service loop: runs each periodic task when it is due until a stop is requested.
//!
//! The loop sleeps at most [`TICK`] at a time, so a SIGTERM is noticed within a tick even
//! though the signal handler only sets a flag.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_core::store::Store;

use crate::shutdown::Shutdown;
use crate::tasks::PeriodicTask;
use log::{debug, warn};

/// The longest the loop sleeps before looking at the stop flag again.
const TICK: Duration = Duration::from_millis(100);

struct Scheduled {
    task: Box<dyn PeriodicTask>,
    due: Instant,
}

pub struct Service {
    store: Arc<Store>,
    tasks: Vec<Scheduled>,
}

impl Service {
    pub fn new(store: Arc<Store>, tasks: Vec<Box<dyn PeriodicTask>>) -> Service {
        let now = Instant::now();
        let tasks = tasks
            .into_iter()
            .map(|task| Scheduled { task, due: now })
            .collect();
        Service { store, tasks }
    }

    /// Runs until `shutdown` is requested.
    pub fn run(&mut self, shutdown: &Shutdown) {
        while !shutdown.requested() {
            let now = Instant::now();
            for s in &mut self.tasks {
                if s.due <= now {
                    if let Err(e) = s.task.run(&self.store) {
                        warn!("task {}: {e}", s.task.name());
                    }
                    s.due = now + s.task.period();
                }
            }
            let next = self.tasks.iter().map(|s| s.due).min();
            let nap = next.map_or(TICK, |d| d.saturating_duration_since(Instant::now()));
            std::thread::sleep(nap.min(TICK));
        }
        debug!("service loop stopped");
    }
}
