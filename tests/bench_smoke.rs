//! Keeps the load generator of `make bench` (examples/bench/) from rotting: it runs its logic
//! for a few messages against an in-process server and checks what it counts, and that it fails
//! when a reply is not the one expected or a message is missing from the mbox.

#[allow(dead_code)]
#[path = "../examples/bench/main.rs"]
mod bench;

use std::time::Duration;

fn options(server: &mboxd::Server) -> bench::Options {
    let mut opts = bench::Options::new(server.local_addr());
    opts.sessions = 2;
    opts.messages = 20;
    opts.size = 1024;
    opts.timeout = Duration::from_secs(10);
    opts.check_mbox = Some(server.mail_dir().to_path_buf());
    opts
}

#[test]
fn two_sessions_twenty_messages_both_ways() {
    let server = mboxd::Server::for_tests().expect("server");
    for pipelining in [true, false] {
        let mut opts = options(&server);
        opts.pipelining = pipelining;
        opts.recipients = 2;
        let report = bench::run(&opts).expect("bench run");
        assert_eq!(report.messages, 20);
        assert_eq!(report.latencies.len(), 20);
        // Content octets: exactly --size per message, counted once however many recipients.
        assert_eq!(report.bytes, 20 * 1024);
        assert!(report.percentile(0.5) <= report.percentile(0.99));
        assert!(report.msg_per_s() > 0.0 && report.mb_per_s() > 0.0);
    }
    // Both runs, each message once in both recipients' mailboxes.
    assert_eq!(server.messages("bench").expect("read").len(), 40);
    assert_eq!(server.messages("bench2").expect("read").len(), 40);
    server.shutdown();
}

#[test]
fn a_missing_message_fails_the_check() {
    let server = mboxd::Server::for_tests().expect("server");
    let report = bench::run(&options(&server)).expect("bench run");
    let err = bench::check_mbox(server.mail_dir(), "bench", &report.tag, 21).unwrap_err();
    assert!(err.contains("20 of 21"), "{err}");
    server.shutdown();
}

#[test]
fn an_unexpected_reply_fails_the_run() {
    let server =
        mboxd::Server::start(mboxd::Config::for_tests().max_message_size(500)).expect("server");
    let err = bench::run(&options(&server)).unwrap_err();
    assert!(err.contains("expected 250, got \"552"), "{err}");
    server.shutdown();
}

#[test]
fn messages_are_exactly_their_size() {
    let mut opts = bench::Options::new("127.0.0.1:1".parse().expect("addr"));
    for size in (0..400).chain([1024, 100 * 1024, 10 << 20]) {
        opts.size = size;
        // As a session makes them: one maker, a second message with an id of the same length.
        let mut messages = bench::Messages::new(&opts);
        let (mut m, mut second) = (Vec::new(), Vec::new());
        messages.write("x.00001.000000002", &mut second);
        messages.write("x.00001.000000001", &mut m);
        assert_eq!(second.len(), m.len(), "size {size}");
        let head = m.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        // Exactly `size` octets, then ".\r\n", unless the headers alone are that long (then the
        // headers) or one octet short of it (then one empty line more).
        let expected = if size == head + 1 {
            head + 2
        } else {
            size.max(head)
        };
        assert_eq!(m.len() - 3, expected, "size {size}");
        assert!(m.ends_with(b"\r\n.\r\n"), "size {size}");
        assert!(
            m.split(|&b| b == b'\n').all(|l| l.len() <= 78),
            "size {size}"
        );
    }
}

#[test]
fn the_suite_alternates_and_checks_every_point() {
    let server = mboxd::Server::for_tests().expect("server");
    let points = [
        bench::suite::Point::new("", "p", 1, 3, 1024),
        bench::suite::Point::new("", "q", 2, 4, 2048),
    ];
    assert_eq!(points[1].label, "2 sessions, 4 × 2 KiB");
    let results = bench::suite::alternate(
        &points,
        2,
        server.local_addr(),
        server.mail_dir(),
        None,
        false,
    )
    .expect("alternate");
    assert_eq!(results.len(), 2);
    for ((m, s), p) in results.iter().zip(&points) {
        assert_eq!(m.len(), 2);
        assert!(s.is_empty());
        assert!(m.iter().all(|r| r.messages == p.messages));
    }
    // One mailbox per point and round.
    assert_eq!(server.messages("pr1").expect("read").len(), 3);
    assert_eq!(server.messages("qr2").expect("read").len(), 4);
    assert_eq!(bench::suite::thousands(12_800), "12 800");
    assert_eq!(bench::suite::thousands(500), "500");
    server.shutdown();
}

