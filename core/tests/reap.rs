//! Reaping a dead client costs what it held (core review M11), and still finds everything: with
//! real processes killed with SIGKILL.
//!
//! A client killed outside any operation is reaped from its own entry and reference table (no
//! directory scan, no sweep). One that released an unsealed object of its own before sealing it,
//! or that died inside an operation, is reaped with a directory scan and the sweeps — and what it
//! left is found either way.

mod common;

#[cfg(feature = "crashpoints")]
use std::io::Write;
use std::io::{BufRead, BufReader};
#[cfg(feature = "crashpoints")]
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "crashpoints")]
use common::wait_stopped;
use common::{attach_inherited, memfd_store_for_children};
use gismo_core::store::{CreateInfo, ObjectId, ReapReport, Store};

const ROLE: &str = "GISMO_REAP_TEST_ROLE";
/// Sealed objects the child takes references to.
const HELD: u64 = 10;
/// The child's unsealed object.
const UNSEALED: u64 = 50;
/// The object the child releases while a delete of it is pending.
const PENDING: u64 = 60;

/// Child roles: `holder` (references to 1..=HELD and an unsealed object, then waits to be
/// killed), `released_unsealed` (the same, but releases its unsealed object's reference before
/// sealing), `releaser` (holds PENDING, releases it when told, dying at the crash point
/// `release.removed` when the test arms it), `maintainer` (reaps, stopping where the test says).
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let store = attach_inherited();
    let c = store.connect(&role).unwrap();
    if role == "leaker" {
        // Dies at the crash point between its allocation and its intent: an orphaned block.
        let _ = c.create(&ObjectId::from_u64(71), 3000, b"", &CreateInfo::default());
        panic!("the leaker should have died at create.allocated");
    }
    if role == "slow_creator" {
        // Stopped right after allocating (the test arms it); once resumed, creates, seals and
        // deletes its object.
        println!("INDEX {}", c.index());
        let id = ObjectId::from_u64(70);
        c.create(&id, 3000, b"", &CreateInfo::default())
            .unwrap()
            .seal()
            .unwrap();
        c.delete(&id).unwrap();
        println!("READY");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        return;
    }
    if role == "guarded" {
        // Creates an object when told, stopping at the end of the create's operation guard (the
        // test arms `guard.ending`); once resumed, reports and waits to be killed.
        println!("INDEX {}", c.index());
        println!("READY");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        let r = c.create_raw(&ObjectId::from_u64(80), 3000, b"", &CreateInfo::default());
        println!("CREATED {}", r.is_ok());
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    if role == "sealer" {
        // Dies at the crash point between its seal and the seal's event.
        let id = ObjectId::from_u64(72);
        let _ = c
            .create(&id, 3000, b"", &CreateInfo::default())
            .unwrap()
            .seal();
        panic!("the sealer should have died at seal.sealed");
    }
    if role == "lease_maintainer" {
        // Reaps with a short lease until it has reaped someone (stopping at the crash point the
        // test arms), then runs one more pass.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while c.reap_dead(50).unwrap_or_default().is_empty() {
            assert!(std::time::Instant::now() < deadline, "reaped nobody");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.reap_dead(50);
        return;
    }
    if role == "maintainer" {
        // Reaps (stopping at the crash point the test arms with GISMO_CRASHPOINT_ACTION=stop).
        let _ = c.reap_dead(60_000);
        return;
    }
    let get = |id: u64| {
        c.get_raw(&ObjectId::from_u64(id), Some(Duration::ZERO))
            .unwrap()
            .unwrap()
    };
    match role.as_str() {
        "holder" | "released_unsealed" => {
            for id in 1..=HELD {
                get(id);
            }
            let id = ObjectId::from_u64(UNSEALED);
            c.create_raw(&id, 200_000, b"m", &CreateInfo::default())
                .unwrap();
            if role == "released_unsealed" {
                c.release(&id).unwrap();
            }
        }
        "releaser" => {
            get(PENDING);
        }
        _ => panic!("unknown role {role}"),
    }
    println!("READY");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    if role == "releaser" {
        let r = c.release(&ObjectId::from_u64(PENDING));
        // Fenced meanwhile (reaped while paused), the release may fail; either way it is done.
        println!("RELEASED {}", r.is_ok());
        if std::env::var("GISMO_CRASHPOINT").as_deref() != Ok("release.checked") {
            r.unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(60));
}

fn command(fd: i32, role: &str, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("GISMO_TEST_FD", fd.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Spawns `role` and waits for its READY.
fn spawn(fd: i32, role: &str, extra: &[(&str, &str)]) -> (Child, BufReader<ChildStdout>) {
    let mut child = command(fd, role, extra).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "{role} exited early");
    }
    (child, out)
}

fn sealed(store: &Arc<Store>, id: u64, size: u64) {
    let c = store.connect("maker").unwrap();
    c.create(&ObjectId::from_u64(id), size, b"m", &CreateInfo::default())
        .unwrap()
        .seal()
        .unwrap();
}

fn setup(name: &str) -> (i32, Arc<Store>, u64) {
    let (fd, s) = memfd_store_for_children(name, 32 << 20);
    for id in 1..=HELD {
        sealed(&s, id, [3000, 70_000][id as usize % 2]);
    }
    sealed(&s, PENDING, 5000);
    let baseline = s.used_bytes();
    (fd, s, baseline)
}

/// Asks for a delete of PENDING, which a reference of another client defers.
#[cfg(feature = "crashpoints")]
fn defer_delete_of_pending(me: &gismo_core::store::Client) {
    assert_eq!(
        me.delete(&ObjectId::from_u64(PENDING)).unwrap(),
        gismo_core::store::DeleteOutcome::Deferred
    );
}

/// PENDING is gone (`why` otherwise), everything else is back to the baseline, fsck is clean.
#[cfg(feature = "crashpoints")]
fn assert_pending_deleted(s: &Arc<Store>, baseline: u64, why: &str) {
    assert!(
        s.lookup_summary(&ObjectId::from_u64(PENDING)).is_none(),
        "{why}"
    );
    assert_eq!(s.used_bytes(), baseline - 5120);
    assert_fsck_clean(s);
}

/// The one dead client's reap scanned the directory and aborted UNSEALED; everything is back to
/// the baseline and fsck is clean.
fn assert_unsealed_aborted_by_a_scan(s: &Arc<Store>, baseline: u64) {
    let r = reap_one(s);
    assert!(r.directory_scanned, "{r:?}");
    assert_eq!(r.aborted_objects, 1, "{r:?}");
    assert!(s.lookup_summary(&ObjectId::from_u64(UNSEALED)).is_none());
    assert_eq!(s.used_bytes(), baseline);
    assert_fsck_clean(s);
}

fn assert_fsck_clean(s: &Arc<Store>) {
    let report = s.fsck(false);
    assert!(report.is_clean(), "{report:?}");
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn reap_one(s: &Arc<Store>) -> ReapReport {
    let admin = s.connect("admin").unwrap();
    let mut reports = admin.reap_dead(60_000).unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    reports.pop().unwrap()
}

#[test]
fn a_client_killed_idle_is_reaped_from_its_own_table_without_a_scan() {
    let (fd, s, baseline) = setup("reap-idle");
    let (child, _out) = spawn(fd, "holder", &[]);
    assert!(s.used_bytes() > baseline);
    kill(child);
    let r = reap_one(&s);
    assert!(!r.directory_scanned, "{r:?}");
    assert!(!r.died_in_operation, "{r:?}");
    assert_eq!(r.released_references, HELD + 1, "{r:?}"); // and the creation reference
    assert_eq!(r.aborted_objects, 1, "{r:?}");
    assert!(s.lookup_summary(&ObjectId::from_u64(UNSEALED)).is_none());
    assert_eq!(s.used_bytes(), baseline);
    assert_fsck_clean(&s);
}

#[test]
fn an_unsealed_object_released_before_its_seal_is_found_by_a_scan() {
    let (fd, s, baseline) = setup("reap-released-unsealed");
    let (child, _out) = spawn(fd, "released_unsealed", &[]);
    kill(child);
    assert_unsealed_aborted_by_a_scan(&s, baseline);
}

/// As above, killed inside that release, right after the reference went: the object is in no
/// table of the client's from that instant, so it must have been marked before.
#[cfg(feature = "crashpoints")]
#[test]
fn an_unsealed_object_whose_release_was_killed_is_found_by_a_scan() {
    let (fd, s, baseline) = setup("reap-released-unsealed-killed");
    let mut child = command(
        fd,
        "released_unsealed",
        &[("GISMO_CRASHPOINT", "release.dropped")],
    )
    .spawn()
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert_unsealed_aborted_by_a_scan(&s, baseline);
}

/// Killed after dropping the last reference of an object whose delete was waiting for it, before
/// running that delete: no table names the object any more, and the reap must still delete it.
#[cfg(feature = "crashpoints")]
#[test]
fn a_release_killed_before_running_the_pending_delete_it_made_due_is_finished() {
    let (fd, s, baseline) = setup("reap-pending-release");
    let (mut child, _out) = spawn(fd, "releaser", &[("GISMO_CRASHPOINT", "release.removed")]);
    let me = s.connect("deleter").unwrap();
    defer_delete_of_pending(&me);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let r = me.reap_dead(60_000).unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].died_in_operation, "{r:?}");
    assert_pending_deleted(&s, baseline, "the pending delete was never run");
}

