//! `put`, `get`, `rm`, `stat` and `ls` through an object store plugin's client (and runner):
//! the calls a Ray worker or raylet makes, so any plugin — built in or loaded — can be driven
//! from the shell.
//!
//! - `put`: the file (or standard input) is read whole — the interface has no streaming create —
//!   then `Create`, `MemoryCopy` in 1 MiB chunks (Ctrl-C is noticed between them), `Seal`; an
//!   interrupted or failed put `Abort`s.
//! - `get`: `Get` in slices of at most 100 ms (so Ctrl-C ends it cleanly), then the buffer is
//!   dropped, which `Release`s it.
//! - `rm`: `Contains` (a missing or unsealed object is "not found", exit 3), then `Delete`.
//! - `stat`: the client's `GetMemoryUsage` and the runner's memory figures (after `Start` with
//!   `--start-runner`).
//! - `ls`: only the gismo plugin can list (its region is read directly); others fail with exit 8.

use std::fs::File;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use gismo_core::store::{ObjectId, ObjectSource, OwnerAddress};
use gismo_plugin::interface::{
    ObjectBuffer, ObjectStoreClient, ObjectStoreRunner, RunnerCallbacks,
};
use serde_json::json;

use crate::cli::{GetArgs, PutArgs, RmArgs};
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::interrupt::Interrupt;
use crate::output;
use crate::plugin_access::Plugin;

/// Bytes copied per `MemoryCopy` when putting, and copied and checked at a time when getting.
const CHUNK: usize = 1 << 20;
/// The longest single `Get` between two looks at the interrupt flag.
const SLICE_MS: i64 = 100;

pub fn put(plugin: &Plugin, args: &PutArgs) -> CmdResult {
    let bytes = read_source(&args.file)?;
    let interrupt = Interrupt::install()?;
    let client = plugin.client()?;
    let metadata = args.metadata.as_deref().unwrap_or("").as_bytes();
    let result = put_bytes(&*client, &args.id, &bytes, metadata, &interrupt);
    let _ = client.disconnect();
    result
}

fn read_source(path: &std::path::Path) -> CmdResult<Vec<u8>> {
    let mut bytes = Vec::new();
    if path == std::path::Path::new("-") {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::io("reading standard input", &e))?;
    } else {
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Failure::io(path.display(), &e))?;
    }
    Ok(bytes)
}

fn put_bytes(
    client: &dyn ObjectStoreClient,
    id: &ObjectId,
    bytes: &[u8],
    metadata: &[u8],
    interrupt: &Interrupt,
) -> CmdResult {
    let mut buf = client
        .create(
            id,
            &OwnerAddress::default(),
            false,
            bytes.len() as u64,
            metadata,
            ObjectSource::CreatedByWorker,
        )
        .map_err(|s| Failure::status("put", &s))?;
    for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
        if let Err(f) = interrupt.check("put") {
            drop(buf);
            let _ = client.abort(id);
            return Err(f);
        }
        // SAFETY: `buf` is `bytes.len()` writable bytes owned by us until the seal; the chunk
        // lies inside both it and `bytes`, which do not overlap (one is the store's memory).
        unsafe { client.memory_copy(buf.as_mut_ptr().add(i * CHUNK), chunk.as_ptr(), chunk.len()) };
    }
    let sealed = client.seal(id);
    drop(buf);
    if let Err(s) = sealed {
        let _ = client.abort(id);
        return Err(Failure::status("put: seal", &s));
    }
    Ok(())
}

