//! The processes the suite measures, and what it reads about them and the machine: starting
//! mboxd and smtp-sink on free loopback ports, finding Postfix's test tools, a process's memory
//! from `/proc/PID/status`, the open-files limit, the core count and the date.
//!
//! It exists apart from the cases so that every part of the suite (cases, growth, memory,
//! start-up) starts and stops servers the same way, and none outlives the suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A child process killed and reaped when dropped, so no server outlives the suite.
pub struct Guard(pub Child);

impl Guard {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started mboxd: the process, the address of its `listening on` line, and how long that line
/// took from just before the exec.
pub struct Mboxd {
    /// The process, killed when dropped.
    pub guard: Guard,
    /// Where it listens.
    pub addr: SocketAddr,
    /// From just before spawning the process to reading its `listening on` line.
    pub startup: Duration,
}

/// Starts `binary --listen 127.0.0.1:0 --mail-dir DIR EXTRA...` with its log (stderr) in `log`
/// and waits (10 s at most) for its `listening on` line.
pub fn start_mboxd(
    binary: &Path,
    mail_dir: &Path,
    log: &Path,
    extra: &[&str],
) -> Result<Mboxd, String> {
    let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let start = Instant::now();
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--mail-dir"])
        .arg(mail_dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stdout = child.stdout.take();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("bench-mboxd-stdout".into())
        .spawn(move || {
            let mut lines = BufReader::new(stdout?).lines();
            let first = lines.next()?.ok();
            let _ = tx.send(first.map(|l| (l, Instant::now())));
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
            Some(())
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let (line, at) = rx
        .recv_timeout(Duration::from_secs(10))
        .ok()
        .flatten()
        .ok_or("mboxd printed no `listening on` line within 10 s")?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or(format!("unexpected first line from mboxd: {line:?}"))?;
    Ok(Mboxd {
        guard,
        addr,
        startup: at.duration_since(start),
    })
}

/// A program of Postfix's test tools (`smtp-sink`, `smtp-source`) from PATH or the usual Debian
/// places.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (smtp-sink then needs a user to drop to).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Starts `smtp-sink` on a free loopback port and waits until it accepts a connection.
pub fn start_sink(binary: &Path) -> Result<(Guard, SocketAddr), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(binary);
    if is_root() {
        // smtp-sink refuses to run as root without a user to drop to.
        command.args(["-u", "nobody"]);
    }
    let child = command
        .args(["-c", &addr.to_string(), "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let mut guard = Guard(child);
    // smtp-sink has no readiness signal: poll, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = guard.0.try_wait() {
            let mut why = String::new();
            if let Some(mut e) = guard.0.stderr.take() {
                let _ = e.read_to_string(&mut why);
            }
            return Err(format!(
                "smtp-sink exited at once ({status}): {}",
                why.trim()
            ));
        }
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(b"QUIT\r\n");
            let _ = s.read(&mut [0; 512]);
            return Ok((guard, addr));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "smtp-sink did not accept connections on {addr} within 10 s"
    ))
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of `/proc/PID/status`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or(format!("{path}: no {field} in kB"))
}

/// The `Threads:` count of `/proc/PID/status`.
pub fn threads(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(format!("{path}: no Threads"))
}

/// Clock ticks per second, the unit of `/proc/PID/stat`'s times: `getconf CLK_TCK`, read once
/// (100 if that fails: Linux's `USER_HZ` on every common architecture).
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks: &f64| ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// The sum of fields `first` and `first + 1` (1-based, as proc(5) numbers them) of
/// `/proc/PID/stat` (`pid` `self` for this process), as a time.
fn stat_time_pair(pid: &str, first: usize) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // The name, in parentheses, may hold spaces: the fields after it start with the third.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> Result<f64, String> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or(format!("{path}: no field {n}"))
    };
    let ticks = field(first)? + field(first + 1)?;
    Ok(Duration::from_secs_f64(ticks / ticks_per_second()))
}

/// The CPU time, user and system, that process `pid` has used so far (fields 14 and 15 of
/// `/proc/PID/stat`), counted in clock ticks (10 ms on Linux).
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    stat_time_pair(&pid.to_string(), 14)
}

/// The CPU time, user and system, of this process's children that have ended and been waited
/// for (fields 16 and 17 of `/proc/self/stat`).
pub fn children_cpu_time() -> Result<Duration, String> {
    stat_time_pair("self", 16)
}

/// This process's soft limit on open files, from `/proc/self/limits` (`None`: unlimited or
/// unreadable).
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The cores this process may use.
pub fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Today's date in UTC, `YYYY-MM-DD`, from `date -u +%F` (the date arithmetic lives in mboxd's
/// private `mbox` module, not in its API); `unknown date` if that fails.
pub fn utc_date() -> String {
    Command::new("date")
        .args(["-u", "+%F"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|date| date.trim().to_string())
        .filter(|date| !date.is_empty())
        .unwrap_or_else(|| "unknown date".to_string())
}

/// The heading every table of the suite starts with: what it measures, the cores and the date.
pub fn heading(what: &str) -> String {
    format!(
        "### {what}\n\nMeasured {} (UTC) on {} core{}.",
        utc_date(),
        cores(),
        if cores() == 1 { "" } else { "s" }
    )
}

/// The median (the upper one of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