#[test]
fn idle_sessions_open_and_a_full_pool_fails() {
    let server = mboxd::Server::start(
        mboxd::Config::for_tests()
            .workers(3)
            .queue_wait(Duration::from_millis(200)),
    )
    .expect("server");
    let open = bench::memory::open_idle(server.local_addr(), 3, Duration::from_secs(10))
        .expect("three idle sessions");
    assert_eq!(open.len(), 3);
    // A fourth waits for a worker that never comes free, and gets 421.
    let err = match bench::memory::open_idle(server.local_addr(), 1, Duration::from_secs(10)) {
        Ok(_) => panic!("a fourth session was served by three workers"),
        Err(e) => e,
    };
    assert!(err.contains("expected 220, got \"421"), "{err}");
    drop(open);
    server.shutdown();
}

#[test]
fn proc_status_date_and_limits_read() {
    let me = std::process::id();
    let rss = bench::procs::status_kib(me, "VmRSS").expect("VmRSS");
    let hwm = bench::procs::status_kib(me, "VmHWM").expect("VmHWM");
    assert!(rss > 0 && hwm >= rss, "rss {rss} hwm {hwm}");
    assert!(bench::procs::threads(me).expect("threads") >= 1);
    assert!(bench::procs::status_kib(me, "NoSuchField").is_err());
    assert!(bench::procs::open_files_limit().is_none_or(|l| l > 0));
    let date = bench::procs::utc_date();
    let digits = date.bytes().filter(u8::is_ascii_digit).count();
    assert!(
        date.len() == 10 && digits == 8 && date.as_bytes()[4] == b'-',
        "{date}"
    );
}

#[test]
fn cpu_times_of_a_process_and_of_waited_for_children_grow() {
    let me = std::process::id();
    let before = bench::procs::cpu_time(me).expect("cpu time");
    // Busy for a tenth of a second of CPU at least: ten ticks.
    let spin = std::time::Instant::now();
    let mut x = 0u64;
    while spin.elapsed() < Duration::from_millis(300) {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    assert!(bench::procs::cpu_time(me).expect("cpu time") > before);
    assert!(bench::procs::cpu_time(u32::MAX).is_err(), "no such process");
    // A child busy for a while, waited for: its time is counted as the children's, not ours
    // (we only wait meanwhile).
    let (children, own) = (
        bench::procs::children_cpu_time().expect("children"),
        bench::procs::cpu_time(me).expect("cpu time"),
    );
    let status = std::process::Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
        .status()
        .expect("sh");
    assert!(status.success());
    let grown = bench::procs::children_cpu_time().expect("children") - children;
    let own_grown = bench::procs::cpu_time(me).expect("cpu time") - own;
    assert!(
        grown > own_grown,
        "children {grown:?}, this process {own_grown:?}"
    );
}

/// The binary of this crate, built for integration tests.
fn mboxd_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_mboxd"))
}

#[test]
fn memory_and_start_up_of_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = mboxd_binary();
    let idle = bench::memory::idle_rss(&binary, dir.path(), 8, 8).expect("idle");
    assert_eq!((idle.sessions, idle.workers), (8, 8));
    assert!(idle.started_kib > 0 && idle.idle_kib > 0);
    assert!(idle.threads >= 8, "{} threads", idle.threads);
    // More sessions than workers: the last one is refused and the measurement fails.
    let err = bench::memory::idle_rss(&binary, dir.path(), 2, 3).unwrap_err();
    assert!(
        err.contains("idle session 2: the greeting: expected 220, got \"421"),
        "{err}"
    );
    let mut load = bench::Options::new("127.0.0.1:1".parse().expect("addr"));
    load.sessions = 2;
    load.messages = 10;
    load.size = 100 * 1024;
    load.timeout = Duration::from_secs(10);
    let peak = bench::memory::peak_rss(&binary, dir.path(), &load).expect("peak");
    assert!(peak.peak_kib >= peak.started_kib);
    let starts = bench::memory::startups(&binary, dir.path(), 2).expect("starts");
    assert_eq!(starts.len(), 2);
    assert!(
        starts
            .iter()
            .all(|d| *d > Duration::ZERO && *d < Duration::from_secs(10))
    );
}

