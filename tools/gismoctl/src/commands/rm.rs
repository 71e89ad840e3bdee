//! `gismoctl rm`: delete an object, or mark it to be deleted when its last reference goes.

use gismo_core::store::DeleteOutcome;
use gismo_platform::region::RegionSpec;

use crate::cli::RmArgs;
use crate::failure::{CmdResult, Failure};
use crate::{output, region_access};

pub fn run(spec: &RegionSpec, args: &RmArgs) -> CmdResult {
    let client = region_access::connect(spec)?;
    let outcome = client
        .delete(&args.id)
        .map_err(|e| Failure::store("rm", e))?;
    match outcome {
        DeleteOutcome::Deleted => Ok(()),
        DeleteOutcome::Deferred => output::stdout(&format!(
            "{}: in use or not yet sealed; it will be deleted when its last reference is \
             released\n",
            args.id
        )),
    }
}
