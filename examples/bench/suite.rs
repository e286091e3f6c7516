//! The suite `make bench` runs: a fresh mboxd and, when installed, Postfix's smtp-sink, each
//! started on a free loopback port; cases A–C run alternately against both with this generator
//! and, when installed, with Postfix's `smtp-source`; then the growth curves, memory and
//! start-up. Every part prints a markdown table headed with what it measures, the core count and
//! the date.
//!
//! It exists apart from the generator (`main.rs`) because it manages processes, not SMTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::procs::{self, Guard, find_tool, median, start_mboxd, start_sink};
use super::source::{self, SourceRun};
use super::*;

/// One load the suite runs against each server: a case or a point of a growth curve.
#[derive(Clone, Debug)]
pub struct Point {
    /// How the tables name it.
    pub label: String,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Messages in total.
    pub messages: usize,
    /// Octets per message.
    pub size: usize,
    /// Mailbox name, made unique per round by appending `r` and the round.
    pub user: String,
}

impl Point {
    /// A point named `user`, labelled `NAME: N session(s), M × SIZE`.
    pub fn new(name: &str, user: &str, sessions: usize, messages: usize, size: usize) -> Point {
        let size_text = if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
            format!("{} MiB", size >> 20)
        } else {
            format!("{} KiB", size / 1024)
        };
        Point {
            label: format!(
                "{name}{}{sessions} session{}, {} × {size_text}",
                if name.is_empty() { "" } else { ": " },
                if sessions == 1 { "" } else { "s" },
                thousands(messages)
            ),
            sessions,
            messages,
            size,
            user: user.to_string(),
        }
    }
}

/// `12345` as `12 345`, as the README's tables write numbers.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The cases of issue 10.
pub fn cases() -> Vec<Point> {
    vec![
        Point::new("A", "a", 1, 2000, 1024),
        Point::new("B", "b", 20, 10_000, 1024),
        Point::new("C", "c", 20, 500, 100 * 1024),
    ]
}

/// Each point's reports: against mboxd (every one checked in the mbox), and against smtp-sink.
pub type Results = Vec<(Vec<Report>, Vec<Report>)>;

/// Runs every point `rounds` times with this generator, mboxd then smtp-sink (when given) for
/// each point in turn, so slow phases of the machine hit both alike. After every mboxd run its
/// messages are checked in `mail_dir`. `verbose` prints each run.
pub fn alternate(
    points: &[Point],
    rounds: usize,
    mboxd: SocketAddr,
    mail_dir: &Path,
    sink: Option<SocketAddr>,
    verbose: bool,
) -> Result<Results, String> {
    let mut results: Results = vec![(Vec::new(), Vec::new()); points.len()];
    for round in 1..=rounds {
        for (p, result) in points.iter().zip(&mut results) {
            let mut opts = Options::new(mboxd);
            opts.sessions = p.sessions;
            opts.messages = p.messages;
            opts.size = p.size;
            opts.user = format!("{}r{round}", p.user);
            opts.check_mbox = Some(mail_dir.to_path_buf());
            let r = run(&opts).map_err(|e| format!("{} mboxd round {round}: {e}", p.label))?;
            if verbose {
                println!(
                    "{} | mboxd round {round}: {} (mbox checked)",
                    p.label,
                    r.summary()
                );
            }
            result.0.push(r);
            if let Some(sink) = sink {
                opts.addr = sink;
                opts.check_mbox = None;
                let r =
                    run(&opts).map_err(|e| format!("{} smtp-sink round {round}: {e}", p.label))?;
                if verbose {
                    println!("{} | smtp-sink round {round}: {}", p.label, r.summary());
                }
                result.1.push(r);
            }
        }
    }
    Ok(results)
}

/// Medians over rounds: msg/s, MB/s, p50 ms, p99 ms.
pub fn medians(reports: &[Report]) -> [f64; 4] {
    let m = |f: &dyn Fn(&Report) -> f64| median(reports.iter().map(f).collect());
    [
        m(&|r| r.msg_per_s()),
        m(&|r| r.mb_per_s()),
        m(&|r| ms(r.percentile(0.5))),
        m(&|r| ms(r.percentile(0.99))),
    ]
}

/// `mboxd / peer` as the tables print it: three decimals, so that a ratio just under a target
/// (0.5957 against 0.6) does not print as meeting it, as two decimals would ("0.60").
pub fn ratio(mboxd: f64, peer: f64) -> String {
    format!("{:.3}", mboxd / peer)
}

/// Which parts of the suite to run.
const PARTS: [&str; 4] = ["cases", "source", "growth", "memory"];

struct SuiteOptions {
    mboxd: PathBuf,
    rounds: usize,
    growth_rounds: Option<usize>,
    sink: Result<PathBuf, String>,
    source: Result<PathBuf, String>,
    parts: Vec<String>,
    idle_sessions: usize,
    starts: usize,
}