/// A maintainer stopped while it holds a delete it took over (under its own tag, in `DELETING`)
/// loses the lock to another maintainer, which cannot finish that delete (its owner is alive),
/// and is then killed: killed outside any operation, with an empty table, it still must be reaped
/// with a scan (it had maintained the region), and the delete it held is finished.
#[cfg(feature = "crashpoints")]
#[test]
fn a_maintainer_killed_after_losing_the_lock_has_its_taken_over_deletes_finished() {
    let (fd, s, baseline) = setup("reap-lost-maintainer");
    // The victim: the last reference to a delete-pending object, killed idle.
    let (victim, _out) = spawn(fd, "releaser", &[]);
    let me = s.connect("deleter").unwrap();
    defer_delete_of_pending(&me);
    kill(victim);
    // M reaps it, taking the pending delete over, and stops right after claiming its finish.
    let mut m = command(
        fd,
        "maintainer",
        &[
            ("GISMO_CRASHPOINT", "finish_delete.claimed"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    )
    .spawn()
    .unwrap();
    wait_stopped(&mut m);
    // We take the lock over once M has shown no sign of life for the lock's lease.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match me.reap_dead(60_000) {
            Ok(_) => break,
            Err(gismo_core::store::StoreError::MaintenanceBusy { .. }) => {}
            Err(e) => panic!("reap: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "M kept the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        s.lookup_summary(&ObjectId::from_u64(PENDING)).is_some(),
        "M's delete is M's while M lives"
    );
    kill(m);
    let r = me.reap_dead(60_000).unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].directory_scanned, "{r:?}");
    assert_pending_deleted(
        &s,
        baseline,
        "the delete M had taken over was never finished",
    );
}

