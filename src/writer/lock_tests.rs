//! Unit tests of dotlocks: taking and releasing them, each staleness rule on locks built by hand
//! (dead process ids, wrong start times, old modification times), and the removal of orphans.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::lock::{self, Owner, Process, Verdict};

/// Above Linux's largest possible process id (2^22), so no such process exists.
const DEAD_PID: u32 = 4_194_305;

/// This test process's writer: one number for every test here (`Owner::current` makes a new
/// writer at each call).
fn me() -> Owner {
    static ME: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
    *ME.get_or_init(Owner::current)
}

/// Process 1 (init), which lives as long as the system does.
fn init() -> Owner {
    match lock::process(1) {
        Process::Started(start) => Owner {
            pid: 1,
            start,
            writer: 1,
        },
        other => panic!("/proc/1/stat: {other:?}"),
    }
}

/// Builds what mboxd leaves for `owner` holding `mailbox`'s lock: the private file, empty (as
/// after a power cut), hard-linked to `<mailbox>.lock`.
fn mboxd_lock(dir: &Path, mailbox: &str, owner: Owner) -> (PathBuf, PathBuf) {
    let temp = dir.join(lock::temp_name(mailbox, owner));
    let lock = dir.join(format!("{mailbox}.lock"));
    fs::write(&temp, "").unwrap();
    fs::hard_link(&temp, &lock).unwrap();
    (lock, temp)
}

fn foreign_lock(dir: &Path, mailbox: &str, contents: &str) -> PathBuf {
    let lock = dir.join(format!("{mailbox}.lock"));
    fs::write(&lock, contents).unwrap();
    lock
}

fn set_mtime(path: &Path, when: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

fn boot() -> SystemTime {
    lock::boot_time().expect("btime in /proc/stat")
}

fn judge(dir: &Path, mailbox: &str) -> Verdict {
    lock::judge(dir, mailbox, &dir.join(format!("{mailbox}.lock")), me())
}

fn is_stale(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Stale { .. })
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn proc_fields_are_parsed_after_the_command_name() {
    let stat = "7 (a) b) c) S 1 7 7 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 0 0";
    assert_eq!(lock::parse_start_time(stat), Some(4242));
    assert_eq!(lock::parse_start_time("7 (a) S 1"), None);
    assert!(matches!(
        lock::process(std::process::id()),
        Process::Started(_)
    ));
    assert_eq!(lock::process(DEAD_PID), Process::Gone);
    // kill(2) with signal 0 agrees, and never treats 0 or a too-large id as a process group.
    assert!(crate::os::process_exists(std::process::id()));
    assert!(crate::os::process_exists(1));
    assert!(!crate::os::process_exists(DEAD_PID));
    assert!(!crate::os::process_exists(0));
    assert!(!crate::os::process_exists(u32::MAX));
    assert!(boot() < SystemTime::now());
}

#[test]
fn private_names_encode_the_mailbox_and_the_owner() {
    let owner = Owner {
        pid: 42,
        start: 7,
        writer: 3,
    };
    assert_eq!(lock::temp_name("jones", owner), ".jones.lock.mboxd-42-7-3");
    assert_eq!(
        lock::parse_temp_name(".jones.lock.mboxd-42-7-3"),
        Some(("jones", owner))
    );
    // A name without the writer's number (mboxd before it had one) is writer 0's.
    assert_eq!(
        lock::parse_temp_name(".jones.lock.mboxd-42-7"),
        Some(("jones", Owner { writer: 0, ..owner }))
    );
    // A mailbox name may contain the mark itself.
    assert_eq!(
        lock::parse_temp_name(".a.lock.mboxd-1-2.lock.mboxd-42-7-3"),
        Some(("a.lock.mboxd-1-2", owner))
    );
    for name in [
        "jones",
        "jones.lock",
        ".jones.lock.mboxd-42",
        ".jones.lock.mboxd-x-7",
        ".jones.lock.mboxd-42-7-x",
        ".jones.lock.mboxd-42-7-3-1",
        "..lock.mboxd-42-7",
        ".jones.lock.mboxd-0-7",
    ] {
        assert_eq!(lock::parse_temp_name(name), None, "{name}");
    }
}

#[test]
fn a_lock_is_a_link_to_a_private_name_and_both_go_on_release() {
    let dir = tempfile::tempdir().unwrap();
    let held = lock::take(dir.path(), "jones", me()).ok().unwrap();
    let temp = lock::temp_name("jones", me());
    assert_eq!(names(dir.path()), [temp.clone(), "jones.lock".to_string()]);
    let lock_meta = fs::metadata(dir.path().join("jones.lock")).unwrap();
    let temp_meta = fs::metadata(dir.path().join(&temp)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(lock_meta.ino(), temp_meta.ino());
    assert_eq!(
        fs::read_to_string(dir.path().join("jones.lock")).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(held);
    assert!(names(dir.path()).is_empty());
}

/// What another program put under the writer's private name (predictable from `/proc`) is
/// removed, never opened: a FIFO blocked the writer, deliveries and SIGTERM for good, and a hard
/// link to a mailbox had it truncated to the process id. A file the writer left is reused.
#[test]
fn a_planted_private_name_is_removed_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join(lock::temp_name("jones", me()));
    let made = std::process::Command::new("mkfifo").arg(&temp).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    // On a thread: opening the FIFO would block it for good, and the test must fail instead.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || tx.send(lock::take(&path, "jones", me()).ok()));
    let held = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("taking the lock blocked on a FIFO")
        .unwrap();
    assert!(fs::symlink_metadata(&temp).unwrap().file_type().is_file());
    drop(held);
    let mailbox = dir.path().join("smith");
    fs::write(&mailbox, "From a\n\nmail\n\n").unwrap();
    fs::hard_link(&mailbox, &temp).unwrap();
    let held = lock::take(dir.path(), "jones", me()).ok().unwrap();
    assert_eq!(fs::read(&mailbox).unwrap(), b"From a\n\nmail\n\n");
    drop(held);
    // Left by a failed removal: an old pid in it, still linked to the lock.
    fs::write(&temp, "1\n").unwrap();
    fs::hard_link(&temp, dir.path().join("jones.lock")).unwrap();
    let held = lock::take(dir.path(), "jones", me()).ok().unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("jones.lock")).unwrap(),
        format!("{}\n", std::process::id())
    );
    drop(held);
    assert_eq!(names(dir.path()), ["smith"]);
}

