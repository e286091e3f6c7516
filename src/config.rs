//! Configuration: every flag of the command line, every limit with its default, and the loading
//! of the users and aliases files.
//!
//! It exists so that a server started from code (an integration test, say) and one started from
//! the command line are configured by the same type with the same defaults, and so every limit
//! the server enforces has a name and a cited reason here.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::valid_domain;
use crate::directory::mailbox_name;

/// Everything a server needs to start. [`Config::default`] gives the defaults of the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on; port 0 picks a free port. Default `127.0.0.1:2525`.
    pub listen: Vec<SocketAddr>,
    /// This server's name, in the greeting and the `Received:` headers. Default: the system's.
    pub hostname: String,
    /// Where the mbox files are. Default `./mail`, created if missing.
    pub mail_dir: PathBuf,
    /// Domains delivered here. Empty means `localhost` and the hostname.
    pub domains: Vec<String>,
    /// Known mailboxes; `None` accepts every safe local part at a local domain (catch-all).
    pub users: Option<BTreeSet<String>>,
    /// Aliases in aliases(5) form: a name and its targets (local names, aliases or addresses).
    pub aliases: Vec<(String, Vec<String>)>,
    /// Worker threads, one per live session. Default 64.
    pub workers: usize,
    /// Largest message accepted in octets, advertised as SIZE (RFC 1870). Default 10 MiB.
    pub max_message_size: u64,
    /// Most recipients in one transaction. Default 100, the minimum of RFC 5321 §4.5.3.1.8.
    pub max_recipients: usize,
    /// Idle time allowed between commands. Default 300 s (RFC 5321 §4.5.3.2.7).
    pub timeout: Duration,
    /// Time allowed for each read inside DATA. Default 600 s (RFC 5321 §4.5.3.2.5 and
    /// §4.5.3.2.6 ask for at least 3 and 10 minutes).
    pub data_timeout: Duration,
    /// How long a new connection waits for a free worker before it gets 421. Default 1 s.
    pub queue_wait: Duration,
    /// How long a delivery waits for a mailbox locked by another program before 450. Default 30 s.
    pub lock_timeout: Duration,
    /// After shutdown begins, how long a session inside a message (DATA, BDAT, or a refused chunk
    /// being read) may go on in total, however slowly it sends, before it gets 421. Default 30 s.
    pub shutdown_grace: Duration,
    /// Rejected commands in one session before it is closed with 421 (Postfix's
    /// `smtpd_hard_error_limit`). Default 20.
    pub max_errors: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            hostname: system_hostname(),
            mail_dir: PathBuf::from("./mail"),
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
            max_errors: 20,
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

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run a server with this configuration.
    Run(Box<Config>),
    /// Print the usage and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// The usage text for `--help`.
pub const USAGE: &str = "\
usage: mboxd [options]
  --listen ADDR            listen on ADDR (repeatable; default 127.0.0.1:2525; port 0 = any free port)
  --hostname NAME          name in the greeting and Received: headers (default: system hostname)
  --mail-dir DIR           where mbox files are written (default ./mail)
  --domain NAME            a domain delivered here (repeatable; default localhost and the hostname)
  --user NAME              a known mailbox (repeatable; with none, every safe name is accepted)
  --users FILE             known mailboxes, one per line, # comments
  --aliases FILE           aliases(5) file: `name: target, target`
  --workers N              worker threads = concurrent sessions (default 64)
  --max-message-size BYTES largest message (default 10485760)
  --max-recipients N       recipients per message (default 100)
  --timeout SECS           idle timeout between commands (default 300)
  --data-timeout SECS      timeout for each read inside DATA (default 600)
  --queue-wait SECS        how long a connection waits for a free worker before 421 (default 1)
  --lock-timeout SECS      how long to wait for a locked mailbox before 450 (default 30)
  --max-errors N           rejected commands before the session is closed (default 20)
  --shutdown-grace SECS    after SIGTERM, how long a message in progress may take in total (default 30)
  -h, --help               this text
  -V, --version            the version
Logging: RUST_LOG=debug|info|warn (default info), to stderr.
";

