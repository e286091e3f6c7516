//! The command line: flags, the users and aliases files, and `--help`, turned into a
//! [`mboxd::Config`].
//!
//! It exists so the library's API stays what a program embedding a server needs (`Config`,
//! `Server`), while the command line's syntax lives with the binary. Names are not checked
//! here: every domain, user and alias goes through [`Config::add_domain`], [`Config::add_user`]
//! and [`Config::add_alias`], so the library checks them in one place whoever configures it.

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mboxd::{Auth, BareNewline, Config, ConfigError, FailRule};

use auth::{AUTH_EXCLUSIVE, load_auth};

mod auth;

/// What the command line asked for.
#[derive(Debug)]
pub(crate) enum Invocation {
    /// Run a server with this configuration.
    Run(Box<Config>),
    /// Print the usage and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// The usage text for `--help`.
pub(crate) const USAGE: &str = "\
usage: mboxd [options]
  --listen ADDR            listen on ADDR (repeatable; default 127.0.0.1:2525; port 0 = any free port)
  --hostname NAME          name in the greeting and Received: headers (default: system hostname)
  --mail-dir DIR           where mbox files are written (default ./mail)
  --domain NAME            a domain delivered here (repeatable; default localhost and the hostname)
  --user NAME              a known mailbox (repeatable; with no --user and no --users,
                           every safe name is accepted)
  --users FILE             known mailboxes, one per line, # comments
  --aliases FILE           aliases(5) file: `name: target, target`
  --workers N              worker threads = concurrent sessions (default 64, at most 10000)
  --max-message-size BYTES largest message (default 10485760)
  --max-recipients N       recipients per message (default 100)
  --max-inflight-bytes BYTES
                           memory all messages in progress may hold together; a message that
                           does not fit gets 452 4.3.1 (default 134217728, 128 MiB; at least 65536)
  --bare-newline normalize|reject
                           a CR or LF in a message that is not part of CRLF: normalize stores it
                           as a space in the header section and a line end in the body; reject
                           refuses the message with 550 5.5.2 (default normalize)
  --timeout SECS           time for each command line to arrive whole (default 300)
  --data-timeout SECS      timeout for each read inside a message (default 600)
  --queue-wait SECS        how long a connection waits for a free worker before 421 (default 1)
  --lock-timeout SECS      how long to wait for a locked mailbox before 450 (default 30)
  --max-errors N           rejected commands before the session is closed (default 20)
  --max-per-peer N         sessions one client address may hold (default: half of --workers;
                           127.0.0.1 and ::1 are never limited)
  --min-data-rate BYTES    slowest rate of messages, in octets/s: 30 s of credit, 1/BYTES s more per
                           octet, never over --data-timeout ahead, carried across a session (default 512)
  --max-mailboxes N        catch-all only: mailbox files allowed before new names get 452 (default 10000)
  --ready-file PATH        once listening, write PATH atomically with one bound address per line;
                           removed at stop
  --shutdown-grace SECS    after SIGTERM, how long a message in progress may take in total (default 30)
  --auth-accept-any        offer AUTH PLAIN LOGIN and accept any UTF-8 password without NUL
                           (tests only: no TLS)
  --auth-file FILE         offer AUTH PLAIN LOGIN for the `user:password` lines of FILE (repeatable;
                           # comment lines); wrong credentials get 535 (tests only: no TLS)
  --auth-required          MAIL, VRFY, EXPN, HELP before a successful AUTH get 530 5.7.0
  --fail RULE              fail on purpose (repeatable): STAGE[:PATTERN]=ACTION[,count=N][,p=P],
                           STAGE connect|helo|mail|rcpt|data|data-end, PATTERN a glob with *,
                           ACTION a 4xx/5xx code with optional text, drop, or delay:500ms|5s
  --fail-seed N            seed for the p= draws of --fail rules, so runs repeat (default 0)
  -h, --help               this text
  -V, --version            the version
Logging: RUST_LOG=debug|info|warn (default info), to stderr.
";

/// Parses command-line arguments (without the program name).
pub(crate) fn parse<I, S>(args: I) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = Config::default();
    let mut listen = Vec::new();
    let mut args = args.into_iter().map(Into::into);
    while let Some(flag) = args.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        let bare = |invocation| match inline {
            Some(_) => Err(ConfigError(format!("{flag} takes no value"))),
            None => Ok(invocation),
        };
        if matches!(flag.as_str(), "-h" | "--help") {
            return bare(Invocation::Help);
        }
        if matches!(flag.as_str(), "-V" | "--version") {
            return bare(Invocation::Version);
        }
        let mut taken = false;
        let mut value = || {
            taken = true;
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ConfigError(format!("{flag} needs a value")))
        };
        apply(&flag, &mut value, &mut config, &mut listen)?;
        // `--auth-required=false` must not turn it on: a value given to a flag that takes none
        // is refused, not ignored.
        if inline.is_some() && !taken {
            return Err(ConfigError(format!("{flag} takes no value")));
        }
    }
    if !listen.is_empty() {
        config.listen = listen;
    }
    Ok(Invocation::Run(Box::new(config)))
}

