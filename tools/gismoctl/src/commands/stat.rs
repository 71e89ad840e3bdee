//! `gismoctl stat`: the store's size, usage, objects by state, clients and counters.

use std::fmt::Write as _;

use gismo_core::store::directory::state;
use gismo_core::store::leader::LeaderInfo;
use gismo_core::store::Stats;
use gismo_platform::clock::unix_ms;
use gismo_platform::region::RegionSpec;
use gismo_platform::units::ByteSize;
use serde_json::{json, Map, Value};

use crate::failure::CmdResult;
use crate::{output, region_access};

pub fn run(spec: &RegionSpec, json: bool) -> CmdResult {
    let store = region_access::attach(spec)?;
    let s = store.stats();
    let leader = store.leader();
    let now = unix_ms();
    if json {
        let mut v = to_json(spec, &s);
        v["leader"] = leader_json(&leader, now);
        output::json(&v)
    } else {
        let mut t = to_text(spec, &s);
        let _ = writeln!(t, "leader      {}", leader_text(&leader, now));
        output::stdout(&t)
    }
}

/// The lease holder and how long its lease still runs (negative: expired).
fn leader_text(l: &LeaderInfo, now_ms: u64) -> String {
    match l.holder {
        None => "none".to_string(),
        Some(h) => format!(
            "client {} (epoch {}, pid {}), lease {} ms",
            h.client,
            h.epoch,
            l.pid,
            remaining(l, now_ms)
        ),
    }
}

fn remaining(l: &LeaderInfo, now_ms: u64) -> String {
    if l.lease_until_ms >= now_ms {
        format!("expires in {}", l.lease_until_ms - now_ms)
    } else {
        format!("expired {} ago", now_ms - l.lease_until_ms)
    }
}

fn leader_json(l: &LeaderInfo, now_ms: u64) -> Value {
    match l.holder {
        None => Value::Null,
        Some(h) => json!({
            "client": h.client,
            "epoch": h.epoch,
            "pid": l.pid,
            "lease_until_ms": l.lease_until_ms,
            "lease_remaining_ms": l.lease_until_ms as i64 - now_ms as i64,
        }),
    }
}

/// `(name, count)` for every object state, in state order.
fn by_state(s: &Stats) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    s.objects_by_state
        .iter()
        .enumerate()
        .map(|(i, &n)| (state::name(i as u8), n))
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn to_text(spec: &RegionSpec, s: &Stats) -> String {
    let free = s.heap_bytes.saturating_sub(s.used_bytes);
    let mut t = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(t, "region      {spec}");
    let _ = writeln!(t, "uuid        {}", s.uuid);
    let _ = writeln!(t, "coherence   {}", s.coherence);
    let _ = writeln!(
        t,
        "size        {} (heap {}, metadata {:.2}% of heap)",
        ByteSize(s.region_bytes),
        ByteSize(s.heap_bytes),
        s.metadata_ratio * 100.0
    );
    let _ = writeln!(
        t,
        "used        {} ({:.1}%) in {} allocations, {} free",
        ByteSize(s.used_bytes),
        percent(s.used_bytes, s.heap_bytes),
        s.allocations,
        ByteSize(free)
    );
    let states: Vec<String> = by_state(s).map(|(n, c)| format!("{n} {c}")).collect();
    let _ = writeln!(
        t,
        "objects     {} (directory capacity {})",
        states.join(", "),
        s.dir_capacity
    );
    let _ = writeln!(
        t,
        "clients     {} active of {} ({} references each)",
        s.clients_active, s.max_clients, s.refs_per_client
    );
    let _ = writeln!(
        t,
        "counters    created {}, sealed {}, deleted {}, evicted {}, aborted {}, clients reaped {}",
        s.objects_created,
        s.objects_sealed,
        s.objects_deleted,
        s.objects_evicted,
        s.objects_aborted,
        s.clients_reaped
    );
    if s.owner_nodes_dropped > 0 {
        let _ = writeln!(
            t,
            "warning     {} create(s) recorded no owner node: the owner-node table is full",
            s.owner_nodes_dropped
        );
    }
    let used: Vec<_> = s.classes.iter().filter(|c| c.1 > 0).collect();
    if used.is_empty() {
        let _ = writeln!(t, "size classes: none in use");
    } else {
        let _ = writeln!(
            t,
            "size classes:\n  {:>10}  {:>8}  {:>12}",
            "block", "chunks", "blocks used"
        );
        for (block, chunks, blocks) in used {
            let _ = writeln!(t, "  {block:>10}  {chunks:>8}  {blocks:>12}");
        }
    }
    t
}

fn to_json(spec: &RegionSpec, s: &Stats) -> Value {
    let objects: Map<String, Value> = by_state(s)
        .map(|(n, c)| (n.to_string(), json!(c)))
        .collect();
    let classes: Vec<Value> = s
        .classes
        .iter()
        .map(|(block, chunks, used)| {
            json!({ "block_size": block, "chunks": chunks, "blocks_used": used })
        })
        .collect();
    json!({
        "region": spec.to_string(),
        "uuid": s.uuid,
        "coherence": s.coherence,
        "region_bytes": s.region_bytes,
        "heap_bytes": s.heap_bytes,
        "used_bytes": s.used_bytes,
        "free_bytes": s.heap_bytes.saturating_sub(s.used_bytes),
        "allocations": s.allocations,
        "dir_capacity": s.dir_capacity,
        "objects": objects,
        "clients": {
            "active": s.clients_active,
            "max": s.max_clients,
            "refs_per_client": s.refs_per_client,
        },
        "counters": {
            "objects_created": s.objects_created,
            "objects_sealed": s.objects_sealed,
            "objects_deleted": s.objects_deleted,
            "objects_evicted": s.objects_evicted,
            "objects_aborted": s.objects_aborted,
            "clients_reaped": s.clients_reaped,
            "owner_nodes_dropped": s.owner_nodes_dropped,
        },
        "metadata_ratio": s.metadata_ratio,
        "size_classes": classes,
    })
}
