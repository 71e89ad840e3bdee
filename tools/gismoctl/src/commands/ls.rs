//! `gismoctl ls`: the objects in the store.

use std::fmt::Write as _;

use gismo_core::store::directory::state;
use gismo_core::store::ObjectSummary;
use gismo_platform::region::RegionSpec;
use serde::Serialize;

use crate::failure::CmdResult;
use crate::{output, region_access};

/// One object, as `ls --json` prints it.
#[derive(Serialize)]
struct Row {
    id: String,
    size: u64,
    metadata_size: u64,
    state: &'static str,
    delete_pending: bool,
    refcount: u32,
    creator_client: u16,
    creator_host: u32,
    last_access_ms: u64,
}

impl From<&ObjectSummary> for Row {
    fn from(o: &ObjectSummary) -> Row {
        Row {
            id: o.id.to_string(),
            size: o.data_size,
            metadata_size: o.metadata_size,
            state: state::name(o.state),
            delete_pending: o.delete_pending,
            refcount: o.refcount,
            creator_client: o.creator,
            creator_host: o.creator_host,
            last_access_ms: o.last_access_ms,
        }
    }
}

pub fn run(spec: &RegionSpec, json: bool) -> CmdResult {
    let store = region_access::attach(spec)?;
    let mut objects = store.list();
    objects.sort_by_key(|o| o.id);
    let rows: Vec<Row> = objects.iter().map(Row::from).collect();
    if json {
        return output::json(&rows);
    }
    let mut t = format!(
        "{:<56}  {:>12}  {:>8}  {:<8}  {:>4}  {:>7}  {:>4}\n",
        "ID", "SIZE", "METADATA", "STATE", "REFS", "CREATOR", "HOST"
    );
    for r in &rows {
        let _ = write!(
            t,
            "{:<56}  {:>12}  {:>8}  {:<8}  {:>4}  {:>7}  {:>4}",
            r.id, r.size, r.metadata_size, r.state, r.refcount, r.creator_client, r.creator_host
        );
        if r.delete_pending {
            t.push_str("  (delete pending)");
        }
        t.push('\n');
    }
    output::stdout(&t)
}