/// Applies one flag, taking its value from `value` if it has one.
///
/// Out of `parse`, not generic and not inlined, with the configuration borrowed: every early
/// return (each `?`) then leaves `parse` with one copy of the configuration's drop code instead
/// of one per return: about 6 KiB less binary when it was measured.
#[inline(never)]
fn apply(
    flag: &str,
    value: &mut dyn FnMut() -> Result<String, ConfigError>,
    config: &mut Config,
    listen: &mut Vec<SocketAddr>,
) -> Result<(), ConfigError> {
    match flag {
        "--listen" => listen.extend(parse_listen(&value()?)?),
        "--hostname" => config.hostname = value()?,
        "--mail-dir" => config.mail_dir = PathBuf::from(value()?),
        "--domain" => config
            .add_domain(&value()?)
            .map_err(|e| ConfigError(format!("--domain {e}")))?,
        "--user" => config.add_user(&value()?)?,
        "--users" => load_users(Path::new(&value()?), config)?,
        "--aliases" => {
            // A later --aliases replaces an earlier one.
            config.aliases.clear();
            load_aliases(Path::new(&value()?), config)?;
        }
        "--workers" => config.workers = positive(flag, &value()?)?,
        "--max-message-size" => config.max_message_size = positive(flag, &value()?)? as u64,
        "--max-recipients" => config.max_recipients = positive(flag, &value()?)?,
        "--max-inflight-bytes" => config.max_inflight_bytes = positive(flag, &value()?)? as u64,
        "--bare-newline" => config.bare_newline = bare_newline(&value()?)?,
        "--timeout" => config.timeout = seconds(flag, &value()?)?,
        "--data-timeout" => config.data_timeout = seconds(flag, &value()?)?,
        "--queue-wait" => config.queue_wait = seconds(flag, &value()?)?,
        "--lock-timeout" => config.lock_timeout = seconds(flag, &value()?)?,
        "--max-errors" => config.max_errors = positive(flag, &value()?)?,
        "--max-mailboxes" => config.max_mailboxes = positive(flag, &value()?)?,
        "--ready-file" => config.ready_file = Some(PathBuf::from(value()?)),
        "--shutdown-grace" => config.shutdown_grace = seconds(flag, &value()?)?,
        "--max-per-peer" => config.max_per_peer = Some(positive(flag, &value()?)?),
        "--min-data-rate" => config.min_data_rate = positive(flag, &value()?)? as u64,
        "--auth-accept-any" => {
            if matches!(config.auth, Auth::Users(_)) {
                return Err(ConfigError(AUTH_EXCLUSIVE.to_string()));
            }
            config.auth = Auth::AcceptAny;
        }
        "--auth-file" => {
            if config.auth == Auth::AcceptAny {
                return Err(ConfigError(AUTH_EXCLUSIVE.to_string()));
            }
            load_auth(Path::new(&value()?), config)?;
        }
        "--auth-required" => config.auth_required = true,
        "--fail" => config.fail.push(FailRule::parse(&value()?)?),
        "--fail-seed" => {
            let v = value()?;
            config.fail_seed = crate::decimal::whole(&v).ok_or_else(|| {
                ConfigError(format!("--fail-seed needs a whole number, not {v:?}"))
            })?;
        }
        other => return Err(ConfigError(format!("unknown flag {other:?}; see --help"))),
    }
    Ok(())
}

