//! The `script` role: one command per stdin line, one report per command, so the parent can
//! sequence several processes step by step.
//!
//! | command                 | does                                               | answers              |
//! |-------------------------|----------------------------------------------------|----------------------|
//! | `create N SIZE`         | create, fill with the scripted pattern, seal       | `created`            |
//! | `create-hold N SIZE`    | create and fill, keep it unsealed                  | `creating`           |
//! | `seal N`, `abort N`     | seal or abort an object kept unsealed              | `sealed`, `aborted`  |
//! | `get N TIMEOUT_MS HOLD` | `getting`, then get and verify; keep it if HOLD=1  | `got` or `none`      |
//! | `verify N`              | verify a held object again                         | `verified`           |
//! | `release N`             | release a held object                              | `released`           |
//! | `delete N`              | delete                                             | `deleted outcome=..` |
//! | `contains N`, `held N`  | Plasma's contains; this client's references        | `contains`, `held`   |
//! | `stats`, `info`         | store statistics; this client's index and pid      | `stats`, `info`      |
//! | `disconnect`            | disconnect; it must release and abort what we hold | `disconnected`       |
//! | `exit-now`              | `process::exit(0)`, no disconnect                  | (none)               |
//! | `quit`                  | drop everything, disconnect, exit                  | `bye`                |
//!
//! Store errors are answered as `error id=N error=Variant`.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gismo_core::store::{Client, CreateBuffer, ObjectId, ObjectRef, Store};

use crate::child::{check_object, create_filled, error_name, unix_us};
use crate::payload;

/// How a script session ended.
enum SessionEnd {
    Quit,
    Disconnect,
}

pub fn script(store: &Arc<Store>, host: &str) {
    let client = store
        .connect(&format!("mh-script-{host}"))
        .expect("connect");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    match script_session(store, &client, &mut lines) {
        SessionEnd::Quit => {
            drop(client);
            report!("bye");
        }
        SessionEnd::Disconnect => {
            client.disconnect();
            report!("disconnected");
            // The process lives on without a client until told to go.
            let next = lines.next().map(|l| l.expect("stdin"));
            match next.as_deref().map(str::trim) {
                Some("exit-now") => std::process::exit(0),
                Some("quit") | None => {}
                Some(other) => panic!("after disconnect only quit or exit-now, not {other:?}"),
            }
            report!("bye");
        }
    }
}

fn script_session(
    store: &Arc<Store>,
    client: &Client,
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
) -> SessionEnd {
    let mut held: HashMap<u64, ObjectRef<'_>> = HashMap::new();
    let mut creating: HashMap<u64, CreateBuffer<'_>> = HashMap::new();
    for line in lines {
        let line = line.expect("read a command");
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("command {line:?}: argument {i} missing"))
        };
        let Some(&cmd) = words.first() else { continue };
        match cmd {
            "create" | "create-hold" => {
                let (n, size) = (num(1), num(2));
                let id = ObjectId::from_u64(n);
                match create_filled(client, &id, size, payload::deterministic_seed(&id, size)) {
                    Ok(buf) if cmd == "create" => {
                        let offset = buf.offset();
                        let sealing_us = unix_us();
                        buf.seal().expect("seal");
                        report!(
                            "created",
                            "id={n} offset={offset:#x} sealing_us={sealing_us}"
                        );
                    }
                    Ok(buf) => {
                        report!("creating", "id={n} offset={:#x}", buf.offset());
                        creating.insert(n, buf);
                    }
                    Err(e) => report!("error", "id={n} error={}", error_name(&e)),
                }
            }
            "seal" => {
                let n = num(1);
                let buf = creating
                    .remove(&n)
                    .expect("seal of an object not being created");
                let sealing_us = unix_us();
                buf.seal().expect("seal");
                report!("sealed", "id={n} sealing_us={sealing_us}");
            }
            "abort" => {
                let n = num(1);
                let buf = creating
                    .remove(&n)
                    .expect("abort of an object not being created");
                buf.abort().expect("abort");
                report!("aborted", "id={n}");
            }
            "get" => {
                let (n, timeout_ms, hold) = (num(1), num(2), num(3));
                let id = ObjectId::from_u64(n);
                report!("getting", "id={n}");
                let start = Instant::now();
                let got = client.get(&id, Some(Duration::from_millis(timeout_ms)));
                let returned_us = unix_us();
                let waited_us = start.elapsed().as_micros();
                match got {
                    Ok(Some(obj)) => {
                        let sum = check_object(store, &obj);
                        let offset = obj.as_ptr() as usize - store.payload_base() as usize;
                        report!(
                            "got",
                            "id={n} size={} checksum={sum:#x} offset={offset:#x} inside=1 \
                             metadata={} waited_us={waited_us} returned_us={returned_us}",
                            obj.data().len(),
                            obj.metadata().len()
                        );
                        if hold == 1 {
                            held.insert(n, obj);
                        }
                    }
                    Ok(None) => report!("none", "id={n} waited_us={waited_us}"),
                    Err(e) => report!("error", "id={n} error={}", error_name(&e)),
                }
            }
            "verify" => {
                let n = num(1);
                let obj = held.get(&n).expect("verify of an object not held");
                let sum = check_object(store, obj);
                report!("verified", "id={n} checksum={sum:#x}");
            }
            "release" => {
                let n = num(1);
                match held.remove(&n) {
                    Some(obj) => drop(obj),
                    None => client
                        .release(&ObjectId::from_u64(n))
                        .expect("release of an object not held"),
                }
                report!("released", "id={n}");
            }
            "delete" => {
                let n = num(1);
                match client.delete(&ObjectId::from_u64(n)) {
                    Ok(outcome) => report!("deleted", "id={n} outcome={outcome:?}"),
                    Err(e) => report!("error", "id={n} error={}", error_name(&e)),
                }
            }
            "contains" => {
                let n = num(1);
                let v = client.contains(&ObjectId::from_u64(n)).expect("contains");
                report!("contains", "id={n} value={v}");
            }
            "held" => {
                let n = num(1);
                report!(
                    "held",
                    "id={n} count={}",
                    client.held(&ObjectId::from_u64(n))
                );
            }
            "stats" => {
                let s = store.stats();
                report!(
                    "stats",
                    "used={} allocations={} sealed={} deleted={} aborted={}",
                    s.used_bytes,
                    s.allocations,
                    s.objects_sealed,
                    s.objects_deleted,
                    s.objects_aborted
                );
            }
            "info" => report!(
                "info",
                "client={} epoch={} pid={}",
                client.index(),
                client.epoch(),
                std::process::id()
            ),
            "disconnect" => {
                // Forget (not drop) what we hold, so that it is `disconnect` that releases the
                // references and aborts the unsealed objects, as Plasma's Disconnect does.
                held.into_values().for_each(std::mem::forget);
                creating.into_values().for_each(std::mem::forget);
                return SessionEnd::Disconnect;
            }
            "exit-now" => std::process::exit(0),
            "quit" => return SessionEnd::Quit,
            other => panic!("unknown command {other:?}"),
        }
    }
    SessionEnd::Quit
}