fn parse(argv: &[String]) -> Result<SuiteOptions, String> {
    let missing = |tool: &str| format!("{tool} not installed (Debian package postfix)");
    let mut o = SuiteOptions {
        mboxd: PathBuf::new(),
        rounds: 5,
        growth_rounds: None,
        sink: find_tool("smtp-sink").ok_or(missing("smtp-sink")),
        source: find_tool("smtp-source").ok_or(missing("smtp-source")),
        parts: PARTS.iter().map(|p| p.to_string()).collect(),
        idle_sessions: 1000,
        starts: 20,
    };
    let mut mboxd = None;
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: {value}"))
        };
        match flag.as_str() {
            "--mboxd" => mboxd = Some(PathBuf::from(value)),
            "--rounds" => o.rounds = number()?,
            "--growth-rounds" => o.growth_rounds = Some(number()?),
            "--idle-sessions" => o.idle_sessions = number()?,
            "--starts" => o.starts = number()?,
            "--smtp-sink" if value == "none" => o.sink = Err("--smtp-sink none".into()),
            "--smtp-sink" => o.sink = Ok(PathBuf::from(value)),
            "--smtp-source" if value == "none" => o.source = Err("--smtp-source none".into()),
            "--smtp-source" => o.source = Ok(PathBuf::from(value)),
            "--parts" => {
                o.parts = value.split(',').map(str::to_string).collect();
                if let Some(bad) = o.parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    return Err(format!("--parts: {bad} is none of {}", PARTS.join(",")));
                }
            }
            _ => return Err(format!("unknown suite option {flag}")),
        }
    }
    o.mboxd = mboxd.ok_or("suite needs --mboxd PATH")?;
    Ok(o)
}

pub(super) fn suite(argv: &[String]) -> Result<(), String> {
    let o = parse(argv)?;
    let part = |name: &str| o.parts.iter().any(|p| p == name);
    let temp = tempfile::Builder::new()
        .prefix("mboxd-bench")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let mail_dir = temp.path().join("mail");
    let server = start_mboxd(&o.mboxd, &mail_dir, &temp.path().join("mboxd.log"), &[])?;
    println!(
        "mboxd {} on {}, mail in {}",
        o.mboxd.display(),
        server.addr,
        mail_dir.display()
    );
    let sink: Option<(Guard, SocketAddr)> = match o.sink.clone().and_then(|b| start_sink(&b)) {
        Ok(s) => {
            println!("smtp-sink on {}", s.1);
            Some(s)
        }
        Err(e) => {
            println!("skipped: smtp-sink comparison: {e}");
            None
        }
    };
    let sink_addr = sink.as_ref().map(|s| s.1);
    if part("cases") {
        let points = cases();
        let results = alternate(&points, o.rounds, server.addr, &mail_dir, sink_addr, true)?;
        print_cases(&points, &results, o.rounds);
    }
    if part("source") {
        match &o.source {
            Ok(binary) => {
                let sink = sink.as_ref().map(|(guard, addr)| (*addr, guard.pid()));
                let mboxd = (server.addr, server.guard.pid());
                source_cases(binary, o.rounds, mboxd, &mail_dir, sink)?
            }
            Err(e) => println!("skipped: smtp-source comparison: {e}"),
        }
    }
    if part("growth") {
        let rounds = o.growth_rounds.unwrap_or(o.rounds.min(3));
        super::growth::growth(rounds, server.addr, &mail_dir, sink_addr)?;
    }
    drop(server);
    drop(sink);
    if part("memory") {
        let c = &cases()[2];
        let mut load = Options::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        load.sessions = c.sessions;
        load.messages = c.messages;
        load.size = c.size;
        load.user = "peak".into();
        super::memory::report(&o.mboxd, temp.path(), o.idle_sessions, &load, o.starts)?;
    }
    Ok(())
}

fn print_cases(points: &[Point], results: &Results, rounds: usize) {
    println!();
    println!(
        "{}",
        procs::heading("Cases A–C: this generator against mboxd and smtp-sink")
    );
    println!();
    println!(
        "Median of {rounds} alternating round(s); pipelining on, 1 recipient; MB = 10^6 octets; \
         latency from sending the final `.` to reading its 250; \
         ratio = median mboxd msg/s / median smtp-sink msg/s."
    );
    println!();
    println!(
        "| case | mboxd msg/s | MB/s | p50 ms | p99 ms | smtp-sink msg/s | MB/s | p50 ms | p99 ms | mboxd / smtp-sink |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (p, (m, s)) in points.iter().zip(results) {
        let [mr, mb, m50, m99] = medians(m);
        if s.is_empty() {
            println!(
                "| {} | {mr:.0} | {mb:.2} | {m50:.3} | {m99:.3} | – | – | – | – | – |",
                p.label
            );
        } else {
            let [sr, sb, s50, s99] = medians(s);
            println!(
                "| {} | {mr:.0} | {mb:.2} | {m50:.3} | {m99:.3} | {sr:.0} | {sb:.2} | {s50:.3} | {s99:.3} | {} |",
                p.label,
                ratio(mr, sr)
            );
        }
    }
}

/// What one smtp-source run against one server cost, per message: the server's CPU time and
/// smtp-source's, in µs; and the rate, msg/s.
#[derive(Clone, Copy)]
struct Cost {
    rate: f64,
    server_us: f64,
    client_us: f64,
}

