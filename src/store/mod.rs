//! The store core.
