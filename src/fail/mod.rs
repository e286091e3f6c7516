//! Failing on purpose: `--fail` rules that make a server refuse, drop or delay at a chosen stage
//! of a session, so that an application's error handling can be tested against a real server.
//!
//! It exists so that a rule is parsed and checked in one place (a malformed rule is a start-up
//! error that says what is wrong, for the command line and the library alike), and so that the
//! protocol core stays pure: a session asks [`Faults`] at each stage, and `Faults` holds nothing
//! but the rules, a firing counter per rule (an atomic, shared by every session of the server),
//! one seeded generator for `p=` and the hostname for its 421 texts, with no I/O. A fired reply
//! becomes the stage's reply; a drop or a delay becomes an action that the connection carries
//! out.
//!
//! Grammar: `STAGE[:PATTERN]=ACTION[,count=N][,p=P]`, where STAGE is `connect`, `helo`, `mail`,
//! `rcpt`, `data` or `data-end`; PATTERN is a glob (`*` matches any run of characters) matched
//! case-insensitively against the address (`mail`, `rcpt`), the HELO/EHLO name (`helo`) or any
//! recipient of the transaction (`data`, `data-end`); ACTION is a 4xx or 5xx reply code with
//! optional text, `drop`, or `delay:DURATION` (`500ms`, `5s`).

mod replies;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::reply::Reply;

pub(crate) use replies::default_reply;

/// Where in a session a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Instead of the greeting.
    Connect,
    /// HELO or EHLO.
    Helo,
    /// MAIL.
    Mail,
    /// RCPT.
    Rcpt,
    /// DATA, or the first BDAT of a transaction.
    Data,
    /// After the whole message, before it is stored.
    DataEnd,
}

const STAGES: [(&str, Stage); 6] = [
    ("connect", Stage::Connect),
    ("helo", Stage::Helo),
    ("mail", Stage::Mail),
    ("rcpt", Stage::Rcpt),
    ("data", Stage::Data),
    ("data-end", Stage::DataEnd),
];

/// What a rule does when it fires.
#[derive(Debug, Clone, PartialEq)]
enum Effect {
    /// Answer with this code, and this text instead of the default one.
    Reply(u16, Option<String>),
    /// Close the connection without a reply.
    Drop,
    /// Wait, then carry on normally.
    Delay(Duration),
}

/// One `--fail` rule: `STAGE[:PATTERN]=ACTION[,count=N][,p=P]` (see the README's "Failing on
/// purpose"). Made with [`FailRule::parse`] or [`str::parse`]; added with [`Config::fail`].
///
/// ```
/// let rule: mboxd::FailRule = "rcpt:busy-*@*=450".parse()?;
/// assert_eq!(rule.to_string(), "rcpt:busy-*@*=450");
/// assert!(mboxd::FailRule::parse("rcpt:*=250").is_err(), "not a failure");
/// # Ok::<(), mboxd::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FailRule {
    text: String,
    stage: Stage,
    /// Lower-cased; `None` matches everything.
    pattern: Option<Vec<char>>,
    effect: Effect,
    count: Option<u64>,
    p: Option<f64>,
}

impl FailRule {
    /// Parses a rule; the error says what is wrong with it.
    pub fn parse(rule: &str) -> Result<FailRule, ConfigError> {
        let text = rule.trim();
        let bad = |why: String| ConfigError(format!("--fail {text:?}: {why}"));
        let (lhs, rhs) = text
            .split_once('=')
            .ok_or_else(|| bad("expected STAGE[:PATTERN]=ACTION".into()))?;
        let (stage, pattern) = match lhs.split_once(':') {
            Some((s, p)) => (s.trim(), Some(p.trim())),
            None => (lhs.trim(), None),
        };
        let stage = STAGES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(stage))
            .map(|(_, s)| *s)
            .ok_or_else(|| {
                bad(format!(
                    "unknown stage {stage:?}; expected connect, helo, mail, rcpt, data or data-end"
                ))
            })?;
        let pattern = match pattern {
            None => None,
            Some(_) if stage == Stage::Connect => {
                return Err(bad("connect takes no pattern: nothing is known yet".into()));
            }
            Some("") => return Err(bad("empty pattern; leave out the `:` to match all".into())),
            Some(p) if p.chars().any(char::is_control) => {
                return Err(bad("the pattern holds a control character".into()));
            }
            Some(p) => Some(p.to_lowercase().chars().collect()),
        };
        // Options come last, each after a comma; a comma before anything else belongs to the
        // reply text.
        let (mut action, mut count, mut p) = (rhs, None, None);
        while let Some((head, tail)) = action.rsplit_once(',') {
            let Some((key, value)) = tail.trim().split_once('=') else {
                break;
            };
            match key.trim() {
                "count" if count.is_none() => count = Some(parse_count(value).map_err(bad)?),
                "p" if p.is_none() => p = Some(parse_p(value).map_err(bad)?),
                "count" | "p" => return Err(bad(format!("{} given twice", key.trim()))),
                k if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphabetic()) => {
                    return Err(bad(format!("unknown option {k:?}; expected count= or p=")));
                }
                _ => break,
            }
            action = head;
        }
        Ok(FailRule {
            text: text.to_string(),
            stage,
            pattern,
            effect: parse_action(action.trim()).map_err(bad)?,
            count,
            p,
        })
    }

    /// True if the rule's pattern matches one of `subjects` (always, without a pattern).
    fn matches(&self, subjects: &[&str]) -> bool {
        match &self.pattern {
            None => true,
            Some(p) => subjects
                .iter()
                .any(|s| glob(p, &s.to_lowercase().chars().collect::<Vec<_>>())),
        }
    }
}

