//! What mboxd costs in memory and start-up time: resident memory with many idle sessions, the
//! peak during case C, and the time from exec to the `listening on` line.
//!
//! It exists apart from the throughput cases because these figures do not depend on load (the
//! cores being shared changes them little), so each is measured once, against a fresh mboxd
//! whose whole life is that measurement.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::procs::{self, start_mboxd};
use super::{Client, Options, run};

/// Opens `n` sessions to `addr`, one after another, each read its greeting (220), sent EHLO and
/// read its reply (250), and returns them open. A reply that is not the expected one, a close or
/// a timeout of `timeout` fails it, naming the session.
pub fn open_idle(addr: SocketAddr, n: usize, timeout: Duration) -> Result<Vec<Client>, String> {
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connect(addr, timeout, format!("idle session {i}"))?;
        c.expect(220, "the greeting")?;
        c.send(b"EHLO idle.localhost\r\n", "EHLO")?;
        c.expect(250, "EHLO")?;
        sessions.push(c);
    }
    Ok(sessions)
}

/// Resident memory of mboxd with idle sessions, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Idle {
    /// Sessions held open.
    pub sessions: usize,
    /// `--workers`.
    pub workers: usize,
    /// VmRSS after start, before any session.
    pub started_kib: u64,
    /// VmRSS with every session greeted and after EHLO.
    pub idle_kib: u64,
    /// Threads of the process then.
    pub threads: u64,
}

/// Starts mboxd with `--workers WORKERS`, opens `sessions` idle sessions (see [`open_idle`]),
/// reads mboxd's VmRSS, then closes them and stops mboxd.
pub fn idle_rss(
    binary: &Path,
    dir: &Path,
    workers: usize,
    sessions: usize,
) -> Result<Idle, String> {
    let need = sessions as u64 + 64;
    if let Some(limit) = procs::open_files_limit()
        && limit < need
    {
        return Err(format!(
            "skipped: open files limit {limit} < {need} for {sessions} sessions (raise it with ulimit -n)"
        ));
    }
    let w = workers.to_string();
    let server = start_mboxd(
        binary,
        &dir.join("mail-idle"),
        &dir.join("mboxd-idle.log"),
        &["--workers", &w],
    )?;
    let pid = server.guard.pid();
    let started_kib = procs::status_kib(pid, "VmRSS")?;
    let open = open_idle(server.addr, sessions, Duration::from_secs(30))?;
    let idle_kib = procs::status_kib(pid, "VmRSS")?;
    let threads = procs::threads(pid)?;
    drop(open);
    Ok(Idle {
        sessions,
        workers,
        started_kib,
        idle_kib,
        threads,
    })
}

/// Peak resident memory of a fresh mboxd (default flags) over one load run, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// VmRSS after start.
    pub started_kib: u64,
    /// VmHWM (the peak of VmRSS) after the run.
    pub peak_kib: u64,
}

/// Starts mboxd with its defaults, runs `load` against it (its address and mail directory are
/// set here; every message is checked in the mbox), and reads VmHWM: the peak is that run's.
pub fn peak_rss(binary: &Path, dir: &Path, load: &Options) -> Result<Peak, String> {
    let mail_dir = dir.join("mail-peak");
    let server = start_mboxd(binary, &mail_dir, &dir.join("mboxd-peak.log"), &[])?;
    let pid = server.guard.pid();
    let started_kib = procs::status_kib(pid, "VmRSS")?;
    let mut load = load.clone();
    load.addr = server.addr;
    load.check_mbox = Some(mail_dir);
    run(&load)?;
    let peak_kib = procs::status_kib(pid, "VmHWM")?;
    Ok(Peak {
        started_kib,
        peak_kib,
    })
}

/// Starts mboxd (default flags but `--listen 127.0.0.1:0`) `n` times, each with a new mail
/// directory, and returns each time from just before the spawn to reading `listening on`,
/// stopping each one before the next.
pub fn startups(binary: &Path, dir: &Path, n: usize) -> Result<Vec<Duration>, String> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let server = start_mboxd(
            binary,
            &dir.join(format!("mail-start-{i}")),
            &dir.join("mboxd-start.log"),
            &[],
        )?;
        times.push(server.startup);
    }
    Ok(times)
}

/// Prints the memory and start-up tables: idle sessions, the peak over `load` (case C), and
/// `starts` start-ups. Each part that fails prints why; the first failure is returned after.
pub fn report(
    binary: &Path,
    dir: &Path,
    idle_sessions: usize,
    load: &Options,
    starts: usize,
) -> Result<(), String> {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut failure = None;
    println!();
    println!("{}", procs::heading("Memory: resident set of mboxd"));
    println!();
    println!(
        "VmRSS and VmHWM from /proc/PID/status of the mboxd process; MiB = 2^20 octets. Each row is a fresh mboxd."
    );
    println!();
    println!("| measurement | after start | measured | target |");
    println!("|---|---|---|---|");
    let workers = idle_sessions.max(1);
    match idle_rss(binary, dir, workers, idle_sessions) {
        Ok(i) => println!(
            "| {} idle sessions (greeted, EHLO answered), `--workers {}`, {} threads: VmRSS | {:.1} MiB | {:.1} MiB ({:.1} KiB per session over start) | < 16 MiB |",
            i.sessions,
            i.workers,
            i.threads,
            mib(i.started_kib),
            mib(i.idle_kib),
            i.idle_kib.saturating_sub(i.started_kib) as f64 / i.sessions.max(1) as f64,
        ),
        Err(e) if e.starts_with("skipped:") => {
            println!("| {idle_sessions} idle sessions | {e} | | |")
        }
        Err(e) => {
            println!("| {idle_sessions} idle sessions | FAILED | {e} | |");
            failure.get_or_insert(format!("idle sessions: {e}"));
        }
    }
    let label = format!(
        "case C once ({} sessions, {} × {} KiB), default flags: peak VmHWM",
        load.sessions,
        load.messages,
        load.size / 1024
    );
    match peak_rss(binary, dir, load) {
        Ok(p) => println!(
            "| {label} | {:.1} MiB | {:.1} MiB | < 64 MiB |",
            mib(p.started_kib),
            mib(p.peak_kib)
        ),
        Err(e) => {
            println!("| {label} | FAILED | {e} | |");
            failure.get_or_insert(format!("peak during case C: {e}"));
        }
    }
    println!();
    println!(
        "{}",
        procs::heading("Start-up: exec to the `listening on` line")
    );
    println!();
    println!(
        "{starts} starts of `mboxd --listen 127.0.0.1:0 --mail-dir NEW_DIR`, one after another, timed from just before the spawn to reading the line from its stdout."
    );
    println!();
    let size = std::fs::metadata(binary).map(|m| m.len());
    println!("| binary | size | median | max | target |");
    println!("|---|---|---|---|---|");
    match startups(binary, dir, starts) {
        Ok(t) => {
            let ms: Vec<f64> = t.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            let max = ms.iter().copied().fold(0.0, f64::max);
            println!(
                "| {} | {} | {:.2} ms | {:.2} ms | < 10 ms, binary < 1 MiB |",
                binary.display(),
                size.map_or("?".to_string(), |s| format!(
                    "{} octets ({:.3} MiB)",
                    super::suite::thousands(s as usize),
                    s as f64 / 1048576.0
                )),
                procs::median(ms),
                max
            );
        }
        Err(e) => {
            println!("| {} | | FAILED: {e} | | |", binary.display());
            failure.get_or_insert(format!("start-up: {e}"));
        }
    }
    failure.map_or(Ok(()), Err)
}
