//! Ray's status codes, as the plugin boundary reports them.

use gismo_core::store::StoreError;

/// The subset of Ray's `StatusCode` an object store returns (numbering as in Ray's `status.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum StatusCode {
    Ok = 0,
    OutOfMemory = 1,
    KeyError = 2,
    TypeError = 3,
    Invalid = 4,
    IOError = 5,
    UnknownError = 9,
    NotImplemented = 10,
    ObjectExists = 21,
    ObjectNotFound = 22,
    ObjectAlreadySealed = 23,
    ObjectStoreFull = 24,
    TransientObjectStoreFull = 25,
    TimedOut = 12,
    OutOfDisk = 28,
}

/// A failed call: a code and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    pub code: StatusCode,
    pub message: String,
}

impl Status {
    pub fn new(code: StatusCode, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Status {
        Status::new(StatusCode::Invalid, message)
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        let code = match &e {
            StoreError::ObjectExists(_) => StatusCode::ObjectExists,
            StoreError::ObjectNotFound(_) => StatusCode::ObjectNotFound,
            StoreError::ObjectAlreadySealed(_) => StatusCode::ObjectAlreadySealed,
            StoreError::StoreFull { .. } | StoreError::DirectoryFull { .. } => {
                StatusCode::ObjectStoreFull
            }
            StoreError::TimedOut => StatusCode::TimedOut,
            StoreError::ObjectNotSealed(_)
            | StoreError::NotCreator(_)
            | StoreError::InUse { .. }
            | StoreError::Invalid(_)
            | StoreError::Fenced { .. } => StatusCode::Invalid,
            StoreError::MaintenanceBusy { .. } | StoreError::MaintenanceLost => {
                StatusCode::TimedOut
            }
            StoreError::ClientTableFull { .. }
            | StoreError::HostTableFull { .. }
            | StoreError::References(_) => StatusCode::OutOfMemory,
            StoreError::Corrupt(_) | StoreError::Format(_) | StoreError::Region(_) => {
                StatusCode::IOError
            }
        };
        Status::new(code, e.to_string())
    }
}
