//! mboxd: a small, blocking SMTP server that delivers to mbox files.
//!
//! It accepts mail for local users over SMTP (RFC 5321, with the RFC 821 commands of old) and
//! appends each message to `MAIL_DIR/<user>` in mboxrd format. It runs without an async runtime:
//! a fixed pool of threads serves sessions, and one writer thread owns every mbox file.
//!
//! ```text
//! TcpListener::accept ──▶ dispatcher ──(rendezvous channel)──▶ worker (one per live session)
//!   (one per listener)     421 if no worker is free in time        │ read() into the core, write() its replies
//!                                                                  ▼
//!                         Protocol: input buffer ─▶ Framer ─▶ Session (one enum State)
//!                         bytes in; replies, and a delivery when a message is complete, out
//!                                                                  │ Event::Deliver
//!                                                                  ▼
//!                           writer thread ◀──(channel of Job { entries, ack })
//!           lock → append → fdatasync each file once (and the mail dir after creating a file)
//!             → unlock (unless more jobs are already queued) → ack all, each "250" (or
//!               450/451/452) sent to its client by the writer, without waiting
//!                                                                  │
//!                          the worker reads on; before it writes again it settles the ack
//! ```
//!
//! Use it from a test: one call starts a server on a free port of 127.0.0.1 with a temporary
//! mail directory (removed when the server is dropped), and the mail is read back, parsed,
//! without polling:
//!
//! ```
//! use std::time::Duration;
//!
//! let server = mboxd::Server::start(
//!     mboxd::Config::for_tests()
//!         .domain("app.test")?
//!         .user("jones")?
//!         .max_recipients(10),
//! )?;
//! let addr = server.local_addr();
//! // ... the code under test sends mail for jones@app.test to `addr` ...
//! let mail = server.messages("jones")?; // or wait_for("jones", 1, Duration::from_secs(5))
//! assert!(mail.is_empty());
//! server.shutdown(); // or drop it
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! That is the whole API: [`Server`] (with [`WaitError`] from [`Server::wait_for`]),
//! [`Config`] and its builder methods (with [`ConfigError`] from the checked ones, and
//! [`BareNewline`], [`Auth`] and [`FailRule`] for three settings), [`StartError`], and the mbox
//! reader in [`mbox`]. The `fuzz` module exists only for fuzzing (`cargo fuzz`, or the `fuzzing`
//! feature) and is not a stable API. The command line, its files and the signal handling belong
//! to the `mboxd` binary.
#![deny(missing_docs)]
// No panic from the commonest causes: the lints below forbid indexing, slicing, unwrap and
// expect in the library outside its tests and the fuzz harness (`src/fuzz.rs`, which allows
// them and says why). Arithmetic on times is bounded by `Config::check` instead.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]
#![deny(unsafe_code)]

mod admission;
mod backoff;
mod budget;
mod builder;
mod command;
mod commits;
mod config;
mod connection;
mod data;
mod decimal;
mod directory;
mod escape;
mod fail;
mod framer;
mod handle;
mod handoff;
mod mailboxes;
pub mod mbox;
mod names;
mod os;
mod pool;
mod protocol;
mod reply;
mod scan;
mod server;
mod session;
mod socket;
mod writer;

pub use config::{Auth, BareNewline, Config, ConfigError};
pub use fail::FailRule;
pub use handle::{Server, WaitError};
pub use server::StartError;

#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub mod fuzz;
