//! Configuration: every setting of a server, every limit with its default, and the checks on
//! the names (domains, users, aliases) it is given.
//!
//! It exists so that a server started from code (an integration test, say) and one started from
//! the command line are configured by the same type with the same defaults, so every limit the
//! server enforces has a name and a cited reason here, and so a name is checked in one place:
//! the binary's flag and file parser (`src/cli.rs`) adds names through [`Config::add_domain`],
//! [`Config::add_user`] and [`Config::add_alias`] like any other caller.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::command::{self, valid_domain};
use crate::escape::has_unsafe;
use crate::fail::FailRule;
use crate::names::mailbox_name;

/// Everything a server needs to start. [`Config::default`] (or [`Config::new`]) gives the
/// defaults of the command line, [`Config::for_tests`] those of a test. Each setting has a
/// builder method named after it (after one element, for a list: [`Config::alias`]), most in
/// `builder.rs`; `auth` has [`Config::auth_accept_any`] and [`Config::auth_user`], here;
/// [`Config::fail`] and [`Config::fail_seed`] are in `fail/mod.rs`; and
/// `temp_mail_dir` is set by [`Config::for_tests`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on; port 0 picks a free port. Default `127.0.0.1:2525`.
    pub listen: Vec<SocketAddr>,
    /// This server's name, in the greeting and the `Received:` headers: at most 255 octets and
    /// no white space ([`crate::Server::start`] refuses others). Default: the system's.
    pub hostname: String,
    /// Where the mbox files are. Default `./mail`, created if missing.
    pub mail_dir: PathBuf,
    /// Instead of `mail_dir`, deliver into a fresh directory created at start under
    /// [`std::env::temp_dir`] (named `mboxd-<pid>-<nanoseconds>-<counter>`, mode 0700), and
    /// remove it with everything in it when the server stops, unless `keep_mail_dir` is set.
    /// [`crate::Server::mail_dir`] says where it is. Set by [`Config::for_tests`]; default false.
    pub temp_mail_dir: bool,
    /// Keep the directory of `temp_mail_dir` when the server stops. Default false.
    pub keep_mail_dir: bool,
    /// Domains delivered here. Empty means `localhost` and the hostname.
    pub domains: Vec<String>,
    /// Known mailboxes; `None` accepts every safe local part at a local domain (catch-all).
    pub users: Option<BTreeSet<String>>,
    /// Aliases in aliases(5) form: a name and its targets (local names, aliases or addresses).
    pub aliases: Vec<(String, Vec<String>)>,
    /// Worker threads, one per live session. Default 64, at most 10 000.
    pub workers: usize,
    /// Largest message accepted in octets, advertised as SIZE (RFC 1870). Default 10 MiB.
    pub max_message_size: u64,
    /// Most recipients in one transaction. Default 100, the minimum of RFC 5321 §4.5.3.1.8.
    pub max_recipients: usize,
    /// Time allowed for each command line to arrive whole, however slowly it trickles in.
    /// Default 300 s (RFC 5321 §4.5.3.2.7).
    pub timeout: Duration,
    /// Time allowed for each read inside a message (DATA or BDAT). Default 600 s (RFC 5321
    /// §4.5.3.2.5 and §4.5.3.2.6 ask for at least 3 and 10 minutes).
    pub data_timeout: Duration,
    /// How long a new connection waits for a free worker before it gets 421. Default 1 s.
    pub queue_wait: Duration,
    /// How long a delivery waits for a mailbox locked by another program before 450. Default 30 s.
    pub lock_timeout: Duration,
    /// Most sessions one client address may hold at once, counted from accept to close; beyond
    /// it a connection gets `421` at once, before any EHLO and so without an enhanced code
    /// (Postfix's `smtpd_client_connection_count_limit`). `None` means half of `workers`. The
    /// local host's own addresses, 127.0.0.1 and ::1, where test suites connect from, are never
    /// limited.
    pub max_per_peer: Option<usize>,
    /// Slowest rate a session's messages may arrive at, in octets per second, as a deadline: a
    /// session's first message has `min_data_rate_grace` of time; each of its octets adds
    /// `1/min_data_rate` s, but never past `data_timeout` after it arrived; what a message
    /// leaves is all the next one of the session starts with (time between messages, and
    /// `fail` delays, do not count). A message still waited for at the deadline gets `421`.
    /// Default 512.
    pub min_data_rate: u64,
    /// The time a session's first message starts with (see `min_data_rate`). Default 30 s.
    pub min_data_rate_grace: Duration,
    /// After shutdown begins, how long a session inside a message (DATA, BDAT, or a refused chunk
    /// being read) may go on in total, however slowly it sends, before it gets 421. Default 30 s.
    pub shutdown_grace: Duration,
    /// Rejected commands in one session before it is closed with 421 (Postfix's
    /// `smtpd_hard_error_limit`), a RCPT's 452 not counted (RFC 5321 §4.5.3.1.10). Default 20.
    pub max_errors: usize,
    /// Catch-all mode only: the most mailbox files the mail directory may hold before a RCPT
    /// naming a new one gets `452 4.3.1`. Without it, a client inventing names creates a file
    /// for each (issue 8 saw 8 386 from one attack); 10 000 is far more than a small site's
    /// people and roles, and a few megabytes of names in memory. Existing names, postmaster and
    /// alias targets are always accepted. Default 10 000.
    pub max_mailboxes: usize,
    /// Where to announce readiness: once every listener is bound and accepting, this file is
    /// written atomically (a temporary file in the same directory, then rename(2)) with one
    /// bound address per line, so a test harness in any language can wait for it. Default none.
    pub ready_file: Option<PathBuf>,
    /// Bytes that all messages being received or waiting for the writer may hold in memory
    /// together (their stored form, counted in 64 KiB steps). A message that would pass it is
    /// read to its end and refused with `452 4.3.1` (RFC 5321's "insufficient system storage"; RFC 3463's 4.3.1, "mail system full"), so
    /// memory stays bounded however many clients send at once. Growing past its first 64 KiB, a
    /// message must leave an eighth of the budget free, so small messages keep flowing while
    /// large ones fill the rest. Default 128 MiB.
    pub max_inflight_bytes: u64,
    /// What a bare CR or bare LF inside a message does (RFC 5321 §2.3.8: only CRLF ends a line;
    /// bare ones are how header injection and SMTP smuggling begin). Default
    /// [`BareNewline::Normalize`], as Postfix 3.9's `smtpd_forbid_bare_newline`.
    pub bare_newline: BareNewline,
    /// SMTP AUTH (RFC 4954) with PLAIN and LOGIN, for test suites whose applications are
    /// configured with credentials. There is no TLS here, so passwords cross the connection in
    /// the clear: for tests only. Default [`Auth::Off`]: AUTH is neither offered nor accepted.
    pub auth: Auth,
    /// VRFY, EXPN and HELP before a successful AUTH, and MAIL after HELO or EHLO but before
    /// one, get `530 5.7.0` (RFC 4954 §6: every command but AUTH, EHLO, HELO, NOOP, RSET and
    /// QUIT); MAIL before any HELO or EHLO gets 503 as always. Only useful with `auth`
    /// on: with [`Auth::Off`] no client could ever send ([`crate::Server::start`] refuses that).
    /// Default false.
    pub auth_required: bool,
    /// Rules that make the server fail on purpose (`--fail`, see [`FailRule`]), consulted in
    /// this order at each stage of every session. Default none: a test suite turns them on to
    /// exercise its application's error handling.
    pub fail: Vec<FailRule>,
    /// Seed of the generator that rules with `p=` draw from (`--fail-seed`), so that a run
    /// repeats. Default 0.
    pub fail_seed: u64,
}

