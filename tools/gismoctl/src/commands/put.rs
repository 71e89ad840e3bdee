//! `gismoctl put`: store a file (or standard input) as a sealed object.
//!
//! The object's size must be known at create time. A regular file is streamed into the object
//! in chunks straight from the file; standard input (or any non-regular file) is read whole first.
//! If anything fails before the seal — including Ctrl-C or SIGTERM, noticed between chunks — the
//! unsealed buffer is dropped, which aborts the object, so a failed put leaves nothing behind.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use gismo_core::store::{Client, CreateInfo, ObjectId};
use gismo_platform::region::RegionSpec;

use crate::cli::PutArgs;
use crate::failure::{CmdResult, ExitCode, Failure};
use crate::interrupt::Interrupt;
use crate::region_access;

/// Bytes copied per `write_at` when streaming a file.
const CHUNK: usize = 1 << 20;

/// Where the payload comes from.
enum Source {
    /// A regular file of known length, streamed.
    File { file: File, len: u64 },
    /// Bytes read in full (standard input, pipes, devices).
    Bytes(Vec<u8>),
}

pub fn run(spec: &RegionSpec, args: &PutArgs) -> CmdResult {
    let source = open_source(&args.file)?;
    // Before connecting: once our client is in the table, a signal must not kill us.
    let interrupt = Interrupt::install()?;
    let client = region_access::connect(spec)?;
    let metadata = args.metadata.as_deref().unwrap_or("").as_bytes();
    put(&client, &args.id, source, metadata, &args.file, &interrupt)
}

fn open_source(path: &Path) -> CmdResult<Source> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::io("reading standard input", &e))?;
        return Ok(Source::Bytes(bytes));
    }
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| Failure::io(&shown, &e))?;
    let meta = file.metadata().map_err(|e| Failure::io(&shown, &e))?;
    if meta.is_dir() {
        return Err(Failure::new(
            ExitCode::Error,
            format!("{shown}: is a directory"),
        ));
    }
    if meta.is_file() {
        return Ok(Source::File {
            file,
            len: meta.len(),
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Failure::io(&shown, &e))?;
    Ok(Source::Bytes(bytes))
}

fn put(
    client: &Client,
    id: &ObjectId,
    source: Source,
    metadata: &[u8],
    path: &Path,
    interrupt: &Interrupt,
) -> CmdResult {
    let store_err = |e| Failure::store("put", e);
    match source {
        Source::Bytes(bytes) => {
            let mut buf = client
                .create(id, bytes.len() as u64, metadata, &CreateInfo::default())
                .map_err(store_err)?;
            buf.write_at(0, &bytes).map_err(store_err)?;
            buf.seal().map_err(store_err)
        }
        Source::File { mut file, len } => {
            let mut buf = client
                .create(id, len, metadata, &CreateInfo::default())
                .map_err(store_err)?;
            let mut chunk = vec![0u8; CHUNK.min(len as usize).max(1)];
            let mut done: u64 = 0;
            while done < len {
                // An unsealed buffer dropped on the way out aborts the object.
                interrupt.check("put")?;
                let want = chunk.len().min((len - done) as usize);
                file.read_exact(&mut chunk[..want]).map_err(|e| {
                    let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                        io::Error::new(e.kind(), "file shrank while being read")
                    } else {
                        e
                    };
                    Failure::io(path.display(), &e)
                })?;
                buf.write_at(done as usize, &chunk[..want])
                    .map_err(store_err)?;
                done += want as u64;
            }
            buf.seal().map_err(store_err)
        }
    }
}