/// A sweep that could not be completed (the orphan collector found no quiet moment: another
/// client was stopped inside an operation) stays owed in the region and is run by the next pass,
/// even though nobody died since.
#[cfg(feature = "crashpoints")]
#[test]
fn a_sweep_cut_short_is_run_by_the_next_pass() {
    let (fd, s, baseline) = setup("reap-sweep-owed");
    let mut slow = command(
        fd,
        "slow_creator",
        &[
            ("GISMO_CRASHPOINT", "create.allocated"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    )
    .spawn()
    .unwrap();
    wait_stopped(&mut slow);
    let status = command(fd, "leaker", &[("GISMO_CRASHPOINT", "create.allocated")])
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let me = s.connect("admin").unwrap();
    let r = me.reap_dead(60_000).unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].died_in_operation, "{r:?}");
    assert_eq!(
        r[0].orphan_bytes, 0,
        "no quiet moment while the creator is stopped: {r:?}"
    );
    // The creator finishes; nobody is dead any more, but the sweep is still owed.
    // SAFETY: kill has no memory-safety preconditions; the pid is our unwaited child's.
    unsafe {
        libc::kill(slow.id() as i32, libc::SIGCONT);
    }
    let mut out = BufReader::new(slow.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the creator exited early"
        );
    }
    let r = me.reap_dead(60_000).unwrap();
    assert!(r.is_empty(), "{r:?}");
    assert_eq!(
        s.used_bytes(),
        baseline,
        "the leaked block was not collected"
    );
    assert_fsck_clean(&s);
    kill(slow);
}

