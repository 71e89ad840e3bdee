//! `gismoctl clients`: the clients attached to the store.

use std::fmt::Write as _;

use gismo_core::store::clients::status;
use gismo_core::store::ClientSummary;
use gismo_platform::clock::unix_ms;
use gismo_platform::region::RegionSpec;
use serde::Serialize;

use crate::failure::CmdResult;
use crate::{output, region_access};

/// One client, as `clients --json` prints it.
#[derive(Serialize)]
struct Row {
    index: usize,
    epoch: u32,
    status: &'static str,
    pid: u32,
    name: String,
    host_hash: String,
    heartbeat_age_ms: u64,
    references: usize,
}

fn status_name(s: u8) -> &'static str {
    match s {
        status::FREE => "free",
        status::ACTIVE => "active",
        status::DEAD => "dead",
        status::CONNECTING => "connecting",
        status::QUARANTINED => "quarantined",
        _ => "invalid",
    }
}

impl Row {
    fn new(c: &ClientSummary, now_ms: u64) -> Row {
        Row {
            index: c.index,
            epoch: c.epoch,
            status: status_name(c.status),
            pid: c.pid,
            name: c.name.clone(),
            host_hash: format!("{:016x}", c.host_hash),
            heartbeat_age_ms: now_ms.saturating_sub(c.heartbeat_ms),
            references: c.references,
        }
    }
}

pub fn run(spec: &RegionSpec, json: bool) -> CmdResult {
    let store = region_access::attach(spec)?;
    let now = unix_ms();
    let rows: Vec<Row> = store.clients().iter().map(|c| Row::new(c, now)).collect();
    if json {
        return output::json(&rows);
    }
    let mut t = format!(
        "{:>5}  {:>6}  {:<7}  {:>8}  {:<16}  {:<20}  {:>12}  {:>4}\n",
        "INDEX", "EPOCH", "STATUS", "PID", "HOST", "NAME", "HEARTBEAT", "REFS"
    );
    for r in &rows {
        let _ = writeln!(
            t,
            "{:>5}  {:>6}  {:<7}  {:>8}  {:<16}  {:<20}  {:>9} ms  {:>4}",
            r.index,
            r.epoch,
            r.status,
            r.pid,
            r.host_hash,
            r.name,
            r.heartbeat_age_ms,
            r.references
        );
    }
    output::stdout(&t)
}