/// Which credentials AUTH accepts (see [`Config::auth`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// AUTH is not offered; the command gets `502 5.5.1`.
    #[default]
    Off,
    /// Any password in UTF-8 without NUL gets `235 2.7.0`, with any non-empty user name free of
    /// unsafe characters (a PLAIN authorization identity, if given, must equal the user name;
    /// otherwise `535 5.7.8`).
    AcceptAny,
    /// Only these user names (compared exactly, case-sensitive) with these passwords; other
    /// credentials get `535 5.7.8`.
    Users(HashMap<String, String>),
}

impl Auth {
    /// True unless [`Auth::Off`].
    pub fn enabled(&self) -> bool {
        !matches!(self, Auth::Off)
    }

    /// True when `user` may log in with `password`. The password is compared in time that does
    /// not depend on where it first differs.
    pub(crate) fn check(&self, user: &str, password: &str) -> bool {
        match self {
            Auth::Off => false,
            Auth::AcceptAny => true,
            Auth::Users(users) => users.get(user).is_some_and(|expected| {
                expected.len() == password.len()
                    && expected
                        .bytes()
                        .zip(password.bytes())
                        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                        == 0
            }),
        }
    }
}

/// Shows the user names, never the passwords, so a logged or printed `Config` leaks none.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Off => f.write_str("Off"),
            Auth::AcceptAny => f.write_str("AcceptAny"),
            Auth::Users(users) => {
                let mut names: Vec<&String> = users.keys().collect();
                names.sort();
                f.debug_tuple("Users").field(&names).finish()
            }
        }
    }
}