#[test]
fn a_held_lock_is_refused_and_leaves_no_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let lock = foreign_lock(dir.path(), "jones", "");
    assert!(matches!(
        lock::take(dir.path(), "jones", me()),
        Err(lock::Refused::Held)
    ));
    assert_eq!(names(dir.path()), ["jones.lock"]);
    assert_eq!(fs::read(&lock).unwrap(), b"");
}

#[test]
fn a_lock_removed_before_it_is_judged_is_gone_not_stale() {
    // Stale would have `take` remove the name, which by then may be another program's new lock.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(judge(dir.path(), "nobody"), Verdict::Gone);
}

#[test]
fn rule_1_a_lock_from_before_boot_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    // Held by a living mboxd (rule 2) and by a living process id (rule 3)...
    let (lock, _) = mboxd_lock(dir.path(), "a", init());
    assert_eq!(judge(dir.path(), "a"), Verdict::Held);
    let foreign = foreign_lock(dir.path(), "b", "1\n");
    assert_eq!(judge(dir.path(), "b"), Verdict::Held);
    // ...unless made before the system booted.
    set_mtime(&lock, boot() - Duration::from_secs(1));
    set_mtime(&foreign, boot() - Duration::from_secs(1));
    for mailbox in ["a", "b"] {
        match judge(dir.path(), mailbox) {
            Verdict::Stale { reason, .. } => assert!(reason.contains("booted"), "{reason}"),
            other => panic!("{mailbox}: a lock from before boot was {other:?}"),
        }
    }
}

#[test]
fn a_stale_lock_that_cannot_be_removed_is_an_error_at_once() {
    // A directory made before boot: stale, but remove_file fails. It was judged stale and logged
    // as removed every 50 ms until the lock timeout, then answered as a lock held.
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("jones.lock");
    fs::create_dir(&lock).unwrap();
    File::open(&lock)
        .unwrap()
        .set_modified(boot() - Duration::from_secs(1))
        .unwrap();
    match lock::take(dir.path(), "jones", me()) {
        Err(lock::Refused::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory),
        Err(lock::Refused::Held) => panic!("refused as held"),
        Ok(_) => panic!("taken"),
    }
    assert_eq!(names(dir.path()), ["jones.lock"]);
}

#[test]
fn rule_2_an_mboxd_lock_is_stale_at_once_when_its_owner_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let live = init();
    let owners = [
        // No such process.
        Owner {
            pid: DEAD_PID,
            start: 12345,
            writer: 1,
        },
        // The id lives, but names a process started at another time: it was reused.
        Owner {
            pid: 1,
            start: live.start + 1,
            writer: 1,
        },
        // This very writer, which holds no lock outside a commit.
        me(),
    ];
    for owner in owners {
        let (lock, temp) = mboxd_lock(dir.path(), "jones", owner);
        match judge(dir.path(), "jones") {
            Verdict::Stale { temp: theirs, .. } => assert_eq!(theirs, Some(temp.clone())),
            other => panic!("{owner:?}: {other:?}"),
        }
        // Taking it breaks it, and its private name goes too.
        let held = lock::take(dir.path(), "jones", me()).ok().unwrap();
        assert!(owner == me() || !temp.exists(), "{owner:?}");
        drop(held);
        assert!(!lock.exists() && names(dir.path()).is_empty(), "{owner:?}");
    }
}

