//! `gismoctl get`: write an object's payload to standard output or a file.
//!
//! The wait is cut into short slices so that Ctrl-C or SIGTERM ends it cleanly (see
//! `interrupt.rs`) instead of killing the process while it is attached.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use gismo_core::store::{Client, ObjectId, ObjectRef};
use gismo_platform::region::RegionSpec;

use crate::cli::GetArgs;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::interrupt::Interrupt;
use crate::region_access;

/// The longest single wait between two looks at the interrupt flag.
const SLICE: Duration = Duration::from_millis(100);

/// `--timeout-ms` as the store's timeout: `None` waits forever.
fn timeout(ms: i64) -> CmdResult<Option<Duration>> {
    match ms {
        -1 => Ok(None),
        ms if ms >= 0 => Ok(Some(Duration::from_millis(ms as u64))),
        _ => Err(Failure::usage(format!(
            "--timeout-ms {ms}: expected a number of milliseconds, or -1 to wait forever"
        ))),
    }
}

pub fn run(spec: &RegionSpec, args: &GetArgs) -> CmdResult {
    let wait = timeout(args.timeout_ms)?;
    // Before connecting: once our client is in the table, a signal must not kill us.
    let interrupt = Interrupt::install()?;
    let client = region_access::connect(spec)?;
    let object = wait_for(&client, &args.id, wait, &interrupt)?;
    let bytes = if args.metadata {
        object.metadata()
    } else {
        object.data()
    };
    match &args.output {
        None => {
            let mut out = std::io::stdout().lock();
            match copy_checked(&object, bytes, &mut out) {
                // A reader that went away is not our failure (as `output::stdout_bytes`).
                Err(Copy::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(|e| e.failure("writing to standard output")),
            }
        }
        Some(path) => {
            let mut f = File::create(path).map_err(|e| Failure::io(path.display(), &e))?;
            copy_checked(&object, bytes, &mut f).map_err(|e| e.failure(path.display()))
        }
    }
}

/// How many bytes are copied and checked at a time.
const CHUNK: usize = 1 << 20;

enum Copy {
    Write(std::io::Error),
    Fenced(gismo_core::store::StoreError),
}

impl Copy {
    fn failure(self, what: impl std::fmt::Display) -> Failure {
        match self {
            Copy::Write(e) => Failure::io(what, &e),
            Copy::Fenced(e) => Failure::store(
                format!(
                    "get: stopped before {what}: this client was declared dead (paused past its \
                     lease?) and the object's memory may have been reused"
                ),
                e,
            ),
        }
    }
}

/// Writes `bytes` (a view of `object`) to `out` without ever writing a byte that may no longer
/// be the object's: each chunk is copied into private memory first and written only if the
/// client is still not fenced after the copy (`ObjectRef::check`). A reader paused past its lease
/// while blocked on a slow pipe thus fails (exit code 9) instead of printing reused memory. The
/// chunks written before the fence were the object's.
fn copy_checked(object: &ObjectRef<'_>, bytes: &[u8], out: &mut impl Write) -> Result<(), Copy> {
    let mut buf = Vec::with_capacity(CHUNK.min(bytes.len()));
    for chunk in bytes.chunks(CHUNK) {
        buf.clear();
        buf.extend_from_slice(chunk);
        object.check().map_err(Copy::Fenced)?;
        out.write_all(&buf).map_err(Copy::Write)?;
    }
    out.flush().map_err(Copy::Write)?;
    object.check().map_err(Copy::Fenced)
}

/// Gets `id`, waiting up to `wait` (`None`: forever) in slices of at most [`SLICE`].
fn wait_for<'c>(
    client: &'c Client,
    id: &ObjectId,
    wait: Option<Duration>,
    interrupt: &Interrupt,
) -> CmdResult<ObjectRef<'c>> {
    let what = format!("get {id}");
    let deadline = wait.map(|w| Instant::now() + w);
    loop {
        let slice = deadline.map_or(SLICE, |d| {
            d.saturating_duration_since(Instant::now()).min(SLICE)
        });
        if let Some(object) = client
            .get(id, Some(slice))
            .map_err(|e| Failure::store("get", e))?
        {
            return Ok(object);
        }
        interrupt.check(&what)?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let why = match wait {
                Some(w) if !w.is_zero() => format!("not found within {} ms", w.as_millis()),
                _ => "not found".to_string(),
            };
            return Err(Failure::new(ExitCode::NotFound, format!("{what}: {why}")));
        }
    }
}