/// What to do with a CR or LF inside a message that is not part of a CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareNewline {
    /// Store the message, with each one a space inside the header section (so a reader sees
    /// exactly the header lines sent on the wire) and a line end in the body. No CR is stored.
    #[default]
    Normalize,
    /// Read the message to its end and refuse it with `550 5.5.2`; nothing is stored.
    Reject,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            hostname: system_hostname(),
            mail_dir: PathBuf::from("./mail"),
            temp_mail_dir: false,
            keep_mail_dir: false,
            domains: Vec::new(),
            users: None,
            aliases: Vec::new(),
            workers: 64,
            max_message_size: 10 * 1024 * 1024,
            max_recipients: 100,
            timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            queue_wait: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            max_per_peer: None,
            min_data_rate: 512,
            min_data_rate_grace: Duration::from_secs(30),
            max_errors: 20,
            max_mailboxes: 10_000,
            ready_file: None,
            max_inflight_bytes: 128 * 1024 * 1024,
            bare_newline: BareNewline::Normalize,
            auth: Auth::Off,
            auth_required: false,
            fail: Vec::new(),
            fail_seed: 0,
        }
    }
}

/// A configuration that cannot be used: a bad flag, value or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Every time setting must be shorter than this (about 31 years), so that adding it to any
/// [`std::time::Instant`] cannot overflow; the command line refuses longer ones too.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(1_000_000_000);

/// The most worker threads a configuration may ask for. Every worker is started with the server,
/// and Linux allows a process 65 530 memory maps by default (`vm.max_map_count`), of which each
/// thread takes a few (its stack, guard page and signal stack): past about 16 000 threads a
/// thread's set-up fails inside the standard library, which aborts the whole process instead of
/// returning an error. 10 000 leaves room below that.
pub(crate) const MAX_WORKERS: usize = 10_000;