/// Killed between its seal and the seal's event (core review L4): the host's runner never hears of
/// the object from the ring, so the reap marks the rings as having lost events (an overflow, on
/// which a runner rescans the directory).
#[cfg(feature = "crashpoints")]
#[test]
fn a_seal_killed_before_its_event_makes_the_runners_rescan() {
    let (fd, s, _) = setup("reap-lost-event");
    let me = s.connect("admin").unwrap();
    let ring = s.event_ring(me.host_index() as usize).unwrap();
    let before = ring.overflows();
    let status = command(fd, "sealer", &[("GISMO_CRASHPOINT", "seal.sealed")])
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(
        s.lookup_summary(&ObjectId::from_u64(72)).is_some(),
        "sealed"
    );
    let r = me.reap_dead(60_000).unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].died_in_operation, "{r:?}");
    assert!(ring.overflows() > before, "the lost event is not signalled");
}

/// A client of another host, paused (SIGSTOP) in a release between its fence check and its
/// operation guard, is reaped by lease by a maintainer that is itself paused right after the
/// fence (before it reads the client's `op_seq` and table). The client resumes first: it drops
/// the last reference of a delete-pending object from its table and, fenced, leaves the delete
/// (its guard writes nothing once fenced, so `op_seq` stays even); the maintainer resumes and
/// finds neither the reference nor an operation. The reap of a client judged by lease owes a
/// sweep, and the sweep finishes the delete (before, the object stayed `DELETE_PENDING` and
/// unreferenced until evicted).
#[cfg(feature = "crashpoints")]
#[test]
fn a_release_paused_across_a_lease_reap_leaves_no_pending_delete_behind() {
    let (fd, s, baseline) = setup("reap-paused-release");
    let (mut releaser, mut out) = spawn(
        fd,
        "releaser",
        &[
            ("GISMO_HOST", "elsewhere"),
            ("GISMO_CRASHPOINT", "release.checked"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    );
    let me = s.connect("deleter").unwrap();
    defer_delete_of_pending(&me);
    releaser.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_stopped(&mut releaser);
    let mut maintainer = command(
        fd,
        "lease_maintainer",
        &[
            ("GISMO_CRASHPOINT", "reap.intent_taken"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    )
    .spawn()
    .unwrap();
    wait_stopped(&mut maintainer);
    // SAFETY: signalling our own children.
    unsafe { libc::kill(releaser.id() as i32, libc::SIGCONT) };
    // Its release drops the reference and finds itself fenced.
    let mut line = String::new();
    while !line.contains("RELEASED") {
        line.clear();
        assert_ne!(
            out.read_line(&mut line).unwrap(),
            0,
            "the releaser exited early"
        );
    }
    kill(releaser);
    // SAFETY: as above.
    unsafe { libc::kill(maintainer.id() as i32, libc::SIGCONT) };
    let status = maintainer.wait().unwrap();
    assert!(status.success(), "{status}");
    me.reap_dead(50).unwrap();
    assert_pending_deleted(
        &s,
        baseline,
        "the paused releaser's pending delete was left behind",
    );
}

/// Reads `child`'s lines until one contains `tag` (the first line also holds the test
/// harness's "test child ... "); returns what follows the tag on that line.
#[cfg(feature = "crashpoints")]
fn read_until(out: &mut BufReader<ChildStdout>, tag: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "exited before {tag}");
        if let Some(at) = line.find(tag) {
            return line[at + tag.len()..].trim().to_string();
        }
    }
}

/// A client of another host, paused (SIGSTOP) at the end of an operation guard, before it
/// bumps `op_seq`, is reaped by lease, and its entry goes to a new
/// client that is then stopped inside a create (`op_seq` odd: allocated, not yet named). The
/// paused client resumes: its guard must leave the new occupant's `op_seq` alone (review of the
/// targeted reap, F6). Were it bumped to even, the orphan collector of the next reap would see
/// a quiet moment and free the new occupant's allocation as a leak.
#[cfg(feature = "crashpoints")]
#[test]
fn a_fenced_guard_leaves_the_next_occupants_op_seq_alone() {
    let (fd, s, baseline) = setup("reap-fenced-guard");
    let me = s.connect("admin").unwrap();
    let mut guarded = command(
        fd,
        "guarded",
        &[
            ("GISMO_HOST", "elsewhere"),
            ("GISMO_CRASHPOINT", "guard.ending"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    )
    .spawn()
    .unwrap();
    let mut guarded_out = BufReader::new(guarded.stdout.take().unwrap());
    let index = read_until(&mut guarded_out, "INDEX ");
    read_until(&mut guarded_out, "READY");
    guarded.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_stopped(&mut guarded);
    // Judged by lease (another host): quarantined, then reaped after the grace.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while me.reap_dead(50).unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the paused client was never reaped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut slow = command(
        fd,
        "slow_creator",
        &[
            ("GISMO_CRASHPOINT", "create.allocated"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    )
    .spawn()
    .unwrap();
    let mut slow_out = BufReader::new(slow.stdout.take().unwrap());
    assert_eq!(
        read_until(&mut slow_out, "INDEX "),
        index,
        "the new client did not get the reaped client's entry: the test tests nothing"
    );
    wait_stopped(&mut slow);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(guarded.id() as i32, libc::SIGCONT) };
    read_until(&mut guarded_out, "CREATED ");
    kill(guarded);
    // A leak to collect: the next reap sweeps, and must find no quiet moment while the new
    // occupant is inside its create.
    let status = command(fd, "leaker", &[("GISMO_CRASHPOINT", "create.allocated")])
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let r = me.reap_dead(60_000).unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        r[0].orphan_bytes, 0,
        "the collector freed blocks while the new occupant was inside its create: {r:?}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(slow.id() as i32, libc::SIGCONT) };
    read_until(&mut slow_out, "READY");
    me.reap_dead(60_000).unwrap();
    assert_eq!(
        s.used_bytes(),
        baseline,
        "the leaked block was not collected"
    );
    assert_fsck_clean(&s);
    kill(slow);
}

/// A creator stopped right after recording its allocation as its intent (`create.intent_recorded`)
/// is reaped by lease: the reaper takes the intent and frees the block (no slot names it yet), and
/// another client's object gets that block. The creator resumes: it must not publish a slot naming
/// the freed block. Before, its insert went ahead and only then did it see the fence and return:
/// a `CREATING` slot of a reaped entry was left naming the other object's block for good (the id
/// could not be created again, fsck found the block owned twice, and whoever reaped the entry's
/// next occupant with a scan would have freed the other object's block).
#[cfg(feature = "crashpoints")]
#[test]
fn a_creator_reaped_after_recording_its_intent_never_publishes_the_freed_block() {
    let (fd, s, baseline) = setup("reap-intent-publish");
    let me = s.connect("admin").unwrap();
    let mut creator = command(
        fd,
        "guarded",
        &[
            ("GISMO_HOST", "elsewhere"),
            ("GISMO_CRASHPOINT", "create.intent_recorded"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    )
    .spawn()
    .unwrap();
    let mut out = BufReader::new(creator.stdout.take().unwrap());
    read_until(&mut out, "READY");
    creator.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_stopped(&mut creator);
    // Judged by lease (another host): quarantined, then reaped after the grace.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        if let Some(r) = me.reap_dead(50).unwrap().pop() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the paused creator was never reaped"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        report.freed_intent_bytes, 3000,
        "the reaper did not free the intent: the test tests nothing ({report:?})"
    );
    // The freed block goes to another object.
    let other = ObjectId::from_u64(81);
    let mut b = me
        .create(&other, 3000, b"", &CreateInfo::default())
        .unwrap();
    b.data_mut().fill(0x5a);
    b.seal().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(creator.id() as i32, libc::SIGCONT) };
    assert_eq!(
        read_until(&mut out, "CREATED "),
        "false",
        "a fenced create succeeded"
    );
    kill(creator);
    // Its id is free again, the other object is intact, fsck is clean.
    let theirs = ObjectId::from_u64(80);
    me.create(&theirs, 10, b"", &CreateInfo::default())
        .expect("the fenced creator's id is still taken")
        .seal()
        .unwrap();
    assert_fsck_clean(&s);
    {
        let r = me.get(&other, Some(Duration::ZERO)).unwrap().unwrap();
        assert!(
            r.data().iter().all(|&b| b == 0x5a),
            "the other object's bytes changed"
        );
    }
    for id in [theirs, other] {
        me.delete(&id).unwrap();
    }
    me.reap_dead(60_000).unwrap();
    assert_eq!(s.used_bytes(), baseline, "something leaked");
    assert_fsck_clean(&s);
}

/// The withdraw path with a real process (second review of today's core commits, M1): a creator
/// stopped right after its insert committed (`create.inserted`), judged dead by lease and
/// quarantined, resumes during the grace: it finds itself fenced after its insert, withdraws its
/// slot without the payload (its intent is still recorded) and fails. The reap after the grace
/// frees the block once, through the intent; the id is free again; nothing leaks; fsck is clean.
#[cfg(feature = "crashpoints")]
#[test]
fn a_creator_quarantined_after_its_insert_withdraws_and_its_reap_frees_the_block_once() {
    use gismo_core::store::clients::status;
    const LEASE_MS: u64 = 300;
    let (fd, s, baseline) = setup("reap-withdraw");
    let me = s.connect("admin").unwrap();
    let mut creator = command(
        fd,
        "guarded",
        &[
            ("GISMO_HOST", "elsewhere"),
            ("GISMO_CRASHPOINT", "create.inserted"),
            ("GISMO_CRASHPOINT_ACTION", "stop"),
        ],
    )
    .spawn()
    .unwrap();
    let mut out = BufReader::new(creator.stdout.take().unwrap());
    let index: usize = read_until(&mut out, "INDEX ").parse().unwrap();
    read_until(&mut out, "READY");
    creator.stdin.take().unwrap().write_all(b"go\n").unwrap();
    wait_stopped(&mut creator);
    let status_of = |s: &Arc<Store>| {
        s.clients()
            .into_iter()
            .find(|c| c.index == index)
            .map(|c| c.status)
    };
    // Judged by lease: quarantined (the reap waits for the grace, 2 × lease).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while status_of(&s) != Some(status::QUARANTINED) {
        assert!(
            me.reap_dead(LEASE_MS).unwrap().is_empty(),
            "reaped before the grace"
        );
        assert!(std::time::Instant::now() < deadline, "never quarantined");
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(creator.id() as i32, libc::SIGCONT) };
    assert_eq!(
        read_until(&mut out, "CREATED "),
        "false",
        "a fenced create succeeded"
    );
    assert!(
        s.lookup_summary(&ObjectId::from_u64(80)).is_none(),
        "the withdrawn object is still in the directory"
    );
    kill(creator);
    let report = loop {
        if let Some(r) = me.reap_dead(LEASE_MS).unwrap().pop() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never reaped");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(report.freed_intent_bytes, 3000, "{report:?}");
    assert_eq!(report.aborted_objects, 0, "{report:?}");
    me.create(&ObjectId::from_u64(80), 10, b"", &CreateInfo::default())
        .expect("the withdrawn id is still taken")
        .seal()
        .unwrap();
    me.delete(&ObjectId::from_u64(80)).unwrap();
    me.reap_dead(60_000).unwrap();
    assert_eq!(s.used_bytes(), baseline, "something leaked");
    assert_fsck_clean(&s);
}
