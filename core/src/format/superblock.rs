//! The superblock: identity, version, geometry and section table of a region, at offset 0.

use crate::sync::unmodelled::{AtomicU32, AtomicU64};
use crate::sync::Ordering;

use bytemuck::{Pod, Zeroable};
use static_assertions::{const_assert, const_assert_eq};

use super::layout::{Geometry, Layout, Section, SectionKind};
use super::FormatOptions;
use crate::coherence::CoherenceMode;
use crate::region::{Region, RegionError};

/// First bytes of every GISMO region.
pub const MAGIC: [u8; 8] = *b"GISMOREG";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 4;
/// Bytes reserved for the superblock at the start of the region.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// `state` while `format` is writing the region.
pub const STATE_FORMATTING: u32 = 0x464d_5447; // "GTMF"
/// `state` once the region is fully initialised and may be attached.
pub const STATE_READY: u32 = 0x5944_4552; // "REDY"
/// Incompatible feature bits this build understands (none yet).
const KNOWN_INCOMPAT_FEATURES: u64 = 0;

/// The superblock, exactly as stored at offset 0 (little-endian, `#[repr(C)]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Superblock {
    pub magic: [u8; 8],
    pub version: u32,
    /// [`STATE_FORMATTING`] or [`STATE_READY`]; stored last, with `Release`, by `format`.
    pub state: u32,
    /// Features a reader must understand to use the region.
    pub incompat_features: u64,
    /// Features a reader may ignore.
    pub compat_features: u64,
    pub uuid: [u8; 16],
    pub total_size: u64,
    pub created_unix_ms: u64,
    /// [`CoherenceMode`] as `u32`.
    pub coherence: u32,
    pub _pad: u32,
    pub geometry: Geometry,
    pub sections: [Section; SectionKind::COUNT],
    /// FNV-1a 64 of every byte above, with `state` taken as zero.
    pub checksum: u64,
}
const_assert_eq!(std::mem::size_of::<Superblock>(), 288);
const_assert!(std::mem::size_of::<Superblock>() <= SUPERBLOCK_SIZE);
const_assert_eq!(std::mem::offset_of!(Superblock, state), 12);

/// Why a region could not be formatted or attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("region of {size} bytes is too small for a GISMO layout")]
    TooSmall { size: u64 },
    #[error("invalid geometry: {0}")]
    BadGeometry(&'static str),
    #[error("region of {size} bytes is too large: the heap can be at most {max_heap} bytes")]
    TooLarge { size: u64, max_heap: u64 },
    #[error("not a GISMO region (no GISMO magic at offset 0)")]
    NotFormatted,
    #[error(
        "region is being formatted or its format was interrupted (state {state:#x}); wait, or \
         format it again with --force"
    )]
    NotReady { state: u32 },
    #[error("region has format version {found}; this build reads version {supported}")]
    VersionMismatch { found: u32, supported: u32 },
    #[error("region uses features this build does not know ({features:#x})")]
    UnknownFeatures { features: u64 },
    #[error(
        "superblock checksum mismatch (stored {stored:#x}, computed {computed:#x}): corrupt region"
    )]
    BadChecksum { stored: u64, computed: u64 },
    #[error("region header says {recorded} bytes but only {mapped} are mapped")]
    SizeMismatch { recorded: u64, mapped: u64 },
    #[error("unknown coherence mode {0} in superblock")]
    BadCoherence(u32),
    #[error("section {section} at {offset:#x}+{len:#x} is invalid: {why}")]
    BadSection {
        section: &'static str,
        offset: u64,
        len: u64,
        why: &'static str,
    },
    #[error("region already holds a GISMO store (uuid {uuid}); pass --force to overwrite it")]
    AlreadyFormatted { uuid: String },
    #[error(
        "region holds a GISMO superblock this build cannot attach ({0}); not reformatting it \
         without --force"
    )]
    WontOverwrite(Box<FormatError>),
    #[error("region: {0}")]
    Region(String),
}

