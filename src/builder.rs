//! Builder methods on [`Config`]: one consuming method per setting, so a test or a program
//! configures a server in one expression.
//!
//! It exists so code that starts a server does not have to know which fields hold lists, which
//! are optional and which are checked. The style, for every setting added later too: a method
//! named after the field (or, for a list, after one element) that takes `mut self`, sets it and
//! returns `Self`; a name that is checked (`domain`, `user`, `alias`) returns
//! `Result<Self, ConfigError>` instead, so a bad one is an error the caller sees at once (with
//! `?`), never a panic. What can only be checked against the other settings (a hostname, zero
//! workers or times, `max_inflight_bytes`, `auth_required` without AUTH) is checked by
//! `Server::start`, which refuses it with `StartError::Config`. Each method's doc says which command-line flag it is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{BareNewline, Config, ConfigError};

impl Config {
    /// The defaults, as [`Config::default`]: what `mboxd` with no flags runs with.
    pub fn new() -> Config {
        Config::default()
    }

    /// The defaults, except: listening on `127.0.0.1:0` only (a free port the system picks),
    /// mail in a fresh temporary directory (see [`Config::temp_mail_dir`]) that the server
    /// removes when it stops, unless [`Config::keep_mail_dir`] is called, and a shutdown grace
    /// of 1 s instead of 30 s: a test that fails (or drops its server) while a client of its own
    /// is inside a message does not wait half a minute for that client.
    ///
    /// ```
    /// let server = mboxd::Server::start(mboxd::Config::for_tests().max_recipients(5))?;
    /// assert!(server.local_addr().ip().is_loopback());
    /// # Ok::<(), mboxd::StartError>(())
    /// ```
    pub fn for_tests() -> Config {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            temp_mail_dir: true,
            shutdown_grace: Duration::from_secs(1),
            ..Config::default()
        }
    }

    /// Listens on `addr` only, replacing the addresses set so far (`--listen`; port 0 picks a
    /// free port). [`Config::also_listen`] adds more.
    ///
    /// ```
    /// let config = mboxd::Config::new().listen(([127, 0, 0, 1], 0));
    /// assert_eq!(config.listen, ["127.0.0.1:0".parse().unwrap()]);
    /// ```
    pub fn listen(mut self, addr: impl Into<SocketAddr>) -> Config {
        self.listen = vec![addr.into()];
        self
    }

    /// Listens on `addr` too (a repeated `--listen`).
    pub fn also_listen(mut self, addr: impl Into<SocketAddr>) -> Config {
        self.listen.push(addr.into());
        self
    }

    /// This server's name in the greeting and the `Received:` headers (`--hostname`). It is
    /// checked when the server starts: empty, over 255 octets, not ASCII (give an IDN as its
    /// A-label), or holding white space, a control character or one of `( ) < > \ " ; @ ,` is
    /// a [`StartError::Config`](crate::StartError::Config).
    pub fn hostname(mut self, name: impl Into<String>) -> Config {
        self.hostname = name.into();
        self
    }

    /// Delivers into `dir` (`--mail-dir`), created if missing and never removed by the server.
    /// This replaces a temporary directory asked for by [`Config::for_tests`].
    pub fn mail_dir(mut self, dir: impl Into<PathBuf>) -> Config {
        self.mail_dir = dir.into();
        self.temp_mail_dir = false;
        self
    }

    /// Keeps the temporary mail directory of [`Config::for_tests`] when the server stops, to
    /// look at after a failing test. It has no effect on a directory set with
    /// [`Config::mail_dir`], which is always kept.
    pub fn keep_mail_dir(mut self) -> Config {
        self.keep_mail_dir = true;
        self
    }

    /// Adds a domain delivered here (`--domain`), checked as [`Config::add_domain`] does.
    ///
    /// ```
    /// let config = mboxd::Config::new().domain("app.test")?;
    /// assert_eq!(config.local_domains(), ["app.test"]);
    /// assert!(mboxd::Config::new().domain("not a domain").is_err());
    /// # Ok::<(), mboxd::ConfigError>(())
    /// ```
    pub fn domain(mut self, domain: &str) -> Result<Config, ConfigError> {
        self.add_domain(domain)?;
        Ok(self)
    }

    /// Adds a known mailbox (`--user`), checked and normalised as [`Config::add_user`] does;
    /// the first one turns catch-all off.
    ///
    /// ```
    /// let config = mboxd::Config::new().user("Jones")?.user("smith")?;
    /// assert_eq!(config.users.unwrap().len(), 2);
    /// assert!(mboxd::Config::new().user("../etc").is_err());
    /// # Ok::<(), mboxd::ConfigError>(())
    /// ```
    pub fn user(mut self, name: &str) -> Result<Config, ConfigError> {
        self.add_user(name)?;
        Ok(self)
    }

    /// Adds an alias (a line of `--aliases`), checked as [`Config::add_alias`] does.
    ///
    /// ```
    /// let config = mboxd::Config::new().user("jones")?.alias("staff", ["jones", "a@b.test"])?;
    /// assert_eq!(config.aliases.len(), 1);
    /// # Ok::<(), mboxd::ConfigError>(())
    /// ```
    pub fn alias(
        mut self,
        name: &str,
        targets: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Config, ConfigError> {
        self.add_alias(name, targets)?;
        Ok(self)
    }

    /// Worker threads, one per live session (`--workers`); at most 10 000, or `Server::start`
    /// refuses the configuration.
    pub fn workers(mut self, n: usize) -> Config {
        self.workers = n;
        self
    }

    /// Largest message accepted, in octets, advertised as SIZE (`--max-message-size`).
    pub fn max_message_size(mut self, octets: u64) -> Config {
        self.max_message_size = octets;
        self
    }

    /// Most recipients in one transaction (`--max-recipients`); more get `452`.
    pub fn max_recipients(mut self, n: usize) -> Config {
        self.max_recipients = n;
        self
    }

    /// Time for each command line to arrive whole (`--timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Config {
        self.timeout = timeout;
        self
    }

    /// Time for each read inside a message (`--data-timeout`).
    pub fn data_timeout(mut self, timeout: Duration) -> Config {
        self.data_timeout = timeout;
        self
    }

    /// How long a connection waits for a free worker before `421` (`--queue-wait`).
    pub fn queue_wait(mut self, wait: Duration) -> Config {
        self.queue_wait = wait;
        self
    }

    /// How long a delivery waits for a mailbox locked by another program before `450`
    /// (`--lock-timeout`).
    pub fn lock_timeout(mut self, timeout: Duration) -> Config {
        self.lock_timeout = timeout;
        self
    }

    /// Rejected commands before a session is closed with `421` (`--max-errors`); a RCPT's
    /// `452` is not counted.
    pub fn max_errors(mut self, n: usize) -> Config {
        self.max_errors = n;
        self
    }

    /// How long a message in progress may go on after shutdown begins (`--shutdown-grace`).
    pub fn shutdown_grace(mut self, grace: Duration) -> Config {
        self.shutdown_grace = grace;
        self
    }

    /// Most sessions one client address may hold at once (`--max-per-peer`); 127.0.0.1 and
    /// ::1 are never limited.
    pub fn max_per_peer(mut self, n: usize) -> Config {
        self.max_per_peer = Some(n);
        self
    }

    /// Slowest rate of a session's messages, in octets per second (`--min-data-rate`): see
    /// [`Config::min_data_rate`].
    pub fn min_data_rate(mut self, octets_per_second: u64) -> Config {
        self.min_data_rate = octets_per_second;
        self
    }

    /// The time a session's first message starts with (no flag: 30 s); see
    /// [`Config::min_data_rate`].
    pub fn min_data_rate_grace(mut self, grace: Duration) -> Config {
        self.min_data_rate_grace = grace;
        self
    }

    /// Catch-all only: mailbox files allowed before a new name gets `452` (`--max-mailboxes`).
    pub fn max_mailboxes(mut self, n: usize) -> Config {
        self.max_mailboxes = n;
        self
    }

    /// A file written atomically with the bound addresses once listening (`--ready-file`), and
    /// removed at stop if it still holds them.
    pub fn ready_file(mut self, path: impl Into<PathBuf>) -> Config {
        self.ready_file = Some(path.into());
        self
    }

    /// Bytes all messages in progress may hold in memory together (`--max-inflight-bytes`); at
    /// least 65 536, or [`Server::start`](crate::Server::start) refuses the configuration.
    pub fn max_inflight_bytes(mut self, bytes: u64) -> Config {
        self.max_inflight_bytes = bytes;
        self
    }

    /// What a bare CR or LF inside a message does (`--bare-newline`).
    pub fn bare_newline(mut self, policy: BareNewline) -> Config {
        self.bare_newline = policy;
        self
    }
}
