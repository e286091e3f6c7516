//! Real third-party clients against the server: lettre (Rust), Python's smtplib with the mbox
//! read back by Python's mailbox module, swaks with pipelining, and curl. A missing external
//! client is reported with a `skipped:` line.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use lettre::{Message, SmtpTransport, Transport};
use support::{TestServer, mbox_entries, wait_bounded};

#[test]
fn lettre_delivers_to_two_mailboxes() {
    let server = TestServer::start();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.addr.port())
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let email = Message::builder()
        .from("Sender <sender@b.test>".parse().unwrap())
        .to("Jones <jones@mx.test>".parse().unwrap())
        .to("brown@mx.test".parse().unwrap())
        .subject("from lettre")
        .body("Grüße aus Rust\nFrom the second line\n.dot line\n".to_string())
        .unwrap();
    let response = mailer.send(&email).expect("lettre sends");
    assert!(response.is_positive());
    for user in ["jones", "brown"] {
        let mbox = server.mbox_text(user);
        let entries = mbox_entries(&mbox);
        assert_eq!(entries.len(), 1, "{mbox}");
        assert!(entries[0].starts_with("From sender@b.test "));
        assert!(entries[0].contains("Subject: from lettre\n"));
        // lettre encodes the body; whatever it chose, the mbox keeps it and quotes From lines.
        assert!(!entries[0].contains("\nFrom the second line"), "{mbox}");
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const PYTHON: &str = r#"
import mailbox, smtplib, sys
port, path = int(sys.argv[1]), sys.argv[2]
body = "Subject: from smtplib\r\n\r\nFrom the start\r\n.dot line\r\ncaf\u00e9\r\nlast\r\n"
with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
    s.ehlo("python.test")
    assert s.has_extn("pipelining") and s.has_extn("8bitmime") and s.has_extn("smtputf8")
    refused = s.sendmail("py@b.test", ["jones@mx.test", "nobody@example.com"], body.encode())
    assert list(refused) == ["nobody@example.com"], refused
    try:
        s.sendmail("py@b.test", ["nobody@example.com"], b"x")
        raise SystemExit("relaying was not refused")
    except smtplib.SMTPRecipientsRefused as e:
        assert e.recipients["nobody@example.com"][0] == 550
    # An SMTPUTF8 sender: Python reads the From line as ASCII, so mboxd writes it so.
    s.sendmail("jos\u00e9@b.test", ["jones@mx.test"], b"Subject: utf8\r\n\r\nx\r\n",
               mail_options=["SMTPUTF8"])
msgs = list(mailbox.mbox(path))
assert len(msgs) == 2, len(msgs)
assert msgs[1].get_from().startswith("jos\\x{E9}@b.test "), msgs[1].get_from()
assert msgs[1]["Subject"] == "utf8", msgs[1]["Subject"]
m = msgs[0]
assert m["Subject"] == "from smtplib", m["Subject"]
assert m["Return-Path"] == "<py@b.test>", m["Return-Path"]
assert m.get_from().startswith("py@b.test "), m.get_from()
payload = m.get_payload(decode=True)
assert payload == ">From the start\n.dot line\ncaf\u00e9\nlast\n".encode(), payload
print("python ok")
"#;

#[test]
fn python_smtplib_sends_and_mailbox_reads_it_back() {
    if !have("python3") {
        println!("skipped: python3 not found");
        return;
    }
    let server = TestServer::start();
    std::fs::create_dir_all(server.mail_dir()).unwrap();
    let mut child = Command::new("python3")
        .args(["-c", PYTHON, &server.addr.port().to_string()])
        .arg(server.mail_dir().join("jones"))
        .spawn()
        .expect("python3");
    assert!(
        wait_bounded(&mut child, Duration::from_secs(30)).success(),
        "the python client failed"
    );
}

#[test]
fn swaks_with_pipelining() {
    if !have("swaks") {
        println!("skipped: swaks not found (make test installs it when run as root)");
        return;
    }
    let server = TestServer::start();
    let mut child = Command::new("swaks")
        .args([
            "--server",
            &server.addr.to_string(),
            "--to",
            "jones@mx.test,brown@mx.test",
        ])
        .args([
            "--from",
            "swaks@b.test",
            "--helo",
            "swaks.test",
            "--pipeline",
            "--timeout",
            "10",
        ])
        .args(["--header", "Subject: from swaks", "--body", "sent by swaks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("swaks");
    assert!(
        wait_bounded(&mut child, Duration::from_secs(30)).success(),
        "swaks failed"
    );
    for user in ["jones", "brown"] {
        let mbox = server.mbox_text(user);
        assert_eq!(mbox_entries(&mbox).len(), 1);
        assert!(
            mbox.contains("Subject: from swaks\n") && mbox.contains("sent by swaks"),
            "{mbox}"
        );
    }
}

#[test]
fn curl_smtp_upload() {
    if !have("curl") {
        println!("skipped: curl not found");
        return;
    }
    let server = TestServer::start();
    let file = server.dir.path().join("message.eml");
    std::fs::write(
        &file,
        "Subject: from curl\r\n\r\nsent by curl\r\n.starts with a dot\r\n",
    )
    .unwrap();
    let mut child = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("smtp://{}/curl.test", server.addr),
        ])
        .args([
            "--mail-from",
            "curl@b.test",
            "--mail-rcpt",
            "jones@mx.test",
            "-T",
        ])
        .arg(&file)
        .spawn()
        .expect("curl");
    assert!(
        wait_bounded(&mut child, Duration::from_secs(30)).success(),
        "curl failed"
    );
    let mbox = server.mbox_text("jones");
    assert!(
        mbox.ends_with("Subject: from curl\n\nsent by curl\n.starts with a dot\n\n"),
        "{mbox}"
    );
}
