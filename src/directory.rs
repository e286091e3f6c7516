//! The directory: who is local here, and which mailbox file a recipient's mail goes to.
//!
//! It exists to answer, in one pure place, every question the session asks about an address:
//! is its domain ours (else relaying is denied, RFC 5321 §3.6.2), is it a known user, an alias
//! (aliases(5)), or the postmaster every server must accept (§4.5.1), and which mailbox its local
//! part names. Every name it compares or delivers to (a recipient's, a user's, an alias's or an
//! alias target's) goes through [`mailbox_name`] (`names.rs`), so two spellings of one name
//! meet, and a name that reaches the writer is a single path component with no separators, no
//! leading dot or dash and no unsafe character. EXPN is the exception: it lists an alias's
//! targets as configured, unchecked (a remote target among them, which RCPT would refuse).
//! In catch-all mode it also keeps the bound on new mailboxes (`--max-mailboxes`, see
//! [`Mailboxes`]): a name routed there only by catch-all (not postmaster, not an alias's target)
//! must be known or fit under the bound, else the RCPT gets 452.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::command::{Address, unquoted};
use crate::mailboxes::Mailboxes;
use crate::names::mailbox_name;
use crate::reply::{self, Reply};

/// The `%` and `!` hacks of a local part route through this host to another: relaying, refused.
pub(crate) const RELAY_HACKS: [char; 2] = ['%', '!'];

/// How deep aliases may refer to aliases before the expansion stops.
const MAX_ALIAS_DEPTH: usize = 8;

/// Local domains, users and aliases, loaded once at start.
#[derive(Debug, Clone)]
pub(crate) struct Directory {
    /// The domain VRFY and EXPN name in the addresses they answer with: the first local
    /// domain, so that a bare name they give is an address RCPT accepts.
    home: String,
    domains: Vec<String>,
    users: Option<BTreeSet<String>>,
    aliases: HashMap<String, Vec<String>>,
    /// Catch-all only: the names that exist or are reserved, and the bound on them.
    bound: Option<Arc<Mailboxes>>,
    /// The mailboxes aliases expand to: configured, so never bounded.
    alias_targets: BTreeSet<String>,
}

/// Where a recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// Mailbox names, each safe as a file name, without duplicates.
    pub mailboxes: Vec<String>,
    /// The reply to the RCPT: 250, or 251 when an alias forwards to another local address.
    pub reply: Reply,
}

impl Directory {
    /// A directory. `users` of `None` means every safe local part is a mailbox (catch-all).
    ///
    /// The first of `domains` is the one VRFY and EXPN answer with (`localhost` when `domains`
    /// is empty, which [`crate::Config::local_domains`] never is), so a bare name they give is an
    /// address RCPT accepts.
    pub(crate) fn new(
        domains: &[String],
        users: Option<&BTreeSet<String>>,
        aliases: &[(String, Vec<String>)],
    ) -> Self {
        // Kept as a client's domain is compared: lower-case, without the trailing dot that
        // `--domain a.test.` or `--hostname mx.test.` may carry (a fully qualified name).
        let domains: Vec<String> = domains
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        Directory {
            home: domains
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".to_string()),
            domains,
            // Inserted one by one: `collect` into a set would sort first, which links a stable
            // sort into the binary for this one cold use.
            users: users.map(|u| {
                let mut set = BTreeSet::new();
                set.extend(u.iter().filter_map(|n| canonical("user", n)));
                set
            }),
            aliases: aliases
                .iter()
                .filter_map(|(name, targets)| Some((canonical("alias", name)?, targets.clone())))
                .collect(),
            bound: None,
            alias_targets: BTreeSet::new(),
        }
    }

    /// Bounds the mailboxes catch-all mode may create by `mailboxes`. Without effect when users
    /// are configured. Postmaster and the mailboxes aliases expand to are never bounded.
    pub(crate) fn with_mailbox_bound(mut self, mailboxes: Arc<Mailboxes>) -> Self {
        if self.users.is_none() {
            let mut targets = BTreeSet::new();
            for name in self.aliases.keys() {
                let mut expansion = Expansion::default();
                self.expand(name, &mut expansion);
                targets.extend(expansion.mailboxes);
            }
            self.alias_targets = targets;
            self.bound = Some(mailboxes);
        }
        self
    }