#[test]
fn rule_2_another_writer_of_this_process_holds_its_lock() {
    // Two servers in one test process on one mail directory: each one's lock must hold against
    // the other (it was "left by this process", so stale, and broken).
    let dir = tempfile::tempdir().unwrap();
    let other = Owner::current();
    let (lock, temp) = mboxd_lock(dir.path(), "jones", other);
    assert_eq!(judge(dir.path(), "jones"), Verdict::Held);
    assert!(lock::take(dir.path(), "jones", me()).is_err());
    assert!(lock.exists() && temp.exists());
    fs::remove_file(&lock).unwrap();
    fs::remove_file(&temp).unwrap();
    // A number this process never gave, or none (an older mboxd's name, as after a restart
    // under the same id without /proc), is a leftover: stale at once, as before.
    for writer in [0, u32::MAX] {
        let (_, temp) = mboxd_lock(dir.path(), "jones", Owner { writer, ..me() });
        assert!(is_stale(&judge(dir.path(), "jones")), "{writer}");
        let held = lock::take(dir.path(), "jones", me()).ok().unwrap();
        assert!(!temp.exists());
        drop(held);
    }
}

#[test]
fn rule_2_a_living_mboxd_owner_holds_its_lock_whatever_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let (lock, temp) = mboxd_lock(dir.path(), "jones", init());
    assert_eq!(judge(dir.path(), "jones"), Verdict::Held);
    let old = ago(STALE_SECS + 100);
    if old > boot() {
        set_mtime(&lock, old);
        assert_eq!(judge(dir.path(), "jones"), Verdict::Held);
    } else {
        println!("skipped the age check: the system booted less than 600 s ago");
    }
    assert!(lock::take(dir.path(), "jones", me()).is_err());
    assert!(lock.exists() && temp.exists());
}

#[test]
fn rule_3_a_process_id_that_is_gone_or_ours_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    foreign_lock(dir.path(), "jones", &format!("{DEAD_PID}\n"));
    assert!(is_stale(&judge(dir.path(), "jones")));
    foreign_lock(dir.path(), "jones", &format!("{}\n", std::process::id()));
    assert!(is_stale(&judge(dir.path(), "jones")));
    foreign_lock(dir.path(), "jones", "1\n");
    assert_eq!(judge(dir.path(), "jones"), Verdict::Held);
    foreign_lock(dir.path(), "jones", &format!("{DEAD_PID}\n"));
    let held = lock::take(dir.path(), "jones", me()).ok().unwrap();
    drop(held);
    assert!(names(dir.path()).is_empty());
}

const STALE_SECS: u64 = lock::STALE_DOTLOCK.as_secs();

#[test]
fn rule_4_other_locks_are_stale_only_after_500_s() {
    let dir = tempfile::tempdir().unwrap();
    for contents in ["", "not a pid\n", "0\n", "1\n"] {
        let lock = foreign_lock(dir.path(), "jones", contents);
        assert_eq!(judge(dir.path(), "jones"), Verdict::Held, "{contents:?}");
        let old = ago(STALE_SECS + 10);
        if old > boot() {
            set_mtime(&lock, ago(STALE_SECS - 10));
            assert_eq!(judge(dir.path(), "jones"), Verdict::Held, "{contents:?}");
            set_mtime(&lock, old);
            match judge(dir.path(), "jones") {
                Verdict::Stale { reason, temp } => {
                    assert!(reason.contains("500 s"), "{reason}");
                    assert_eq!(temp, None);
                }
                other => panic!("{contents:?}: an old lock was {other:?}"),
            }
        } else {
            println!("skipped the age check: the system booted less than 510 s ago");
        }
    }
}

#[test]
fn orphans_whose_owner_is_gone_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let live = init();
    let dead = Owner {
        pid: DEAD_PID,
        start: 7,
        writer: 1,
    };
    let reused = Owner {
        pid: 1,
        start: live.start + 1,
        writer: 1,
    };
    // Created but never linked.
    fs::write(d.join(lock::temp_name("a", dead)), "").unwrap();
    fs::write(d.join(lock::temp_name("b", reused)), "").unwrap();
    // Linked: the lock goes too.
    mboxd_lock(d, "c", dead);
    // A living owner's files, a foreign lock and a mailbox stay.
    mboxd_lock(d, "e", live);
    fs::write(d.join(lock::temp_name("f", live)), "").unwrap();
    foreign_lock(d, "g", "");
    fs::write(d.join("h"), "From a\n\n").unwrap();
    fs::write(d.join(".h.lock.mboxd-x-y"), "").unwrap();
    lock::remove_orphans(d);
    let mut kept = vec![
        lock::temp_name("e", live),
        lock::temp_name("f", live),
        ".h.lock.mboxd-x-y".to_string(),
        "e.lock".to_string(),
        "g.lock".to_string(),
        "h".to_string(),
    ];
    kept.sort();
    assert_eq!(names(d), kept);
}
