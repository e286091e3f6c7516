//! Start a server for a test, send a message with `lettre`, and check what arrived through the
//! mbox reader. `cargo run --example lettre`; `tests/example_lettre.rs` runs it in `cargo test`.

use std::error::Error;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::{Message, SmtpTransport, Transport};

/// The whole example; `main` runs it, and so does a test.
pub fn run() -> Result<(), Box<dyn Error>> {
    // A server on a free port of 127.0.0.1, mail in a temporary directory removed on drop.
    let server = mboxd::Server::start(mboxd::Config::for_tests().user("jones")?)?;
    let addr = server.local_addr();

    // The application under test, configured with the server's address.
    let email = Message::builder()
        .from("App <app@example.com>".parse()?)
        .to("Jones <jones@localhost>".parse()?)
        .subject("Your order has shipped")
        .header(ContentType::TEXT_PLAIN)
        .body(String::from(
            "Hello Jones,\nFrom today on it is on its way.\n",
        ))?;
    let mailer = SmtpTransport::builder_dangerous(addr.ip().to_string())
        .port(addr.port())
        .timeout(Some(Duration::from_secs(10)))
        .build();
    mailer.send(&email)?;

    // Read it back: wait_for returns as soon as it is stored (here, at once: lettre got its
    // 250 only after the message was synced to the mbox).
    let mail = server.wait_for("jones", 1, Duration::from_secs(10))?;
    let m = &mail[0];
    assert_eq!(m.sender(), Some("app@example.com"));
    assert_eq!(m.subject(), Some("Your order has shipped"));
    assert_eq!(m.header("To"), Some("Jones <jones@localhost>"));
    // The body line starting `From ` is stored as `>From ` and read back as sent (lettre
    // ends the DATA with one more line end after the body's own, hence the trim).
    assert_eq!(
        m.body_text().trim_end(),
        "Hello Jones,\nFrom today on it is on its way."
    );
    println!(
        "{} message(s) for jones; the first from {:?}: {:?}",
        mail.len(),
        m.sender(),
        m.subject()
    );
    server.shutdown();
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn Error>> {
    run()
}