    /// The first local domain: the one VRFY and EXPN answer with, and the one a recipient given
    /// without a domain is written with in `Received:`.
    pub(crate) fn home(&self) -> &str {
        &self.home
    }

    /// The first local domain that is ASCII, if any: what a header of a message without
    /// SMTPUTF8 may hold (see `SessionConfig::home_for`).
    pub(crate) fn ascii_home(&self) -> Option<&str> {
        self.domains
            .iter()
            .map(String::as_str)
            .find(|d| d.is_ascii())
    }

    /// True when mail for `domain` is delivered here (case-insensitive, a trailing dot ignored).
    pub(crate) fn is_local_domain(&self, domain: &str) -> bool {
        // One trailing dot is the domain written absolute; two are no domain (as for RCPT).
        let d = domain
            .strip_suffix('.')
            .unwrap_or(domain)
            .to_ascii_lowercase();
        self.domains.contains(&d)
    }

    /// Decides a RCPT: where it goes, or the reply refusing it.
    pub(crate) fn route(&self, to: &Address) -> Result<Route, Reply> {
        if let Some(domain) = &to.domain
            && !self.is_local_domain(domain)
        {
            return Err(reply::RELAY_DENIED);
        }
        // `%` and `!` hacks route through this host to another one: that is relaying.
        if to.local.contains(RELAY_HACKS) {
            return Err(reply::RELAY_DENIED);
        }
        let mailbox = mailbox_name(&to.local).ok_or(reply::NAME_NOT_ALLOWED)?;
        // Folding can make `%` of U+FF05: refused like the plain one.
        if mailbox.contains(RELAY_HACKS) {
            return Err(reply::RELAY_DENIED);
        }
        if self.aliases.contains_key(&mailbox) {
            return self.route_alias(&mailbox);
        }
        // RFC 5321 §4.5.1: postmaster is always accepted.
        if mailbox == "postmaster" || self.is_user(&mailbox) {
            if !self.admits(&mailbox) {
                return Err(reply::TOO_MANY_MAILBOXES);
            }
            Ok(Route {
                mailboxes: vec![mailbox],
                reply: reply::OK_RECIPIENT,
            })
        } else {
            Err(reply::NO_SUCH_USER)
        }
    }

    /// False when `mailbox` is a new name catch-all would create past the bound; true, and the
    /// name reserved, otherwise.
    fn admits(&self, mailbox: &str) -> bool {
        match &self.bound {
            None => true,
            Some(_) if mailbox == "postmaster" || self.alias_targets.contains(mailbox) => true,
            Some(bound) => bound.admit(mailbox),
        }
    }

    fn is_user(&self, mailbox: &str) -> bool {
        self.users
            .as_ref()
            .is_none_or(|users| users.contains(mailbox))
    }

    fn route_alias(&self, name: &str) -> Result<Route, Reply> {
        let mut expansion = Expansion::default();
        self.expand(name, &mut expansion);
        if expansion.mailboxes.is_empty() {
            return Err(match expansion.remote.first() {
                Some(addr) => {
                    Reply::new(551, "5.1.6", format!("User not local; please try <{addr}>"))
                }
                None => reply::NO_SUCH_USER,
            });
        }
        let reply = match expansion.forwarded.first() {
            Some(addr) => Reply::new(
                251,
                "2.1.5",
                format!("User not local; will forward to <{addr}>"),
            ),
            None => reply::OK_RECIPIENT,
        };
        Ok(Route {
            mailboxes: expansion.mailboxes,
            reply,
        })
    }

    /// Expands a local name (an alias, or a mailbox) into `out`. A name that is not a safe
    /// mailbox name expands to nothing. The names are taken breadth first, each once, at the
    /// least depth it is found: an alias met again (a loop, or two lists that name a third) adds
    /// nothing more, so the cost grows with the targets there are, not with the paths between
    /// them (five lists naming each other had logged 65 536 warnings for one RCPT).
    fn expand(&self, name: &str, out: &mut Expansion) {
        let mut queue = VecDeque::from([(name.to_string(), 0)]);
        let mut too_deep = false;
        while let Some((name, depth)) = queue.pop_front() {
            let Some(name) = mailbox_name(&name) else {
                continue;
            };
            if !out.seen.insert(name.clone()) {
                continue;
            }
            let Some(targets) = self.aliases.get(&name) else {
                out.mailboxes.push(name);
                continue;
            };
            if depth >= MAX_ALIAS_DEPTH {
                if !too_deep {
                    log::warn!("alias {name:?} nests deeper than {MAX_ALIAS_DEPTH}; not expanded");
                    too_deep = true;
                }
                continue;
            }
            for target in targets {
                // A quoted local part is the name it quotes, as RCPT takes it: `"jones"@here`
                // is jones.
                match target.rsplit_once('@') {
                    Some((local, domain)) if self.is_local_domain(domain) => {
                        out.forwarded.push(target.clone());
                        queue.push_back((unquoted(local).into_owned(), depth + 1));
                    }
                    Some(_) => out.remote.push(target.clone()),
                    None => queue.push_back((unquoted(target).into_owned(), depth + 1)),
                }
            }
        }
    }