#[test]
fn smtp_source_runs_are_counted_and_a_refusal_fails() {
    let Some(binary) = bench::procs::find_tool("smtp-source") else {
        println!("skipped: smtp-source not installed (Debian package postfix)");
        return;
    };
    let server =
        mboxd::Server::start(mboxd::Config::for_tests().max_message_size(4096)).expect("server");
    let mut run = bench::source::SourceRun {
        sessions: 2,
        messages: 7,
        size: 1024,
        user: "src".into(),
        timeout: Duration::from_secs(30),
    };
    let rate = bench::source::run_checked(&binary, server.local_addr(), server.mail_dir(), &run)
        .expect("smtp-source run");
    assert!(rate > 0.0);
    assert_eq!(bench::source::count_mbox(server.mail_dir(), "src"), Ok(7));
    // The same user again: 14 messages now, so the check of a 7-message run fails.
    let err = bench::source::run_checked(&binary, server.local_addr(), server.mail_dir(), &run)
        .unwrap_err();
    assert!(err.contains("14 messages, smtp-source sent 7"), "{err}");
    // Over the size limit: smtp-source exits non-zero and the run fails.
    run.user = "big".into();
    run.size = 8192;
    let err = bench::source::run_source(&binary, server.local_addr(), &run).unwrap_err();
    assert!(err.contains("smtp-source failed"), "{err}");
    server.shutdown();
}

#[test]
fn the_largest_growth_point_fits_the_default_limit() {
    let largest = bench::growth::size_points()
        .into_iter()
        .max_by_key(|p| p.size)
        .expect("points");
    assert_eq!(largest.label, "4 sessions, 8 × 10 MiB");
    assert_eq!(
        largest.size as u64,
        mboxd::Config::default().max_message_size
    );
    let server = mboxd::Server::for_tests().expect("server");
    let mut opts = options(&server);
    opts.sessions = 1;
    opts.messages = 1;
    opts.size = largest.size;
    let report = bench::run(&opts).expect("a message of exactly the limit is accepted");
    assert_eq!(report.bytes, largest.size as u64);
    // One octet more is refused: the point sits exactly at the limit.
    opts.size += 1;
    let err = bench::run(&opts).unwrap_err();
    assert!(err.contains("got \"552"), "{err}");
    server.shutdown();
}

#[test]
fn a_reply_whose_code_changes_or_whose_line_is_endless_fails() {
    use std::io::Write;
    let mut listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    for (greeting, expected) in [
        (&b"220-mx.test\r\n221 mx.test\r\n"[..], "the code changed"),
        (&[b'2'; 5000][..], "unterminated or over 4096 octets"),
    ] {
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(greeting).expect("write");
            // Open and silent until the client has judged the greeting and gone; a client that
            // never goes fails the test (below) instead of hanging it.
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let gone = std::io::Read::read(&mut s, &mut [0; 1]);
            (listener, gone)
        });
        let err = match bench::memory::open_idle(addr, 1, Duration::from_secs(10)) {
            Ok(_) => panic!("{expected}: the greeting was taken"),
            Err(e) => e,
        };
        assert!(err.contains(expected), "{err}");
        let gone;
        (listener, gone) = peer.join().expect("peer");
        assert!(
            matches!(gone, Ok(0)),
            "{expected}: the client did not close: {gone:?}"
        );
    }
}

#[test]
fn ratios_print_with_three_decimals_so_one_under_a_target_does_not_round_up_to_it() {
    assert_eq!(bench::suite::ratio(14_404.0, 24_175.0), "0.596");
    assert_eq!(bench::suite::ratio(2.0, 1.0), "2.000");
}