pub fn get(plugin: &Plugin, args: &GetArgs) -> CmdResult {
    if args.timeout_ms < -1 {
        return Err(Failure::usage(format!(
            "--timeout-ms {}: expected a number of milliseconds, or -1 to wait forever",
            args.timeout_ms
        )));
    }
    let interrupt = Interrupt::install()?;
    let client = plugin.client()?;
    let result = get_object(&*client, &args.id, args.timeout_ms, &interrupt).and_then(|object| {
        let (start, len) = if args.metadata {
            (object.data().len(), object.metadata().len())
        } else {
            (0, object.data().len())
        };
        match &args.output {
            None => {
                let mut out = std::io::stdout().lock();
                match write_checked(&object, start, len, &mut out) {
                    // A reader that went away is not our failure (as `output::stdout_bytes`).
                    Err(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                    r => r.map_err(|e| checked_failure(e, "writing to standard output")),
                }
            }
            Some(path) => {
                let mut f = File::create(path).map_err(|e| Failure::io(path.display(), &e))?;
                write_checked(&object, start, len, &mut f)
                    .map_err(|e| checked_failure(e, path.display()))
            }
        }
    });
    let _ = client.disconnect();
    result
}

/// Writes `len` bytes from `start` of `object` to `out`, a chunk at a time, each copied privately
/// and written only if the buffer is still valid after the copy (`ObjectBuffer::copy_checked`:
/// false once a zero-copy plugin's client was fenced). `Ok(Err)` is "fenced".
fn write_checked(
    object: &gismo_plugin::interface::ObjectBuffer,
    start: usize,
    len: usize,
    out: &mut impl Write,
) -> Result<(), Result<(), std::io::Error>> {
    let mut at = start;
    let end = start + len;
    while at < end {
        let next = (at + CHUNK).min(end);
        let chunk = object.copy_checked(at..next).ok_or(Ok(()))?;
        out.write_all(&chunk).map_err(Err)?;
        at = next;
    }
    out.flush().map_err(Err)?;
    if object.still_valid() {
        Ok(())
    } else {
        Err(Ok(()))
    }
}

fn checked_failure(e: Result<(), std::io::Error>, what: impl std::fmt::Display) -> Failure {
    match e {
        Err(e) => Failure::io(what, &e),
        Ok(()) => Failure::new(
            crate::failure::ExitCode::Fenced,
            format!(
                "get: stopped before {what}: this client was declared dead (paused past its \
                 lease?) and the object's memory may have been reused"
            ),
        ),
    }
}

/// `Get` of one object, waiting up to `timeout_ms` (-1: forever) in slices.
fn get_object(
    client: &dyn ObjectStoreClient,
    id: &ObjectId,
    timeout_ms: i64,
    interrupt: &Interrupt,
) -> CmdResult<ObjectBuffer> {
    let what = format!("get {id}");
    let deadline =
        (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
    loop {
        let slice = deadline.map_or(SLICE_MS, |d| {
            (d.saturating_duration_since(Instant::now()).as_millis() as i64).min(SLICE_MS)
        });
        let mut got = client
            .get(std::slice::from_ref(id), slice)
            .map_err(|s| Failure::status(&what, &s))?;
        if let Some(object) = got.pop().flatten() {
            return Ok(object);
        }
        interrupt.check(&what)?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let why = if timeout_ms > 0 {
                format!("not found within {timeout_ms} ms")
            } else {
                "not found".to_string()
            };
            return Err(Failure::new(ExitCode::NotFound, format!("{what}: {why}")));
        }
    }
}

pub fn rm(plugin: &Plugin, args: &RmArgs) -> CmdResult {
    let client = plugin.client()?;
    let what = format!("rm {}", args.id);
    let result = match client.contains(&args.id) {
        Err(s) => Err(Failure::status(&what, &s)),
        Ok(false) => Err(Failure::new(
            ExitCode::NotFound,
            format!("{what}: not found (or not sealed)"),
        )),
        Ok(true) => client
            .delete(std::slice::from_ref(&args.id))
            .map_err(|s| Failure::status(&what, &s)),
    };
    let _ = client.disconnect();
    result
}

/// The runner's memory figures, as `stat` prints them.
fn runner_figures(r: &dyn ObjectStoreRunner) -> serde_json::Value {
    json!({
        "total_memory_size": r.total_memory_size(),
        "max_memory_size": r.max_memory_size(),
        "available_memory": r.available_memory(),
        "consumed_bytes": r.consumed_bytes(),
        "fallback_allocated": r.fallback_allocated(),
    })
}

pub fn stat(plugin: &Plugin, json: bool, start_runner: bool) -> CmdResult {
    let client = plugin.client()?;
    let usage = client
        .get_memory_usage()
        .map_err(|s| Failure::status("stat: get_memory_usage", &s))?;
    let is_global = client.is_global();
    let _ = client.disconnect();
    drop(client);
    let runner = plugin.runner()?;
    if start_runner {
        runner
            .start(&plugin.config.params, RunnerCallbacks::none())
            .map_err(|s| {
                Failure::new(
                    ExitCode::PluginUnusable,
                    format!("plugin {}: runner start: {s}", plugin.label()),
                )
            })?;
    }
    let figures = runner_figures(&*runner);
    runner.stop();
    let v = json!({
        "plugin": plugin.label(),
        "config": plugin.config.config_string(),
        "is_global": is_global,
        "memory_usage": usage,
        "runner_started": start_runner,
        "runner": figures,
    });
    if json {
        return output::json(&v);
    }
    let mut t = format!(
        "plugin      {}\nconfig      {}\nis_global   {}\nusage       {}\n",
        plugin.label(),
        plugin.config.config_string(),
        is_global,
        usage.trim()
    );
    if let Some(m) = figures.as_object() {
        for (k, v) in m {
            t.push_str(&format!("{k:<20}{v}\n"));
        }
    }
    output::stdout(&t)
}

pub fn ls(plugin: &Plugin, json: bool) -> CmdResult {
    let Some(region) = plugin.gismo_region() else {
        return Err(Failure::new(
            ExitCode::NotSupported,
            format!(
                "ls is not supported by plugin {}: the plugin interface cannot list objects \
                 (only the gismo plugin's region can be read)",
                plugin.label()
            ),
        ));
    };
    let spec = crate::region_access::spec(Some(&region))?;
    super::ls::run(&spec, json)
}
