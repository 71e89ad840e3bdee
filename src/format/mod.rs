//! The on-region format.
