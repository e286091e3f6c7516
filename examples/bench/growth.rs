//! How cost grows: throughput as messages grow from 1 KiB to 10 MiB, and as concurrent sessions
//! grow from 1 to 64, against mboxd and smtp-sink alternately, so a cliff shows as a ratio that
//! drops, not as a number that depends on the machine.
//!
//! It exists apart from the cases because it answers a different question (where does it stop
//! scaling) and runs fewer rounds.

use std::net::SocketAddr;
use std::path::Path;

use super::procs;
use super::suite::{Point, Results, alternate, medians, ratio};

/// Sessions of every point of the size curve.
pub const SIZE_SESSIONS: usize = 4;

/// The size curve: 1 KiB, 100 KiB and 10 MiB messages over [`SIZE_SESSIONS`] sessions, about
/// 4, 40 and 80 MB each. 10 MiB is exactly mboxd's default `--max-message-size` (10 485 760
/// octets of message as received, headers included, after dot-unstuffing; the final `.` not
/// counted), which it accepts; the generator's messages are exactly their size.
pub fn size_points() -> Vec<Point> {
    vec![
        Point::new("", "size1k", SIZE_SESSIONS, 4000, 1024),
        Point::new("", "size100k", SIZE_SESSIONS, 400, 100 * 1024),
        Point::new("", "size10m", SIZE_SESSIONS, 8, 10 << 20),
    ]
}

/// The concurrency curve: 1 KiB messages, 200 per session (at least 1000 in all), over 1, 4,
/// 20 and 64 sessions. 64 is mboxd's default `--workers`; 127.0.0.1 is exempt from the
/// per-peer limit (`--max-per-peer`, default half the workers).
pub fn session_points() -> Vec<Point> {
    [1, 4, 20, 64]
        .into_iter()
        .map(|n| Point::new("", &format!("sess{n}-"), n, (200 * n).max(1000), 1024))
        .collect()
}

/// Runs both curves `rounds` times and prints their tables.
pub fn growth(
    rounds: usize,
    mboxd: SocketAddr,
    mail_dir: &Path,
    sink: Option<SocketAddr>,
) -> Result<(), String> {
    let sizes = size_points();
    let size_results = alternate(&sizes, rounds, mboxd, mail_dir, sink, false)?;
    let sessions = session_points();
    let session_results = alternate(&sessions, rounds, mboxd, mail_dir, sink, false)?;
    println!();
    print_sizes(&sizes, &size_results, rounds);
    println!();
    print_sessions(&sessions, &session_results, rounds);
    Ok(())
}

fn print_sizes(points: &[Point], results: &Results, rounds: usize) {
    println!(
        "{}",
        procs::heading("Growth with message size: MB/s for 1 KiB, 100 KiB and 10 MiB messages")
    );
    println!();
    println!(
        "This generator, {SIZE_SESSIONS} sessions, pipelining on, 1 recipient; median of {rounds} alternating round(s); \
         MB = 10^6 octets of message; every mboxd run checked in the mbox; ratio = mboxd MB/s / smtp-sink MB/s."
    );
    println!();
    println!("| load | mboxd MB/s | msg/s | p99 ms | smtp-sink MB/s | msg/s | mboxd / smtp-sink |");
    println!("|---|---|---|---|---|---|---|");
    for (p, (m, s)) in points.iter().zip(results) {
        let [mr, mb, _, m99] = medians(m);
        if s.is_empty() {
            println!("| {} | {mb:.2} | {mr:.0} | {m99:.3} | – | – | – |", p.label);
        } else {
            let [sr, sb, _, _] = medians(s);
            println!(
                "| {} | {mb:.2} | {mr:.0} | {m99:.3} | {sb:.2} | {sr:.0} | {} |",
                p.label,
                ratio(mb, sb)
            );
        }
    }
}

fn print_sessions(points: &[Point], results: &Results, rounds: usize) {
    println!(
        "{}",
        procs::heading(
            "Growth with concurrency: msg/s for 1, 4, 20 and 64 sessions of 1 KiB messages"
        )
    );
    println!();
    println!(
        "This generator, pipelining on, 1 recipient; median of {rounds} alternating round(s); \
         every mboxd run checked in the mbox; ratio = mboxd msg/s / smtp-sink msg/s."
    );
    println!();
    println!(
        "| load | mboxd msg/s | p50 ms | p99 ms | smtp-sink msg/s | p99 ms | mboxd / smtp-sink |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (p, (m, s)) in points.iter().zip(results) {
        let [mr, _, m50, m99] = medians(m);
        if s.is_empty() {
            println!(
                "| {} | {mr:.0} | {m50:.3} | {m99:.3} | – | – | – |",
                p.label
            );
        } else {
            let [sr, _, _, s99] = medians(s);
            println!(
                "| {} | {mr:.0} | {m50:.3} | {m99:.3} | {sr:.0} | {s99:.3} | {} |",
                p.label,
                ratio(mr, sr)
            );
        }
    }
}
