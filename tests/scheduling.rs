//! The scheduling policy of the `mboxd` binary's threads (README, "Where the time goes"): the
//! workers and the writer run under `SCHED_BATCH`, so that their wake-ups wait for the running
//! thread's turn; the threads that accept, dispatch and wait for signals keep the default
//! policy, so a new connection is taken at once.

mod support;

use std::fs;
use std::time::Duration;

use support::{Client, signal, spawn, wait_bounded};

/// `SCHED_OTHER` and `SCHED_BATCH`, as sched(7) numbers them on Linux.
const OTHER: u32 = 0;
const BATCH: u32 = 3;

/// Each thread of `pid`: its name and its scheduling policy (field 41 of
/// `/proc/PID/task/TID/stat`, proc(5)).
fn threads(pid: u32) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task") {
        let dir = task.expect("a task entry").path();
        let (Ok(comm), Ok(stat)) = (
            fs::read_to_string(dir.join("comm")),
            fs::read_to_string(dir.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // The name, in parentheses, may hold spaces: the fields after it start with the third.
        let after_name = stat.rsplit_once(')').expect("stat has a name").1;
        let policy = after_name
            .split_whitespace()
            .nth(41 - 3)
            .and_then(|f| f.parse().ok())
            .expect("a policy field");
        found.push((comm.trim_end().to_string(), policy));
    }
    found
}

#[test]
fn workers_and_the_writer_run_under_sched_batch_and_the_rest_do_not() {
    if !std::path::Path::new("/proc/self/task").exists() {
        println!("skipped: no /proc/PID/task to read thread policies from");
        return;
    }
    let (mut child, addrs) = spawn(&["--listen", "127.0.0.1:0", "--workers", "3"], 1);
    // A session served, so every kind of thread has run.
    let mut c = Client::connect(addrs[0]);
    assert_eq!(c.read_reply().code, 220);
    c.expect("EHLO a.test", 250);
    let threads = threads(child.0.id());
    c.expect("QUIT", 221);
    let batch: Vec<&str> = threads
        .iter()
        .filter(|(_, policy)| *policy == BATCH)
        .map(|(name, _)| name.as_str())
        .collect();
    let mut expected = vec![
        "mboxd-worker-0",
        "mboxd-worker-1",
        "mboxd-worker-2",
        "mboxd-writer",
    ];
    let mut got = batch.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "threads under SCHED_BATCH: {threads:?}");
    let others: Vec<&(String, u32)> = threads.iter().filter(|(_, p)| *p != BATCH).collect();
    assert!(
        others.len() >= 3 && others.iter().all(|(_, p)| *p == OTHER),
        "the main thread, the acceptor and the dispatcher keep the default policy: {threads:?}"
    );
    signal(&child.0, "TERM");
    assert!(wait_bounded(&mut child.0, Duration::from_secs(10)).success());
}