impl From<RegionError> for FormatError {
    fn from(e: RegionError) -> Self {
        FormatError::Region(e.to_string())
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Superblock {
    /// The checksum of this superblock's contents (state excluded).
    pub fn compute_checksum(&self) -> u64 {
        let mut copy = *self;
        copy.state = 0;
        copy.checksum = 0;
        let bytes = bytemuck::bytes_of(&copy);
        fnv1a(&bytes[..std::mem::offset_of!(Superblock, checksum)])
    }

    pub fn coherence_mode(&self) -> Result<CoherenceMode, FormatError> {
        CoherenceMode::from_u32(self.coherence).ok_or(FormatError::BadCoherence(self.coherence))
    }

    pub fn uuid_string(&self) -> String {
        let u = &self.uuid;
        format!(
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]
        )
    }
}

/// The superblock's state word, viewed atomically.
fn state_word(region: &Region) -> Result<&AtomicU32, FormatError> {
    Ok(crate::shm::view::<AtomicU32>(
        region,
        std::mem::offset_of!(Superblock, state),
    )?)
}

/// Copies the superblock out of the region with atomic word loads (another process may be
/// formatting it concurrently; a torn copy fails the checksum instead of being undefined).
pub fn read_superblock(region: &Region) -> Result<Superblock, FormatError> {
    const WORDS: usize = std::mem::size_of::<Superblock>() / 8;
    let words = crate::shm::view_slice::<AtomicU64>(region, 0, WORDS)?;
    let mut copy = [0u64; WORDS];
    for (dst, src) in copy.iter_mut().zip(words) {
        *dst = src.load(Ordering::Relaxed);
    }
    Ok(bytemuck::cast(copy))
}

fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut u).is_ok() {
            u[6] = (u[6] & 0x0f) | 0x40;
            u[8] = (u[8] & 0x3f) | 0x80;
            return u;
        }
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    u.copy_from_slice(&(t ^ (u128::from(std::process::id()) << 64)).to_le_bytes());
    u
}

/// Formats `region`: zeroes every metadata section, writes the superblock, and publishes it.
///
/// # Errors
/// [`FormatError::AlreadyFormatted`] if the region holds a valid store and `opts.force` is not
/// set; [`FormatError::TooSmall`] / [`FormatError::BadGeometry`] from the layout.
pub fn format(region: &Region, opts: &FormatOptions) -> Result<Layout, FormatError> {
    let layout = Layout::compute(region.len() as u64, opts)?;
    let state = state_word(region)?;
    if opts.force {
        // Relaxed is enough: this store only has to land before the Release store of READY
        // below, which program order and that Release guarantee.
        state.store(STATE_FORMATTING, Ordering::Relaxed);
    } else {
        let seen = state.load(Ordering::Relaxed);
        check_formattable(region)?;
        // The claim: of processes formatting one fresh region at once, exactly one moves the
        // state word to FORMATTING; the others get NotReady (and wait for READY). From here on
        // every attach answers NotReady, never NotFormatted. Relaxed: the RMW's atomicity is all
        // the claim needs; READY's Release below publishes the work.
        state
            .compare_exchange(seen, STATE_FORMATTING, Ordering::Relaxed, Ordering::Relaxed)
            .map_err(|now| FormatError::NotReady { state: now })?;
    }

    // Zero every metadata section (all-zero is the empty state of every structure). The heap is
    // left alone: its contents are only reachable through metadata.
    for kind in SectionKind::ALL {
        if kind == SectionKind::Heap {
            continue;
        }
        let s = layout.section(kind);
        let words =
            crate::shm::view_slice::<AtomicU64>(region, s.offset as usize, (s.len / 8) as usize)?;
        for w in words {
            w.store(0, Ordering::Relaxed);
        }
    }

    let mut sb = Superblock {
        magic: MAGIC,
        version: FORMAT_VERSION,
        state: 0,
        incompat_features: 0,
        compat_features: 0,
        uuid: random_uuid(),
        total_size: layout.total_size,
        created_unix_ms: crate::clock::unix_ms(),
        coherence: opts.coherence as u32,
        _pad: 0,
        geometry: layout.geometry,
        sections: layout.sections,
        checksum: 0,
    };
    sb.checksum = sb.compute_checksum();
    let bytes: [u64; std::mem::size_of::<Superblock>() / 8] = bytemuck::cast(sb);
    let words = crate::shm::view_slice::<AtomicU64>(region, 0, bytes.len())?;
    let state_index = std::mem::offset_of!(Superblock, state) / 8;
    for (i, (w, v)) in words.iter().zip(bytes).enumerate() {
        if i == state_index {
            // Keep the FORMATTING state in the word that holds it; `version` shares the word.
            let keep = u64::from(FORMAT_VERSION) | (u64::from(STATE_FORMATTING) << 32);
            w.store(keep, Ordering::Relaxed);
        } else {
            w.store(v, Ordering::Relaxed);
        }
    }
    // An emulated non-coherent host: other hosts see the format only through the device, so
    // everything written so far (the state word still FORMATTING) reaches it before READY does.
    let emulated = region.emulated_host();
    if let Some(host) = emulated {
        host.write_back_dirty(0, region.len());
    }
    // Release: pairs with the Acquire load in `attach`; publishes every section and header store
    // above to whoever sees READY.
    state.store(STATE_READY, Ordering::Release);
    if let Some(host) = emulated {
        host.write_back(host.offset_of(std::ptr::from_ref(state).cast(), 4), 4);
    }
    Ok(layout)
}

