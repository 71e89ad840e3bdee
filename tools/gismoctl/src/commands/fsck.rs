//! `gismoctl fsck`: checks the directory, the allocator and the client table against each
//! other (`Store::fsck`); with `--repair`, fixes what is safe to fix.
//!
//! Prints every problem, one per line, then a summary line. Exits 1 when a problem remains
//! (after `--repair`: one it could not fix). Repairs are exact only on a quiescent region, so
//! `--repair` refuses while any client is active unless `--force` (a server's own client counts:
//! stop the servers first).

use std::fmt::Write as _;

use gismo_core::store::fsck::FsckReport;
use gismo_platform::region::RegionSpec;
use gismo_platform::units::ByteSize;
use serde_json::{json, Value};

use crate::cli::FsckArgs;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::{output, region_access};

pub fn run(spec: &RegionSpec, args: &FsckArgs) -> CmdResult {
    let store = region_access::attach(spec)?;
    let mut repaired = None;
    if args.repair {
        let active = store.stats().clients_active;
        if active > 0 && !args.force {
            return Err(Failure::new(
                ExitCode::Error,
                format!(
                    "refusing to repair: {active} client(s) active (stop them, or pass --force \
                     to repair anyway)"
                ),
            ));
        }
        // Reaps interrupted by a dead maintainer (`DEAD` entries) are finished first, under the
        // maintenance lock, which needs a registered client: ours, for this one pass. (Before
        // the repair: a dead entry's intent would otherwise look like a leak.)
        let dead: Vec<_> = store
            .fsck(false)
            .problems
            .into_iter()
            .filter(|p| matches!(p, gismo_core::store::fsck::Problem::DeadClient { .. }))
            .collect();
        let me = store
            .connect("gismoctl-fsck")
            .map_err(|e| Failure::new(ExitCode::Error, format!("connecting to repair: {e}")))?;
        let reaped = me.reap_dead(gismo_core::store::MAINTENANCE_LEASE.as_millis() as u64);
        me.disconnect();
        reaped.map_err(|e| Failure::new(ExitCode::Error, format!("finishing reaps: {e}")))?;
        let mut r = store.fsck(true);
        r.repaired += dead.len();
        r.problems.splice(0..0, dead);
        repaired = Some(r);
    }
    // After a repair, report what is left.
    let report = store.fsck(false);
    if args.json {
        output::json(&to_json(&report, repaired.as_ref()))?;
    } else {
        output::stdout(&to_text(&report, repaired.as_ref()))?;
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::new(
            ExitCode::Error,
            format!("{} problem(s) found", report.problems.len()),
        ))
    }
}

fn to_text(r: &FsckReport, repaired: Option<&FsckReport>) -> String {
    let mut t = String::new();
    if let Some(before) = repaired {
        for p in &before.problems {
            let what = if p.repairable() {
                "repaired"
            } else {
                "not repairable"
            };
            let _ = writeln!(t, "{what}: {p}");
        }
    }
    for p in &r.problems {
        let _ = writeln!(t, "problem: {p}");
    }
    let _ = write!(
        t,
        "{}: {} objects, {} live, {} used in the heap, {} accounted allocations, {} active \
         clients",
        if r.is_clean() { "clean" } else { "NOT CLEAN" },
        r.objects,
        ByteSize(r.live_bytes),
        ByteSize(r.used_bytes),
        r.accounted_allocations,
        r.active_clients
    );
    if let Some(drift) = r.counter_drift {
        let _ = write!(t, "; used-bytes counter reads {drift}");
    }
    if let Some(before) = repaired {
        let _ = write!(t, "; repaired {}", before.repaired);
    }
    t.push('\n');
    t
}

fn to_json(r: &FsckReport, repaired: Option<&FsckReport>) -> Value {
    json!({
        "clean": r.is_clean(),
        "objects": r.objects,
        "live_bytes": r.live_bytes,
        "used_bytes": r.used_bytes,
        "accounted_allocations": r.accounted_allocations,
        "active_clients": r.active_clients,
        "counter_drift": r.counter_drift,
        "problems": r.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "repaired": repaired.map(|b| json!({
            "count": b.repaired,
            "problems": b.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        })),
    })
}