/// Runs `run` against the server at `to.0`, process `to.1`, through `send` (which returns
/// msg/s), and reads what the server and smtp-source (a child of this process, waited for by
/// then) used of the CPU meanwhile.
fn measured(
    to: (SocketAddr, u32),
    run: &SourceRun,
    send: impl FnOnce(SocketAddr) -> Result<f64, String>,
) -> Result<Cost, String> {
    let (server0, client0) = (procs::cpu_time(to.1)?, procs::children_cpu_time()?);
    let rate = send(to.0)?;
    let (server1, client1) = (procs::cpu_time(to.1)?, procs::children_cpu_time()?);
    let per_message = |d: Duration| d.as_secs_f64() * 1e6 / run.messages as f64;
    Ok(Cost {
        rate,
        server_us: per_message(server1.saturating_sub(server0)),
        client_us: per_message(client1.saturating_sub(client0)),
    })
}

/// Cases A–C sent by `smtp-source -d` against mboxd (each run's mailbox then counted) and
/// smtp-sink, alternating; prints the table, with the CPU time each side used per message.
fn source_cases(
    binary: &Path,
    rounds: usize,
    mboxd: (SocketAddr, u32),
    mail_dir: &Path,
    sink: Option<(SocketAddr, u32)>,
) -> Result<(), String> {
    let points = cases();
    let mut costs: Vec<(Vec<Cost>, Vec<Cost>)> = vec![(Vec::new(), Vec::new()); points.len()];
    for round in 1..=rounds {
        for (p, cost) in points.iter().zip(&mut costs) {
            let run = SourceRun {
                sessions: p.sessions,
                messages: p.messages,
                size: p.size,
                user: format!("src{}r{round}", p.user),
                timeout: Duration::from_secs(300),
            };
            let c = measured(mboxd, &run, |addr| {
                source::run_checked(binary, addr, mail_dir, &run)
            })
            .map_err(|e| format!("{} smtp-source → mboxd round {round}: {e}", p.label))?;
            println!(
                "{} | smtp-source → mboxd round {round}: {:.0} msg/s (mbox counted), CPU µs/msg: mboxd {:.1}, smtp-source {:.1}",
                p.label, c.rate, c.server_us, c.client_us
            );
            cost.0.push(c);
            if let Some(sink) = sink {
                let c = measured(sink, &run, |addr| {
                    let elapsed = source::run_source(binary, addr, &run)?;
                    Ok(p.messages as f64 / elapsed.as_secs_f64())
                })
                .map_err(|e| format!("{} smtp-source → smtp-sink round {round}: {e}", p.label))?;
                println!(
                    "{} | smtp-source → smtp-sink round {round}: {:.0} msg/s, CPU µs/msg: smtp-sink {:.1}, smtp-source {:.1}",
                    p.label, c.rate, c.server_us, c.client_us
                );
                cost.1.push(c);
            }
        }
    }
    println!();
    println!(
        "{}",
        procs::heading("Cases A–C sent by Postfix's smtp-source against mboxd and smtp-sink")
    );
    println!();
    println!(
        "Median of {rounds} alternating round(s) of `{} -d -s SESSIONS -m MESSAGES -l SIZE -f bench@localhost -t USER@localhost 127.0.0.1:PORT` \
         (no pipelining: smtp-source has none; SIZE is the body, to which smtp-source adds its own From, To, Date and Message-Id headers), \
         each whole run timed from spawn to exit; after each mboxd run the mailbox must hold exactly MESSAGES messages. \
         ratio = median mboxd msg/s / median smtp-sink msg/s. \
         CPU µs/msg: user and system time per message, medians over the rounds, of the server (from /proc/PID/stat around the run) \
         and of smtp-source (this process's waited-for children, from /proc/self/stat), counted in /proc's clock ticks (10 ms on Linux).",
        binary.display()
    );
    println!();
    println!(
        "| case | mboxd msg/s | smtp-sink msg/s | mboxd / smtp-sink | CPU µs/msg: mboxd | smtp-sink | smtp-source → mboxd | smtp-source → smtp-sink |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let medians = |cs: &[Cost]| {
        (
            median(cs.iter().map(|c| c.rate).collect()),
            median(cs.iter().map(|c| c.server_us).collect()),
            median(cs.iter().map(|c| c.client_us).collect()),
        )
    };
    for (p, (m, s)) in points.iter().zip(costs) {
        let (m_rate, m_server, m_client) = medians(&m);
        if s.is_empty() {
            println!(
                "| {} | {m_rate:.0} | – | – | {m_server:.1} | – | {m_client:.1} | – |",
                p.label
            );
        } else {
            let (s_rate, s_server, s_client) = medians(&s);
            println!(
                "| {} | {m_rate:.0} | {s_rate:.0} | {} | {m_server:.1} | {s_server:.1} | {m_client:.1} | {s_client:.1} |",
                p.label,
                ratio(m_rate, s_rate)
            );
        }
    }
    Ok(())
}
