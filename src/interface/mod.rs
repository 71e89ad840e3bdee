//! Ray-shaped interfaces.