    /// The reply to `VRFY arg` (RFC 5321 §3.5.1): the mailbox, as an address at the first local
    /// domain, which RCPT accepts; for an alias RCPT would refuse, RCPT's refusal.
    pub(crate) fn vrfy(&self, arg: &str) -> Reply {
        let Some(name) = self.lookup_arg(arg).and_then(|n| mailbox_name(&n)) else {
            return reply::NO_SUCH_USER;
        };
        // An alias answers as RCPT would route it: 551 when all its targets are elsewhere
        // (RFC 5321 §3.5.3 gives VRFY 551 too), 550 when it leads to no mailbox (a loop).
        // Postmaster, if no alias, routes to its own mailbox.
        if self.aliases.contains_key(&name) || name == "postmaster" {
            return match self.route_alias(&name) {
                Ok(_) => Reply::new(250, "2.1.5", format!("<{name}@{}>", self.home)),
                Err(r) => r,
            };
        }
        match &self.users {
            Some(users) if users.contains(&name) => {
                Reply::new(250, "2.1.5", format!("<{name}@{}>", self.home))
            }
            Some(_) => reply::NO_SUCH_USER,
            None => reply::CANNOT_VRFY,
        }
    }

    /// The reply to `EXPN arg`: one line per member of an alias (RFC 5321 §3.5.2), as configured
    /// and unchecked, a bare name given as an address at the first local domain, like VRFY's.
    pub(crate) fn expn(&self, arg: &str) -> Reply {
        let Some(name) = self.lookup_arg(arg).and_then(|n| mailbox_name(&n)) else {
            return reply::NOT_A_LIST;
        };
        match self.aliases.get(&name) {
            Some(targets) if !targets.is_empty() => {
                let lines: Vec<String> = targets
                    .iter()
                    .map(|t| {
                        if t.contains('@') {
                            format!("<{t}>")
                        } else {
                            format!("<{t}@{}>", self.home)
                        }
                    })
                    .collect();
                Reply::new(250, "2.1.5", lines.join("\n"))
            }
            _ => reply::NOT_A_LIST,
        }
    }

    /// The local part named by a VRFY or EXPN argument: `name`, `name@local.domain`, `<...>`, or
    /// `Full Name <name@domain>`; `None` when it names a mailbox elsewhere.
    fn lookup_arg<'a>(&self, arg: &'a str) -> Option<Cow<'a, str>> {
        let inner = match (arg.rfind('<'), arg.rfind('>')) {
            (Some(open), Some(close)) if open < close => arg.get(open + 1..close).unwrap_or(arg),
            _ => arg.trim(),
        };
        match inner.rsplit_once('@') {
            Some((local, domain)) => self.is_local_domain(domain).then_some(unquoted(local)),
            None => Some(unquoted(inner)),
        }
    }
}

/// The mailbox name of a configured user or alias, or `None` (with a warning) when it has none.
/// [`crate::Config::add_user`] and [`crate::Config::add_alias`] refuse such names; a `Config` whose
/// fields were filled in directly may still hold one.
fn canonical(what: &str, name: &str) -> Option<String> {
    let mailbox = mailbox_name(name);
    if mailbox.is_none() {
        log::warn!(
            "{what} <{}> is not a safe mailbox name; ignored",
            crate::escape::Escaped(name)
        );
    }
    mailbox
}

#[derive(Default)]
struct Expansion {
    mailboxes: Vec<String>,
    /// Every name expanded so far, alias or mailbox.
    seen: HashSet<String>,
    forwarded: Vec<String>,
    remote: Vec<String>,
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