fn parse_listen(s: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| ConfigError(format!("--listen {s:?}: {e}")))?
        .collect();
    match addrs.first() {
        // A name that resolves to several addresses (localhost: ::1 and 127.0.0.1) means the
        // first, as a client would connect to.
        Some(first) => Ok(vec![*first]),
        None => Err(ConfigError(format!("--listen {s:?}: no address"))),
    }
}

fn positive(flag: &str, v: &str) -> Result<usize, ConfigError> {
    match crate::decimal::whole(v).map(usize::try_from) {
        Some(Ok(n)) if n > 0 => Ok(n),
        _ => Err(ConfigError(format!(
            "{flag} needs a positive whole number, not {v:?}"
        ))),
    }
}

fn bare_newline(v: &str) -> Result<BareNewline, ConfigError> {
    match v {
        "normalize" => Ok(BareNewline::Normalize),
        "reject" => Ok(BareNewline::Reject),
        _ => Err(ConfigError(format!(
            "--bare-newline needs normalize or reject, not {v:?}"
        ))),
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, ConfigError> {
    match crate::decimal::billionths(v) {
        // Under 10^9 s, the bound `Config`'s own check puts on every time setting.
        Some(n) if n > 0 && n < 1_000_000_000 * 1_000_000_000 => Ok(Duration::from_nanos(n)),
        _ => Err(ConfigError(format!(
            "{flag} needs a positive number of seconds, not {v:?}"
        ))),
    }
}

pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// Lines without `#` comments and surrounding blanks, with their numbers, skipping empty ones.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((i + 1, line))
    })
}

/// Adds the users of a users file to `config`: one mailbox name per line, `#` starts a comment.
/// Even an empty file turns catch-all off: then no name but postmaster and the aliases is
/// accepted.
fn load_users(path: &Path, config: &mut Config) -> Result<(), ConfigError> {
    let text = read(path)?;
    config.users.get_or_insert_default();
    for (n, line) in content_lines(&text) {
        config
            .add_user(line)
            .map_err(|e| ConfigError(format!("{}:{n}: {e}", path.display())))?;
    }
    Ok(())
}