impl Config {
    /// Checks what no setting can be checked for alone: the one place, before anything is
    /// created, where [`crate::Server::start`] refuses an unusable configuration (the command line
    /// goes through it too).
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() || self.workers == 0 || self.max_recipients == 0 {
            return Err(ConfigError(
                "at least one address, one worker and one recipient are needed".into(),
            ));
        }
        // Zero is no usable value for these, and no "no limit" either: `SIZE 0` would even
        // advertise that (RFC 1870 §4) while every message was refused. The command line
        // refuses 0 for each too.
        let counts = [
            (
                "max_message_size (--max-message-size)",
                self.max_message_size,
            ),
            ("max_errors (--max-errors)", self.max_errors as u64),
            ("max_mailboxes (--max-mailboxes)", self.max_mailboxes as u64),
            (
                "max_per_peer (--max-per-peer)",
                self.max_per_peer.map_or(1, |n| n as u64),
            ),
            ("min_data_rate (--min-data-rate)", self.min_data_rate),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ConfigError(format!("{name} must be more than 0")));
        }
        if self.workers > MAX_WORKERS {
            return Err(ConfigError(format!(
                "{} workers (--workers) is more than the {MAX_WORKERS} a server may start",
                self.workers
            )));
        }
        if !usable_hostname(&self.hostname) {
            return Err(ConfigError(format!(
                "hostname {:?} (--hostname) is not usable",
                self.hostname
            )));
        }
        if self.auth_required && !self.auth.enabled() {
            return Err(ConfigError(
                "auth_required (--auth-required) needs AUTH on (--auth-accept-any or \
                 --auth-file): without it no client could ever send"
                    .into(),
            ));
        }
        // The budget is reserved in steps (src/budget.rs): with less than one, every message
        // would be refused with 452 however small it is.
        if self.max_inflight_bytes < crate::budget::STEP {
            return Err(ConfigError(format!(
                "max_inflight_bytes (--max-inflight-bytes) must be at least {}: with less, no \
                 message could ever be taken",
                crate::budget::STEP
            )));
        }
        // Socket timeouts cannot be zero; the others may.
        let times = [
            ("timeout (--timeout)", self.timeout, true),
            ("data_timeout (--data-timeout)", self.data_timeout, true),
            ("min_data_rate_grace", self.min_data_rate_grace, true),
            ("queue_wait (--queue-wait)", self.queue_wait, false),
            ("lock_timeout (--lock-timeout)", self.lock_timeout, false),
            (
                "shutdown_grace (--shutdown-grace)",
                self.shutdown_grace,
                false,
            ),
        ];
        for (name, time, positive) in times {
            if time >= MAX_DURATION || (positive && time.is_zero()) {
                return Err(ConfigError(format!(
                    "{name} must be {}less than 10^9 s, not {time:?}",
                    if positive { "more than 0 and " } else { "" }
                )));
            }
        }
        Ok(())
    }

    /// The per-peer session limit in force: `max_per_peer`, or half of `workers` (at least 1).
    pub fn peer_limit(&self) -> usize {
        self.max_per_peer.unwrap_or((self.workers / 2).max(1))
    }

    /// The domains delivered here: those given, or `localhost` and the hostname.
    pub fn local_domains(&self) -> Vec<String> {
        if self.domains.is_empty() {
            vec!["localhost".to_string(), self.hostname.clone()]
        } else {
            self.domains.clone()
        }
    }

    /// Adds a domain delivered here, after checking it is a domain name or an address literal
    /// in brackets (RFC 5321 §4.1.3) free of unsafe characters (controls, line separators, bidi
    /// and invisible characters, as a client's domain must be). Giving any domain replaces the
    /// default of `localhost` and the hostname.
    pub fn add_domain(&mut self, domain: &str) -> Result<(), ConfigError> {
        if !valid_domain(domain) || has_unsafe(domain) {
            return Err(ConfigError(format!("{domain:?} is not a domain name")));
        }
        self.domains.push(domain.to_string());
        Ok(())
    }

    /// Adds a known mailbox under its mailbox name (lower-cased and NFKC-normalised, as a
    /// recipient's local part is, so `José` and `jose\u{301}` are one user), after checking it is
    /// safe as a file name in the mail directory (no separators, no leading dot or dash, no
    /// control, bidi or invisible characters, at most 64 octets, no `.lock` ending). The first
    /// user turns catch-all off.
    pub fn add_user(&mut self, name: &str) -> Result<(), ConfigError> {
        let mailbox = reachable("user", name)?;
        self.users.get_or_insert_with(BTreeSet::new).insert(mailbox);
        Ok(())
    }

    /// Adds an alias (aliases(5)): mail for `name` goes to each target, a local name, another
    /// alias, or a full address. The name must be safe as a mailbox name and is normalised like
    /// one (see [`Config::add_user`]);
    /// there must be at least one target, none empty, none a command (`|`), a file (`/`)
    /// or an include (`:include:`), which this server does not deliver to, and none an address
    /// RCPT would refuse (`jones@mx.test..`, `a@b@x.test`, `jones smith@x.test`), and no bare
    /// name that is not a safe mailbox name (`../etc`).
    pub fn add_alias(
        &mut self,
        name: &str,
        targets: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<(), ConfigError> {
        let alias = reachable("alias", name)?;
        let targets: Vec<String> = targets.into_iter().map(Into::into).collect();
        if targets.is_empty() {
            return Err(ConfigError(format!("alias {alias:?} has no targets")));
        }
        if let Some(t) = targets
            .iter()
            .find(|t| t.is_empty() || t.starts_with(['|', '/', ':']))
        {
            return Err(ConfigError(format!(
                "alias {alias:?}: target {t:?}: only names and addresses are supported"
            )));
        }
        // An address as RCPT would take it: a target RCPT would refuse (501, or 553 for an
        // unsafe character) can neither be delivered here nor be offered to a client (551's
        // `please try`).
        if let Some(t) = targets
            .iter()
            .find(|t| t.contains('@') && (command::address(t).is_err() || has_unsafe(t)))
        {
            return Err(ConfigError(format!(
                "alias {alias:?}: target {t:?}: not an address RCPT would take"
            )));
        }
        // A bare name is a mailbox or another alias: one no mailbox could have would expand to
        // nothing (the name a quoted one quotes, as in RCPT).
        if let Some(t) = targets
            .iter()
            .find(|t| !t.contains('@') && mailbox_name(&command::unquoted(t)).is_none())
        {
            return Err(ConfigError(format!(
                "alias {alias:?}: target {t:?}: not a safe mailbox name"
            )));
        }
        self.aliases.push((alias, targets));
        Ok(())
    }

    /// Offers AUTH and accepts any UTF-8 password without NUL with `235 2.7.0`, as
    /// [`Auth::AcceptAny`] says (for tests only: no TLS).
    pub fn auth_accept_any(mut self) -> Self {
        self.auth = Auth::AcceptAny;
        self
    }

    /// Offers AUTH and accepts `user` with `password` (and the other users added so); other
    /// credentials get `535 5.7.8`. Replaces [`Auth::AcceptAny`] and [`Auth::Off`]. The name is
    /// compared exactly; an empty one, or one with an unsafe character (a control, a line
    /// separator, a bidi or invisible character: README, "Unsafe characters"), can never log in
    /// (the session refuses such a name before checking it).
    pub fn auth_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        if !matches!(self.auth, Auth::Users(_)) {
            self.auth = Auth::Users(HashMap::new());
        }
        if let Auth::Users(users) = &mut self.auth {
            users.insert(user.into(), password.into());
        }
        self
    }

    /// With `true`, VRFY, EXPN, HELP and (after HELO or EHLO) MAIL before a successful AUTH get
    /// `530 5.7.0` (see [`Config::auth_required`]).
    pub fn auth_required(mut self, required: bool) -> Self {
        self.auth_required = required;
        self
    }
}