/// Whether `region` may be formatted without `force`: only a region that holds no GISMO
/// superblock at all (no magic, and no format in progress).
///
/// # Errors
/// [`FormatError::AlreadyFormatted`] for a valid store; [`FormatError::NotReady`] while another
/// process formats it (or after an interrupted format); [`FormatError::WontOverwrite`] for a
/// superblock this build cannot attach (another version, unknown features, a bad checksum...):
/// none of these is a reason to destroy what the region holds.
pub fn check_formattable(region: &Region) -> Result<(), FormatError> {
    match attach(region) {
        Ok((sb, _)) => Err(FormatError::AlreadyFormatted {
            uuid: sb.uuid_string(),
        }),
        Err(FormatError::NotFormatted) => Ok(()),
        Err(e @ (FormatError::NotReady { .. } | FormatError::TooSmall { .. })) => Err(e),
        Err(e) => Err(FormatError::WontOverwrite(Box::new(e))),
    }
}

/// Validates the region's superblock and returns it with its layout.
///
/// Checks, in order: size, magic, state (Acquire), version, features, checksum, recorded size
/// against the mapping, coherence mode, geometry, and that the stored section table equals the
/// one recomputed from the geometry (so every section is inside the region and none overlap).
///
/// # Errors
/// One [`FormatError`] variant per failed check; never panics, never reads outside the region.
pub fn attach(region: &Region) -> Result<(Superblock, Layout), FormatError> {
    if region.len() < SUPERBLOCK_SIZE {
        return Err(FormatError::TooSmall {
            size: region.len() as u64,
        });
    }
    // Acquire: pairs with the Release store of READY in `format`.
    let state = state_word(region)?.load(Ordering::Acquire);
    // Before the magic: a format in progress writes the magic late, and must read as "not
    // ready" (wait), never as "not formatted" (format it).
    if state == STATE_FORMATTING {
        return Err(FormatError::NotReady { state });
    }
    let sb = read_superblock(region)?;
    if sb.magic != MAGIC {
        return Err(FormatError::NotFormatted);
    }
    if state != STATE_READY {
        return Err(FormatError::NotReady { state });
    }
    if sb.version != FORMAT_VERSION {
        return Err(FormatError::VersionMismatch {
            found: sb.version,
            supported: FORMAT_VERSION,
        });
    }
    if sb.incompat_features & !KNOWN_INCOMPAT_FEATURES != 0 {
        return Err(FormatError::UnknownFeatures {
            features: sb.incompat_features & !KNOWN_INCOMPAT_FEATURES,
        });
    }
    let computed = sb.compute_checksum();
    if computed != sb.checksum {
        return Err(FormatError::BadChecksum {
            stored: sb.checksum,
            computed,
        });
    }
    if sb.total_size > region.len() as u64 {
        return Err(FormatError::SizeMismatch {
            recorded: sb.total_size,
            mapped: region.len() as u64,
        });
    }
    sb.coherence_mode()?;
    Layout::check_geometry(&sb.geometry)?;
    let expected = Layout::from_geometry(sb.total_size, &sb.geometry).ok_or(
        FormatError::BadGeometry("sections do not fit in the recorded size"),
    )?;
    let mut prev_end = SUPERBLOCK_SIZE as u64;
    for kind in SectionKind::ALL {
        let (s, e) = (sb.sections[kind as usize], expected.section(kind));
        let bad = |why| FormatError::BadSection {
            section: kind.name(),
            offset: s.offset,
            len: s.len,
            why,
        };
        if s != e {
            return Err(bad("does not match the geometry"));
        }
        if s.offset < prev_end || s.end() > sb.total_size || s.offset % 8 != 0 {
            return Err(bad("overlaps another section or leaves the region"));
        }
        prev_end = s.end();
    }
    Ok((sb, expected))
}
