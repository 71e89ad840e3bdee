//! The host's ticker: which one of a host's processes writes the host's register (joins, beats,
//! takes over, leads), and how the next one carries on when it dies.
//!
//! A register has one writer host, and within the host one writer process: two processes
//! writing the record at once would interleave its seq and body. The ticker is the holder of an
//! exclusive lock on a host-local file (`flock`, through `File::try_lock`): host-local by nature
//! (nothing of it is in the shared region, so no cross-host atomics and no lease are involved),
//! and released by the kernel the moment its holder dies, however it dies. The other processes
//! poll the lock; the one that gets it finds the host's register (LIVE under the host's
//! identity) and resumes its membership, or joins if there is none.
//!
//! The handover carries what the self-lease needs: after each write the ticker records, in the
//! lock file, the clock reading taken before that write and the record's nonce. The successor
//! resumes from them when the nonce is the register's, and its self-lease runs on from the
//! predecessor's last write; otherwise (a ticker that died before recording, or a file of an
//! earlier membership) it does not resume but joins, claiming the register back after watching
//! it unchanged for a lease. The clock the memberships run on must therefore be one clock for
//! every process of the host: `gismo_platform::clock::host_ms` (`CLOCK_BOOTTIME`), not the
//! per-process `monotonic_ms`. A ticker paused past its
//! self-lease while holding the lock writes nothing (`Membership::check_fenced`), and keeps the
//! lock: the host then stops beating until it resumes or dies, and its register may be taken
//! over — the same as a host whose only process pauses.
//!
//! The lock file's path must be the same for every process of the host and for no other host:
//! e.g. under `/dev/shm` or `/run` named by the region's identity and the host's name (for
//! emulated hosts on one machine, under the emulation directory, per host). Processes that see
//! different file systems (containers without a shared `/dev/shm`) are different hosts to it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::hosts::{HostTable, Identity, Membership, State, Timing};
use crate::coherence::Coherence;

/// Why the ticker's lock file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("host ticker lock {path}: {source}")]
pub struct TickerError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// This process is the host's ticker while it holds this (dropping it, or dying, hands over).
#[derive(Debug)]
pub struct Ticker {
    file: File,
    path: PathBuf,
}

/// What a ticker records for its successor: the clock reading before its last write and the
/// nonce of the record it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handover {
    pub last_landed: u64,
    pub nonce: u64,
}

impl Ticker {
    /// Becomes the host's ticker if no other process is: `None` while another holds the lock.
    ///
    /// # Errors
    /// [`TickerError`] if the lock file cannot be opened or locked (other than being held).
    pub fn try_acquire(path: &Path) -> Result<Option<Ticker>, TickerError> {
        let err = |source| TickerError {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Ticker {
                file,
                path: path.to_owned(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(err(e)),
        }
    }

    /// What the previous ticker recorded, if anything readable.
    pub fn handover(&mut self) -> Option<Handover> {
        let mut b = [0u8; 16];
        self.file.seek(SeekFrom::Start(0)).ok()?;
        self.file.read_exact(&mut b).ok()?;
        let (l, n) = b.split_at(8);
        Some(Handover {
            last_landed: u64::from_le_bytes(l.try_into().ok()?),
            nonce: u64::from_le_bytes(n.try_into().ok()?),
        })
    }

    /// Records `m`'s last write for the next ticker (after every write path of `m`).
    ///
    /// # Errors
    /// [`TickerError`] on a write error.
    pub fn record(&mut self, m: &Membership<'_>) -> Result<(), TickerError> {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&m.last_landed().to_le_bytes());
        b[8..].copy_from_slice(&m.mine().nonce.to_le_bytes());
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&b))
            .map_err(|source| TickerError {
                path: self.path.clone(),
                source,
            })
    }

    /// The new ticker's membership: the host's register (LIVE under `id`), resumed with the
    /// previous ticker's handover. `None` if the host has no register, or the handover does not
    /// name its record (a ticker that died before recording, a file of an earlier membership):
    /// the caller then joins, which claims the same register back once it has watched it
    /// unchanged for a lease — never writing it before.
    pub fn resume<'a>(
        &mut self,
        table: HostTable<'a>,
        c: &'a Coherence,
        id: Identity,
        timing: Timing,
    ) -> Option<Membership<'a>> {
        let index = find_own(table, c, id)?;
        let mine = table.read(c, index).ok()?;
        let h = self.handover().filter(|h| h.nonce == mine.nonce)?;
        Some(Membership::with_record(
            table,
            c,
            timing,
            index,
            mine,
            h.last_landed,
        ))
    }
}

/// The index of the host's own register: LIVE under `id` (its name and boot).
pub fn find_own(table: HostTable<'_>, c: &Coherence, id: Identity) -> Option<usize> {
    (0..table.len()).find(|&i| {
        table
            .read(c, i)
            .is_ok_and(|s| s.identity == id && s.state == State::Live)
    })
}