/// Adds the aliases of an aliases(5) file to `config`: `name: target, target`, `#` comments,
/// continuation lines that start with white space; a name may be in double quotes, a target in
/// angle brackets.
fn load_aliases(path: &Path, config: &mut Config) -> Result<(), ConfigError> {
    let text = read(path)?;
    // Join continuation lines onto the line they continue.
    let mut joined: Vec<(usize, String)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let content = raw.split('#').next().unwrap_or("");
        if content.trim().is_empty() {
            continue;
        }
        match joined.last_mut() {
            Some((_, prev)) if content.starts_with([' ', '\t']) => {
                prev.push(' ');
                prev.push_str(content.trim());
            }
            _ => joined.push((n + 1, content.trim().to_string())),
        }
    }
    for (n, line) in joined {
        let at = |why: String| ConfigError(format!("{}:{n}: {why}", path.display()));
        let (name, targets) = line
            .split_once(':')
            .ok_or_else(|| at("expected `name: target, ...`".to_string()))?;
        let targets = targets
            .split(',')
            .map(|t| t.trim().trim_start_matches('<').trim_end_matches('>'))
            .filter(|t| !t.is_empty());
        config
            .add_alias(name.trim().trim_matches('"'), targets)
            .map_err(|e| at(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` as the command line, expecting a configuration to run.
    pub(super) fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match parse(args.iter().copied())? {
            Invocation::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        // No flags is exactly the library's defaults (which config.rs's tests check).
        let c = run(&[]).unwrap();
        let d = Config::default();
        assert_eq!(
            (
                &c.listen,
                &c.mail_dir,
                c.workers,
                c.max_message_size,
                c.shutdown_grace
            ),
            (
                &d.listen,
                &d.mail_dir,
                d.workers,
                d.max_message_size,
                d.shutdown_grace
            )
        );
        assert_eq!(
            (c.max_inflight_bytes, c.bare_newline),
            (d.max_inflight_bytes, d.bare_newline)
        );
        assert!(c.users.is_none());
        assert_eq!(c.local_domains()[0], "localhost");
    }

    #[test]
    fn flags() {
        let c = run(&[
            "--listen",
            "127.0.0.1:0",
            "--listen=[::1]:0",
            "--hostname",
            "mx.test",
            "--domain",
            "a.test",
            "--user",
            "Jones",
            "--workers",
            "2",
            "--timeout",
            "0.5",
            "--max-message-size",
            "1000",
            "--max-mailboxes=300",
        ])
        .unwrap();
        assert_eq!(c.max_mailboxes, 300);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.hostname, "mx.test");
        assert_eq!(c.local_domains(), vec!["a.test".to_string()]);
        assert_eq!(
            c.users.clone().unwrap().into_iter().collect::<Vec<_>>(),
            vec!["jones".to_string()]
        );
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert_eq!(c.peer_limit(), 1, "half of 2 workers");
    }

    #[test]
    fn availability_flags() {
        let c = run(&["--max-per-peer", "7", "--min-data-rate", "100"]).unwrap();
        assert_eq!((c.peer_limit(), c.min_data_rate), (7, 100));
        assert_eq!(
            run(&[]).unwrap().peer_limit(),
            32,
            "half of the 64 default workers"
        );
        assert!(run(&["--max-per-peer", "0"]).is_err());
        assert!(run(&["--min-data-rate", "x"]).is_err());
    }

    #[test]
    fn message_memory_and_bare_newline_flags() {
        let c = run(&[
            "--max-inflight-bytes",
            "1048576",
            "--bare-newline",
            "reject",
        ])
        .unwrap();
        assert_eq!(
            (c.max_inflight_bytes, c.bare_newline),
            (1 << 20, BareNewline::Reject)
        );
        let c = run(&["--bare-newline=normalize"]).unwrap();
        assert_eq!(c.bare_newline, BareNewline::Normalize);
        for args in [
            &["--bare-newline", "strip"][..],
            &["--bare-newline"],
            &["--max-inflight-bytes", "0"],
            &["--max-inflight-bytes", "-5"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
        assert_eq!(
            run(&["--bare-newline", "Reject"]).unwrap_err().0,
            "--bare-newline needs normalize or reject, not \"Reject\""
        );
    }

    #[test]
    fn bad_flags() {
        for args in [
            &["--frob"][..],
            &["--workers"],
            &["--workers", "0"],
            &["--max-mailboxes", "0"],
            &["--max-mailboxes", "many"],
            &["--max-mailboxes", "+8"],
            &["--workers", " 4"],
            &["--timeout", "-1"],
            &["--timeout", "0"],
            &["--timeout", "0.0000000001"],
            &["--timeout", "1e3"],
            &["--lock-timeout", "inf"],
            &["--listen", "nonsense"],
            &["--user", "../x"],
            &["--domain", "a b"],
            &["--users", "/nonexistent/users"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
        assert_eq!(
            run(&["--domain", "a b"]).unwrap_err().0,
            "--domain \"a b\" is not a domain name"
        );
        assert!(matches!(parse(["--help"]), Ok(Invocation::Help)));
        assert!(matches!(parse(["-V"]), Ok(Invocation::Version)));
    }

    #[test]
    fn users_from_flags_and_files_are_folded_like_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        fs::write(&users, "Jos\u{e9}\nJOSE\u{301}\n").unwrap();
        let args = ["--users", users.to_str().unwrap(), "--user", "jose\u{301}"];
        let c = run(&args).unwrap();
        assert_eq!(
            c.users.unwrap().into_iter().collect::<Vec<_>>(),
            ["jos\u{e9}"]
        );
        assert!(run(&["--user", "alice\u{200b}"]).is_err());
        assert!(run(&["--domain", "exa\u{202e}mple.test"]).is_err());
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        fs::write(&users, "# staff\njones\n  Brown  # the other\n\n").unwrap();
        let c = run(&["--users", users.to_str().unwrap(), "--user", "smith"]).unwrap();
        assert_eq!(
            c.users.clone().unwrap().into_iter().collect::<Vec<_>>(),
            ["brown", "jones", "smith"]
        );
        // An empty users file still means "these users and no others", not catch-all.
        fs::write(&users, "# nobody yet\n").unwrap();
        let c = run(&["--users", users.to_str().unwrap()]).unwrap();
        assert_eq!(c.users, Some(Default::default()));
        fs::write(&users, "jones\n../etc\n").unwrap();
        let e = run(&["--users", users.to_str().unwrap()]).unwrap_err();
        assert!(
            e.0.ends_with(":2: user \"../etc\" is not a safe mailbox name"),
            "{e}"
        );

        let aliases = dir.path().join("aliases");
        let path = aliases.to_str().unwrap();
        fs::write(
            &aliases,
            "staff: jones, brown,\n  smith@example.com\n# c\n\"Postmaster\": <root>\n",
        )
        .unwrap();
        assert_eq!(
            run(&["--aliases", path]).unwrap().aliases,
            vec![
                (
                    "staff".to_string(),
                    vec![
                        "jones".to_string(),
                        "brown".to_string(),
                        "smith@example.com".to_string()
                    ]
                ),
                ("postmaster".to_string(), vec!["root".to_string()]),
            ]
        );
        for bad in [
            "nocolon\n",
            "x: |/bin/sh\n",
            "../x: jones\n",
            "empty: , ,\n",
        ] {
            fs::write(&aliases, bad).unwrap();
            let e = run(&["--aliases", path]).unwrap_err();
            assert!(e.0.starts_with(&format!("{path}:1: ")), "{bad:?}: {e}");
        }
        // A later --aliases replaces an earlier one.
        let other = dir.path().join("other");
        fs::write(&aliases, "a: jones\n").unwrap();
        fs::write(&other, "b: brown\n").unwrap();
        let c = run(&["--aliases", path, "--aliases", other.to_str().unwrap()]).unwrap();
        assert_eq!(c.aliases, [("b".to_string(), vec!["brown".to_string()])]);
    }

    #[test]
    fn fail_flags() {
        let c = run(&[
            "--fail",
            "rcpt:busy-*@*=450",
            "--fail=connect=421",
            "--fail-seed",
            "42",
        ])
        .unwrap();
        assert_eq!(c.fail.len(), 2);
        assert_eq!(c.fail[1].to_string(), "connect=421");
        assert_eq!((c.fail_seed, run(&[]).unwrap().fail_seed), (42, 0));
        assert_eq!(
            run(&["--fail", "rcpt=250"]).unwrap_err().0,
            "--fail \"rcpt=250\": code 250 is not a failure: use a 4xx or 5xx code, drop or delay"
        );
        assert!(run(&["--fail-seed", "-1"]).is_err());
        assert!(run(&["--fail-seed", "+1"]).is_err());
        assert!(run(&["--fail"]).is_err());
    }

    #[test]
    fn usage_names_every_flag_parse_knows() {
        // Every flag `apply` matches, read from this file's source, so none can be missed.
        let source = include_str!("cli.rs");
        let body = source
            .split_once("fn apply(")
            .and_then(|(_, rest)| rest.split_once("other => return Err"))
            .map(|(body, _)| body)
            .expect("apply's match");
        let flags: Vec<&str> = body
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with("--") && !s.contains(' '))
            .collect();
        assert!(flags.len() >= 27, "{flags:?}");
        for flag in flags.into_iter().chain(["--help", "--version"]) {
            assert!(
                USAGE.contains(&format!("{flag} ")) || USAGE.contains(&format!("{flag}]")),
                "{flag} missing from USAGE"
            );
        }
    }

    #[test]
    fn a_value_given_to_a_flag_that_takes_none_is_refused() {
        for flag in [
            "--auth-accept-any=false",
            "--auth-required=no",
            "--help=1",
            "--version=x",
        ] {
            let name = flag.split_once('=').unwrap().0;
            assert_eq!(
                run(&[flag]).map(|_| ()).unwrap_err().0,
                format!("{name} takes no value"),
                "{flag}"
            );
        }
        assert!(run(&["--auth-accept-any", "--auth-required"]).is_ok());
        assert!(run(&["--workers=3"]).is_ok());
    }
}