impl FromStr for FailRule {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<FailRule, ConfigError> {
        FailRule::parse(s)
    }
}

impl fmt::Display for FailRule {
    /// The rule as it was written (trimmed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_count(v: &str) -> Result<u64, String> {
    match crate::decimal::whole(v.trim()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("count={v}: expected a whole number from 1")),
    }
}

fn parse_p(v: &str) -> Result<f64, String> {
    match crate::decimal::billionths(v.trim()) {
        Some(p) if p <= 1_000_000_000 => Ok(p as f64 / 1e9),
        _ => Err(format!("p={v}: expected a probability from 0 to 1")),
    }
}

fn parse_action(a: &str) -> Result<Effect, String> {
    if a.eq_ignore_ascii_case("drop") {
        return Ok(Effect::Drop);
    }
    if let Some(d) = a
        .get(..6)
        .filter(|k| k.eq_ignore_ascii_case("delay:"))
        .and(a.get(6..))
    {
        return parse_duration(d.trim()).map(Effect::Delay);
    }
    let expected = "expected a 4xx or 5xx reply code with optional text (450, 552 mailbox full), \
                    drop, or delay:DURATION";
    let digits = a.bytes().take_while(u8::is_ascii_digit).count();
    let (code, text) = match (digits, a.get(..3), a.get(3..)) {
        (3, Some(code), Some(text)) if text.is_empty() || text.starts_with([' ', '\t']) => {
            (code, text.trim())
        }
        _ => return Err(format!("action {a:?}: {expected}")),
    };
    let code: u16 = code
        .parse()
        .map_err(|_| format!("action {a:?}: {expected}"))?;
    if !(400..600).contains(&code) {
        return Err(format!(
            "code {code} is not a failure: use a 4xx or 5xx code, drop or delay"
        ));
    }
    // RFC 5321 §4.2.1: a reply's text is printable ASCII and tab; it may be the greeting, sent
    // before any SMTPUTF8, and a client must see nothing on the wire mboxd would escape.
    if !text.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
        return Err(
            "the reply text may hold only printable ASCII and tab (RFC 5321 §4.2.1)".into(),
        );
    }
    Ok(Effect::Reply(
        code,
        (!text.is_empty()).then(|| text.to_string()),
    ))
}

/// `500ms`, `5s`, `1.5s`: at most an hour.
fn parse_duration(d: &str) -> Result<Duration, String> {
    let (number, per_nano) = if let Some(n) = d.strip_suffix("ms") {
        (n, 1000)
    } else if let Some(n) = d.strip_suffix('s') {
        (n, 1)
    } else {
        return Err(format!(
            "delay {d:?}: expected a number and a unit, as 500ms or 5s"
        ));
    };
    match crate::decimal::billionths(number.trim()).map(|n| n / per_nano) {
        Some(nanos) if nanos <= 3600 * 1_000_000_000 => Ok(Duration::from_nanos(nanos)),
        _ => Err(format!(
            "delay {d:?}: expected a number of ms or s, at most an hour"
        )),
    }
}

