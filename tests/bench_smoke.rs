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
        assert!(report.bytes >= 20 * 1024, "{} octets", report.bytes);
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
