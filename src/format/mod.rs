//! The on-region format: a superblock at offset 0 that names every section of the region, written
//! once by `format` and validated in full by every attach.
//!
//! The authoritative description is `docs/region-format.md`; this module is its implementation.
//! Formatting writes every section, then the superblock, and publishes the region last by storing
//! [`STATE_READY`] into the superblock's state word with `Release` ordering. Attach loads that word
//! with `Acquire` (pairing with the publishing store), so it either sees a fully initialised region
//! or refuses it with [`FormatError::NotReady`]; it never reads a half-built header.

pub mod layout;
mod superblock;

pub use layout::{FormatOptions, Geometry, Layout, Section, SectionKind};
pub use superblock::{
    attach, check_formattable, format, FormatError, Superblock, FORMAT_VERSION, MAGIC,
    STATE_FORMATTING, STATE_READY, SUPERBLOCK_SIZE,
};