/// Glob match of `pattern` (where `*` matches any run of characters) against the whole of
/// `subject`, both already lower-cased. On a mismatch only the latest `*` is tried one character
/// further, so the work is at most `pattern.len() × subject.len()` steps, never exponential.
fn glob(pattern: &[char], subject: &[char]) -> bool {
    let (mut p, mut s) = (0, 0);
    // The position after the latest star, and where in the subject it was last tried.
    let mut star: Option<(usize, usize)> = None;
    while s < subject.len() {
        match (pattern.get(p), subject.get(s)) {
            (Some('*'), _) => {
                star = Some((p + 1, s));
                p += 1;
            }
            (Some(a), Some(b)) if a == b => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((after, from)) => {
                    star = Some((after, from + 1));
                    p = after;
                    s = from + 1;
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|c| *c == '*')
}

/// What the rules decided at one stage, beyond delays.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Refuse the command with this reply, as the stage refuses it for a real reason (the
    /// session's module doc says what that does to its state).
    Refuse(Reply),
    /// Answer this 421 and close (RFC 5321 §3.8).
    Close(Reply),
    /// Close without a reply.
    Drop,
}

/// A server's rules, armed: each with its count of firings, and one generator for `p=`.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<(FailRule, AtomicU64)>,
    /// The splitmix64 state, seeded by `--fail-seed`.
    state: AtomicU64,
    hostname: String,
}

/// splitmix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl Faults {
    /// Whether any rule is for `stage`: with none (always, unless a test asked for failures),
    /// there is nothing to check and no subject to build.
    pub(crate) fn armed(&self, stage: Stage) -> bool {
        self.rules.iter().any(|(rule, _)| rule.stage == stage)
    }

    /// The rules of `config`, with their counters at 0 and the generator at its seed.
    pub(crate) fn new(config: &Config) -> Faults {
        Faults::with(&config.fail, config.fail_seed, &config.hostname)
    }

    /// `rules`, with their counters at 0 and the generator at `seed`; 421 texts name
    /// `hostname`.
    pub(crate) fn with(rules: &[FailRule], seed: u64, hostname: &str) -> Faults {
        Faults {
            rules: rules
                .iter()
                .map(|r| (r.clone(), AtomicU64::new(0)))
                .collect(),
            state: AtomicU64::new(seed),
            hostname: hostname.to_string(),
        }
    }

    /// Consults every rule of `stage`, in the order given, against `subjects`; logs each firing
    /// under `label`. Delays add up and are returned with the first refusal, close or drop that
    /// fires (later rules are then not consulted).
    pub(crate) fn check(
        &self,
        stage: Stage,
        subjects: &[&str],
        label: &str,
    ) -> (Duration, Option<Fault>) {
        let mut delay = Duration::ZERO;
        for (rule, fired) in &self.rules {
            if rule.stage != stage || !rule.matches(subjects) || !self.fires(rule, fired) {
                continue;
            }
            log::info!("{label}: --fail {:?} fired", rule.text);
            match &rule.effect {
                Effect::Delay(d) => delay += *d,
                Effect::Drop => return (delay, Some(Fault::Drop)),
                Effect::Reply(code, text) => {
                    let (enhanced, default) = default_reply(*code, stage);
                    let text = match (text, code) {
                        (Some(t), _) => t.clone(),
                        // RFC 5321 §4.2.3: `421 <domain> Service not available`.
                        (None, 421) => format!("{} {default}", self.hostname),
                        (None, _) => default.to_string(),
                    };
                    let r = Reply::new(*code, enhanced, text);
                    let fault = if *code == 421 {
                        Fault::Close(r)
                    } else {
                        Fault::Refuse(r)
                    };
                    return (delay, Some(fault));
                }
            }
        }
        (delay, None)
    }

    /// Whether a matching rule fires now: its count not used up, and a draw under its `p`.
    fn fires(&self, rule: &FailRule, fired: &AtomicU64) -> bool {
        let limit = rule.count.unwrap_or(u64::MAX);
        if fired.load(Ordering::SeqCst) >= limit {
            return false;
        }
        if rule.p.is_some_and(|p| self.draw() >= p) {
            return false;
        }
        fired
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// The next number of splitmix64, in [0, 1): one sequence per server, so a run with the same
    /// seed and the same order of events fires the same way.
    fn draw(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::SeqCst)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Config {
    /// Adds a `--fail` rule, builder style: the server then fails on purpose where it says.
    ///
    /// ```
    /// let config = mboxd::Config::default()
    ///     .fail("rcpt:busy-*@*=450".parse()?)
    ///     .fail("data-end:*=drop,p=0.1".parse()?)
    ///     .fail_seed(7);
    /// assert_eq!(config.fail.len(), 2);
    /// # Ok::<(), mboxd::ConfigError>(())
    /// ```
    pub fn fail(mut self, rule: FailRule) -> Self {
        self.fail.push(rule);
        self
    }

    /// Sets the seed of the generator that `p=` rules draw from (`--fail-seed`), builder style.
    pub fn fail_seed(mut self, seed: u64) -> Self {
        self.fail_seed = seed;
        self
    }
}
