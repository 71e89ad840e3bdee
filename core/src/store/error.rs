//! Errors of the store core. The interface layer maps them onto Ray's status codes.

use crate::format::FormatError;
use crate::region::RegionError;
use crate::store::object_id::ObjectId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} already exists")]
    ObjectExists(ObjectId),
    #[error("object {0} not found")]
    ObjectNotFound(ObjectId),
    #[error("object {0} is already sealed")]
    ObjectAlreadySealed(ObjectId),
    #[error("object {0} is not sealed")]
    ObjectNotSealed(ObjectId),
    #[error("object {0} was created by another client; only its creator may seal or abort it")]
    NotCreator(ObjectId),
    #[error("object {id} is in use by this client ({count} references); release it first")]
    InUse { id: ObjectId, count: u32 },
    #[error("store full: no room for {requested} bytes ({free} of {capacity} bytes free)")]
    StoreFull {
        requested: u64,
        free: u64,
        capacity: u64,
    },
    #[error("object directory full ({capacity} slots); increase dir_capacity at format time")]
    DirectoryFull { capacity: usize },
    #[error("client table full ({capacity} clients)")]
    ClientTableFull { capacity: usize },
    #[error(
        "host table full ({capacity} hosts, all with active clients); increase max_hosts at \
         format time"
    )]
    HostTableFull { capacity: usize },
    #[error("{0}")]
    References(#[from] crate::store::refs::RefError),
    #[error("timed out")]
    TimedOut,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("this client was declared dead by the reaper (epoch {epoch}) and must reconnect")]
    Fenced { epoch: u32 },
    #[error("client {holder} is maintaining the region (reaping); it will reap what is dead")]
    MaintenanceBusy { holder: usize },
    #[error(
        "this client lost the maintenance lock during a pass (another maintainer took it over); \
         what it left is the new maintainer's"
    )]
    MaintenanceLost,
    #[error("region metadata is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Region(#[from] RegionError),
}

impl From<crate::store::allocator::AllocError> for StoreError {
    fn from(e: crate::store::allocator::AllocError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl StoreError {
    /// A corrupt value read from the region: `what` is wrong at `place` (e.g. "slot 12").
    pub fn corrupt(place: impl std::fmt::Display, what: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("{place}: {what}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
