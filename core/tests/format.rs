//! The on-region format: publication, refusal to reformat, and attach-time validation of foreign,
//! corrupt or hostile superblocks (property tests).

use gismo_core::format::{self, FormatError, FormatOptions, Superblock, FORMAT_VERSION};
use gismo_platform::region::{Region, RegionOptions, RegionSpec};
use proptest::prelude::*;

fn memfd(size: u64) -> Region {
    Region::create(
        &RegionSpec::Memfd {
            name: "gismo-format-test".into(),
            huge_pages: false,
        },
        size,
        &RegionOptions::default(),
    )
    .expect("memfd region")
}

fn formatted(size: u64) -> Region {
    let r = memfd(size);
    format::format(&r, &FormatOptions::default()).expect("format");
    r
}

/// Overwrites the superblock bytes with `sb` (and optionally a recomputed checksum).
fn write_superblock(r: &Region, mut sb: Superblock, fix_checksum: bool) {
    if fix_checksum {
        sb.checksum = sb.compute_checksum();
    }
    let bytes = bytemuck::bytes_of(&sb);
    // SAFETY: the region is at least 4 KiB and mapped; this test is its only user.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), r.as_ptr(), bytes.len()) };
}

fn poke(r: &Region, offset: usize, xor: u8) {
    // SAFETY: offset < 4096 <= region length; this test is the region's only user.
    unsafe { *r.as_ptr().add(offset) ^= xor };
}

#[test]
fn format_then_attach_round_trips() {
    let r = formatted(64 << 20);
    let (sb, layout) = format::attach(&r).unwrap();
    assert_eq!(sb.version, FORMAT_VERSION);
    assert_eq!(sb.total_size, 64 << 20);
    assert!(
        layout.metadata_ratio() < 0.02,
        "metadata ratio {}",
        layout.metadata_ratio()
    );
}

#[test]
fn reformat_needs_force() {
    let r = formatted(16 << 20);
    let (sb1, _) = format::attach(&r).unwrap();
    match format::format(&r, &FormatOptions::default()) {
        Err(FormatError::AlreadyFormatted { uuid }) => assert_eq!(uuid, sb1.uuid_string()),
        other => panic!("expected AlreadyFormatted, got {other:?}"),
    }
    let forced = FormatOptions {
        force: true,
        ..FormatOptions::default()
    };
    format::format(&r, &forced).unwrap();
    let (sb2, _) = format::attach(&r).unwrap();
    assert_ne!(sb1.uuid, sb2.uuid);
}

#[test]
fn unformatted_and_too_small_regions_are_refused() {
    let r = memfd(16 << 20);
    assert_eq!(format::attach(&r).unwrap_err(), FormatError::NotFormatted);
    let tiny = memfd(64 << 10);
    assert!(matches!(
        format::format(&tiny, &FormatOptions::default()),
        Err(FormatError::TooSmall { .. })
    ));
}

#[test]
fn interrupted_format_is_not_ready() {
    let r = formatted(16 << 20);
    let (mut sb, _) = format::attach(&r).unwrap();
    sb.state = format::STATE_FORMATTING;
    write_superblock(&r, sb, false);
    assert!(matches!(
        format::attach(&r),
        Err(FormatError::NotReady { .. })
    ));
}

#[test]
fn newer_version_is_named_in_the_error() {
    let r = formatted(16 << 20);
    let (mut sb, _) = format::attach(&r).unwrap();
    sb.version = 7;
    write_superblock(&r, sb, true);
    let err = format::attach(&r).unwrap_err();
    assert_eq!(
        err,
        FormatError::VersionMismatch {
            found: 7,
            supported: FORMAT_VERSION
        }
    );
    assert!(
        err.to_string()
            .contains("format version 7; this build reads version 4"),
        "{err}"
    );
}

/// Regions of version 2 (before the page-bitmap summary) and 3 (before the free-run index) are
/// refused with the typed error: their page-bitmap section is too short for this build's layout.
#[test]
fn version_2_and_3_regions_are_refused() {
    for version in [2, 3] {
        let r = formatted(16 << 20);
        let (mut sb, _) = format::attach(&r).unwrap();
        sb.version = version;
        write_superblock(&r, sb, true);
        assert_eq!(
            format::attach(&r).unwrap_err(),
            FormatError::VersionMismatch {
                found: version,
                supported: 4
            }
        );
    }
}

#[test]
fn region_shorter_than_recorded_is_refused() {
    let r = formatted(32 << 20);
    let (sb, _) = format::attach(&r).unwrap();
    let short = memfd(16 << 20);
    write_superblock(&short, sb, false);
    // Copy the state word as READY too (write_superblock copied it).
    assert!(matches!(
        format::attach(&short),
        Err(FormatError::SizeMismatch { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Flipping any bytes of the superblock is detected (checksum, magic, state...).
    #[test]
    fn random_byte_corruption_is_a_typed_error(edits in proptest::collection::vec((0usize..288, 1u8..=255), 1..8)) {
        let r = formatted(8 << 20);
        for (off, x) in &edits {
            poke(&r, *off, *x);
        }
        // XOR edits at the same offset may cancel out; only assert when the bytes differ.
        let changed = {
            let mut net = std::collections::HashMap::new();
            for (off, x) in &edits { *net.entry(*off).or_insert(0u8) ^= *x; }
            net.values().any(|v| *v != 0)
        };
        let res = format::attach(&r);
        if changed {
            prop_assert!(res.is_err(), "corruption {edits:?} was accepted");
        }
    }

    /// A hostile writer that also fixes the checksum still cannot make attach accept a layout that
    /// leaves the region or overlaps itself.
    #[test]
    fn forged_fields_with_valid_checksum_are_refused(
        field in 0usize..8,
        value in any::<u64>(),
        section in 0usize..10,
    ) {
        let r = formatted(8 << 20);
        let (orig, layout) = format::attach(&r).unwrap();
        let mut sb = orig;
        match field {
            0 => sb.total_size = value,
            1 => sb.geometry.dir_capacity = value,
            2 => sb.geometry.heap_pages = value,
            3 => sb.geometry.max_clients = value as u32,
            4 => sb.sections[section].offset = value,
            5 => sb.sections[section].len = value,
            6 => sb.coherence = value as u32,
            _ => sb.incompat_features = value,
        }
        write_superblock(&r, sb, true);
        if let Ok((got, l)) = format::attach(&r) {
                // Accepted only if the forgery kept a valid, in-bounds layout.
                prop_assert!(got.total_size <= r.len() as u64);
                for kind in gismo_core::format::SectionKind::ALL {
                    prop_assert!(l.section(kind).end() <= got.total_size);
                }
                if got.sections != orig.sections {
                    prop_assert_eq!(l, gismo_core::format::Layout::from_geometry(got.total_size, &got.geometry).unwrap());
                }
                let _ = layout;
        }
    }
}
