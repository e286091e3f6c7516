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
//!                                  → unlock → ack all
//!                                                                  │
//!                                             worker gets the ack ─▶ "250" (or 450/451/452)
//! ```
//!
//! Use it from a test:
//!
//! ```no_run
//! let dir = std::env::temp_dir().join("mboxd-doc");
//! let mut config = mboxd::Config {
//!     listen: vec!["127.0.0.1:0".parse().unwrap()],
//!     mail_dir: dir.clone(),
//!     ..mboxd::Config::default()
//! };
//! config.add_domain("app.test")?;
//! config.add_user("jones")?;
//! let server = mboxd::Server::start(config)?;
//! let addr = server.local_addrs()[0];
//! // ... send mail to `addr`, then read `dir/<user>` ...
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! That is the whole API: [`Server`], [`Config`] (with [`ConfigError`] from its `add_*` methods,
//! and [`BareNewline`] and [`FailRule`] for its settings) and [`StartError`]. The `fuzz` module
//! exists only for fuzzing (`cargo fuzz`, or the `fuzzing` feature) and is not a stable API. The
//! command line, its files and the signal handling belong to the `mboxd` binary.
#![deny(missing_docs)]
// No panic by construction: no indexing or slicing that can go out of bounds, no unwrap or
// expect, anywhere in the library outside its tests.
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
mod command;
mod config;
mod connection;
mod data;
mod directory;
mod escape;
mod fail;
mod framer;
mod mailboxes;
mod mbox;
mod names;
mod os;
mod pool;
mod protocol;
mod reply;
mod server;
mod session;
mod writer;

use std::net::SocketAddr;

pub use config::{BareNewline, Config, ConfigError};
pub use fail::FailRule;
pub use server::StartError;

/// A running server. Dropping it, or calling [`Server::shutdown`], stops it in order.
pub struct Server {
    running: server::Running,
}

impl Server {
    /// Creates the mail directory, binds every address of `config` and starts serving.
    pub fn start(config: Config) -> Result<Server, StartError> {
        Ok(Server {
            running: server::start(&config)?,
        })
    }

    /// The addresses actually bound (port 0 replaced by the port the system chose).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.running.addrs()
    }

    /// Sessions in progress now.
    pub fn live_connections(&self) -> usize {
        self.running.live_connections()
    }

    /// Stops accepting, answers idle sessions `421`, lets sessions inside a message finish it
    /// within [`Config::shutdown_grace`] (then answers them `421` too), waits for every queued
    /// message to be written and synced, and returns when every thread is joined.
    pub fn shutdown(mut self) {
        self.running.shutdown();
    }
}

#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub mod fuzz;