impl Config {
    /// Parses command-line arguments (without the program name).
    pub fn from_args<I, S>(args: I) -> Result<Command, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = Config::default();
        let mut listen = Vec::new();
        let mut users: BTreeSet<String> = BTreeSet::new();
        let mut users_given = false;
        let mut args = args.into_iter().map(Into::into);
        while let Some(flag) = args.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (flag, None),
            };
            if matches!(flag.as_str(), "-h" | "--help") {
                return Ok(Command::Help);
            }
            if matches!(flag.as_str(), "-V" | "--version") {
                return Ok(Command::Version);
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| ConfigError(format!("{flag} needs a value")))
            };
            match flag.as_str() {
                "--listen" => listen.extend(parse_listen(&value()?)?),
                "--hostname" => config.hostname = value()?,
                "--mail-dir" => config.mail_dir = PathBuf::from(value()?),
                "--domain" => {
                    let d = value()?;
                    if !valid_domain(&d) {
                        return Err(ConfigError(format!("--domain {d:?} is not a domain name")));
                    }
                    config.domains.push(d);
                }
                "--user" => {
                    users_given = true;
                    users.insert(checked_user(&value()?)?);
                }
                "--users" => {
                    users_given = true;
                    users.extend(load_users(Path::new(&value()?))?);
                }
                "--aliases" => config.aliases = load_aliases(Path::new(&value()?))?,
                "--workers" => config.workers = positive(&flag, &value()?)?,
                "--max-message-size" => {
                    config.max_message_size = positive(&flag, &value()?)? as u64
                }
                "--max-recipients" => config.max_recipients = positive(&flag, &value()?)?,
                "--timeout" => config.timeout = seconds(&flag, &value()?)?,
                "--data-timeout" => config.data_timeout = seconds(&flag, &value()?)?,
                "--queue-wait" => config.queue_wait = seconds(&flag, &value()?)?,
                "--lock-timeout" => config.lock_timeout = seconds(&flag, &value()?)?,
                "--max-errors" => config.max_errors = positive(&flag, &value()?)?,
                "--shutdown-grace" => config.shutdown_grace = seconds(&flag, &value()?)?,
                other => return Err(ConfigError(format!("unknown flag {other:?}; see --help"))),
            }
        }
        if !listen.is_empty() {
            config.listen = listen;
        }
        if users_given {
            config.users = Some(users);
        }
        if config.hostname.is_empty() || config.hostname.contains(char::is_whitespace) {
            return Err(ConfigError(format!(
                "--hostname {:?} is not usable",
                config.hostname
            )));
        }
        Ok(Command::Run(Box::new(config)))
    }

    /// The domains delivered here: those given, or `localhost` and the hostname.
    pub fn local_domains(&self) -> Vec<String> {
        if self.domains.is_empty() {
            vec!["localhost".to_string(), self.hostname.clone()]
        } else {
            self.domains.clone()
        }
    }
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
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError(format!(
            "{flag} needs a positive whole number, not {v:?}"
        ))),
    }
}

fn seconds(flag: &str, v: &str) -> Result<Duration, ConfigError> {
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(ConfigError(format!(
            "{flag} needs a positive number of seconds, not {v:?}"
        ))),
    }
}

fn checked_user(name: &str) -> Result<String, ConfigError> {
    mailbox_name(name)
        .ok_or_else(|| ConfigError(format!("user {name:?} is not a safe mailbox name")))
}

fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// Lines without `#` comments and surrounding blanks, with their numbers, skipping empty ones.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((i + 1, line))
    })
}

/// Reads a users file: one mailbox name per line, `#` starts a comment.
pub fn load_users(path: &Path) -> Result<BTreeSet<String>, ConfigError> {
    let text = read(path)?;
    content_lines(&text)
        .map(|(n, line)| {
            checked_user(line).map_err(|e| ConfigError(format!("{}:{n}: {e}", path.display())))
        })
        .collect()
}

/// Reads an aliases(5) file: `name: target, target`, `#` comments, continuation lines that
/// start with white space.
pub fn load_aliases(path: &Path) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
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
    joined
        .into_iter()
        .map(|(n, line)| {
            let bad = |why: &str| ConfigError(format!("{}:{n}: {why}", path.display()));
            let (name, targets) = line
                .split_once(':')
                .ok_or_else(|| bad("expected `name: target, ...`"))?;
            let name = name.trim().trim_matches('"').to_lowercase();
            if mailbox_name(&name).is_none() {
                return Err(bad("alias name is not a safe mailbox name"));
            }
            let targets: Vec<String> = targets
                .split(',')
                .map(|t| {
                    t.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                })
                .filter(|t| !t.is_empty())
                .collect();
            if targets.is_empty() {
                return Err(bad("alias has no targets"));
            }
            if let Some(t) = targets.iter().find(|t| t.starts_with(['|', '/', ':'])) {
                return Err(bad(&format!(
                    "target {t:?}: only names and addresses are supported"
                )));
            }
            Ok((name, targets))
        })
        .collect()
}

/// The system's host name, or `localhost`.
fn system_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match Config::from_args(args.iter().copied())? {
            Command::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert_eq!(c.mail_dir, PathBuf::from("./mail"));
        assert_eq!(
            (c.workers, c.max_recipients, c.max_message_size),
            (64, 100, 10 << 20)
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
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.hostname, "mx.test");
        assert_eq!(c.local_domains(), vec!["a.test".to_string()]);
        assert_eq!(
            c.users.unwrap().into_iter().collect::<Vec<_>>(),
            vec!["jones".to_string()]
        );
        assert_eq!(c.timeout, Duration::from_millis(500));
    }

    #[test]
    fn bad_flags() {
        for args in [
            &["--frob"][..],
            &["--workers"],
            &["--workers", "0"],
            &["--timeout", "-1"],
            &["--listen", "nonsense"],
            &["--user", "../x"],
            &["--domain", "a b"],
            &["--users", "/nonexistent/users"],
        ] {
            assert!(run(args).is_err(), "{args:?}");
        }
        assert!(matches!(Config::from_args(["--help"]), Ok(Command::Help)));
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        fs::write(&users, "# staff\njones\n  Brown  # the other\n\n").unwrap();
        assert_eq!(
            load_users(&users).unwrap().into_iter().collect::<Vec<_>>(),
            ["brown", "jones"]
        );
        let aliases = dir.path().join("aliases");
        fs::write(
            &aliases,
            "staff: jones, brown,\n  smith@example.com\n# c\nPostmaster: <root>\n",
        )
        .unwrap();
        assert_eq!(
            load_aliases(&aliases).unwrap(),
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
        fs::write(&aliases, "nocolon\n").unwrap();
        assert!(load_aliases(&aliases).is_err());
        fs::write(&aliases, "x: |/bin/sh\n").unwrap();
        assert!(load_aliases(&aliases).is_err());
    }
}