/// The system's host name if it is usable as the server's ([`usable_hostname`]), or `localhost`.
/// The mailbox name of a user or alias `name`, if it is safe as one and RCPT can reach it: a
/// local part that keeps its quotes (`@`, `<`, `>`) names no mailbox, and one with `%` or `!`
/// is refused as relaying (`jones@localhost` given as a user would have started and matched
/// nothing).
fn reachable(kind: &str, name: &str) -> Result<String, ConfigError> {
    match mailbox_name(name) {
        Some(mailbox)
            if !mailbox.contains(command::KEEPS_QUOTES)
                && !mailbox.contains(crate::directory::RELAY_HACKS) =>
        {
            Ok(mailbox)
        }
        Some(_) => Err(ConfigError(format!(
            "{kind} {name:?}: no recipient can name it (it holds @, <, >, % or !)"
        ))),
        None => Err(ConfigError(format!(
            "{kind} {name:?} is not a safe mailbox name"
        ))),
    }
}

fn system_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| usable_hostname(s))
        .unwrap_or_else(|| "localhost".to_string())
}

/// A name the server can call itself by. RFC 1035 §2.3.4: at most 255 octets, which also keeps
/// the greeting and the HELO/EHLO replies within RFC 5321 §4.5.3.1.5's 512. ASCII: the greeting
/// goes out before any SMTPUTF8 (an IDN is given as its A-label). No white space, control
/// character or header syntax: it is written into every `Received:` (`by <hostname>`).
fn usable_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.is_ascii()
        && !name.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
        && !name.contains(crate::mbox::HEADER_SYNTAX)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
