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
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::command::{Address, unquoted};
use crate::mailboxes::Mailboxes;
use crate::names::mailbox_name;
use crate::reply::{self, Reply};

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
                self.expand(name, 0, &mut expansion);
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
        if to.local.contains(['%', '!']) {
            return Err(reply::RELAY_DENIED);
        }
        let mailbox = mailbox_name(&to.local).ok_or(reply::NAME_NOT_ALLOWED)?;
        // Folding can make `%` of U+FF05: refused like the plain one.
        if mailbox.contains(['%', '!']) {
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
        self.expand(name, 0, &mut expansion);
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
    /// mailbox name expands to nothing.
    fn expand(&self, name: &str, depth: usize, out: &mut Expansion) {
        let Some(name) = mailbox_name(name) else {
            return;
        };
        let Some(targets) = self.aliases.get(&name) else {
            if !out.mailboxes.contains(&name) {
                out.mailboxes.push(name);
            }
            return;
        };
        if depth >= MAX_ALIAS_DEPTH {
            log::warn!("alias {name:?} nests deeper than {MAX_ALIAS_DEPTH}; expansion stopped");
            return;
        }
        for target in targets {
            match target.rsplit_once('@') {
                Some((local, domain)) if self.is_local_domain(domain) => {
                    out.forwarded.push(target.clone());
                    self.expand(local, depth + 1, out);
                }
                Some(_) => out.remote.push(target.clone()),
                None => self.expand(target, depth + 1, out),
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
    forwarded: Vec<String>,
    remote: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        match s.rsplit_once('@') {
            Some((l, d)) => Address {
                local: l.into(),
                domain: Some(d.into()),
            },
            None => Address {
                local: s.into(),
                domain: None,
            },
        }
    }

    fn dir(users: Option<&[&str]>) -> Directory {
        let users: Option<BTreeSet<String>> =
            users.map(|u| u.iter().map(|s| s.to_string()).collect());
        Directory::new(
            &["bbn-unix.arpa".into(), "other.local".into()],
            users.as_ref(),
            &[
                ("staff".into(), vec!["jones".into(), "brown".into()]),
                ("fwd".into(), vec!["jones@other.local".into()]),
                ("away".into(), vec!["green@elsewhere.example".into()]),
                ("loop".into(), vec!["loop".into()]),
                ("bad".into(), vec!["../etc".into()]),
            ],
        )
    }

    #[test]
    fn known_unknown_and_catch_all() {
        let d = dir(Some(&["jones", "brown"]));
        assert_eq!(
            d.route(&addr("Jones@BBN-UNIX.ARPA")).unwrap().mailboxes,
            ["jones"]
        );
        assert_eq!(
            d.route(&addr("Green@BBN-UNIX.ARPA")),
            Err(reply::NO_SUCH_USER)
        );
        let d = dir(None);
        assert_eq!(
            d.route(&addr("Green@bbn-unix.arpa.")).unwrap().mailboxes,
            ["green"]
        );
    }

    #[test]
    fn relaying_is_denied() {
        let d = dir(None);
        assert_eq!(d.route(&addr("a@example.com")), Err(reply::RELAY_DENIED));
        assert_eq!(
            d.route(&addr("a%example.com@bbn-unix.arpa")),
            Err(reply::RELAY_DENIED)
        );
        assert_eq!(
            d.route(&addr("host!a@bbn-unix.arpa")),
            Err(reply::RELAY_DENIED)
        );
    }

    #[test]
    fn postmaster_is_always_accepted() {
        let d = dir(Some(&["jones"]));
        assert_eq!(
            d.route(&addr("postmaster")).unwrap().mailboxes,
            ["postmaster"]
        );
        assert_eq!(
            d.route(&addr("PostMaster@bbn-unix.arpa"))
                .unwrap()
                .mailboxes,
            ["postmaster"]
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        let d = dir(None);
        for bad in [
            "../x",
            ".hidden",
            "-rf",
            "a..b",
            "a/b",
            "a\\b",
            "a\u{0}b",
            "a\u{1b}b",
            "jones.lock",
            &"x".repeat(65),
        ] {
            assert_eq!(
                d.route(&addr(&format!("{bad}@bbn-unix.arpa"))),
                Err(reply::NAME_NOT_ALLOWED),
                "{bad:?}"
            );
        }
        assert_eq!(mailbox_name("José"), Some("josé".into()));
        assert_eq!(mailbox_name(&"x".repeat(64)).map(|n| n.len()), Some(64));
    }

    #[test]
    fn catch_all_new_mailboxes_are_bounded_and_configured_ones_are_not() {
        let bound = Arc::new(Mailboxes::new(["old".to_string()], 2));
        let d = dir(None).with_mailbox_bound(Arc::clone(&bound));
        let route = |a: &str| d.route(&addr(&format!("{a}@bbn-unix.arpa")));
        assert!(route("Old").is_ok());
        assert!(route("new").is_ok());
        assert_eq!(route("newer"), Err(reply::TOO_MANY_MAILBOXES));
        // A reserved or existing name is accepted past the bound.
        assert!(route("new").is_ok() && route("old").is_ok());
        // Postmaster, aliases and what they expand to are configured: never bounded.
        for configured in ["postmaster", "staff", "fwd", "jones", "brown"] {
            assert!(route(configured).is_ok(), "{configured}");
        }
        // Relaying and unsafe names are refused as before, and reserve nothing.
        assert_eq!(route("../x"), Err(reply::NAME_NOT_ALLOWED));
        assert_eq!(d.route(&addr("x@example.com")), Err(reply::RELAY_DENIED));
        assert_eq!(bound.len(), 2);
        // With users configured there is no catch-all, and no bound.
        let d = dir(Some(&["jones"])).with_mailbox_bound(Arc::new(Mailboxes::new(Vec::new(), 1)));
        assert!(d.route(&addr("jones")).is_ok() && d.route(&addr("postmaster")).is_ok());
        assert!(d.bound.is_none());
    }

    #[test]
    fn aliases() {
        let d = dir(Some(&["jones", "brown"]));
        let r = d.route(&addr("staff@bbn-unix.arpa")).unwrap();
        assert_eq!(
            (r.mailboxes, r.reply.code),
            (vec!["jones".to_string(), "brown".to_string()], 250)
        );
        let r = d.route(&addr("fwd@bbn-unix.arpa")).unwrap();
        assert_eq!(
            (r.mailboxes, r.reply.code),
            (vec!["jones".to_string()], 251)
        );
        let e = d.route(&addr("away@bbn-unix.arpa")).unwrap_err();
        assert_eq!(e.code, 551);
        assert!(e.text.contains("<green@elsewhere.example>"));
        // A loop and an unsafe target expand to nothing.
        assert_eq!(
            d.route(&addr("loop@bbn-unix.arpa")),
            Err(reply::NO_SUCH_USER)
        );
        assert_eq!(
            d.route(&addr("bad@bbn-unix.arpa")),
            Err(reply::NO_SUCH_USER)
        );
    }

    #[test]
    fn vrfy_and_expn() {
        let d = dir(Some(&["jones"]));
        assert_eq!(d.vrfy("Jones").code, 250);
        assert_eq!(d.vrfy("<jones@bbn-unix.arpa>").code, 250);
        assert_eq!(d.vrfy("Green").code, 550);
        assert_eq!(d.vrfy("jones@example.com").code, 550);
        assert_eq!(dir(None).vrfy("anyone").code, 252);
        let e = d.expn("staff");
        assert_eq!(
            (e.code, e.text.as_ref()),
            (250, "<jones@bbn-unix.arpa>\n<brown@bbn-unix.arpa>")
        );
        assert_eq!(d.expn("jones").code, 550);
    }

    /// The address of a 250 VRFY or EXPN line, parsed as RCPT would see it.
    fn answered(reply: &Reply) -> Vec<Address> {
        assert_eq!(reply.code, 250, "{reply:?}");
        reply
            .text
            .lines()
            .map(|line| addr(line.trim_start_matches('<').trim_end_matches('>')))
            .collect()
    }

    #[test]
    fn vrfy_and_expn_answer_addresses_rcpt_accepts() {
        // The hostname is not a local domain: an address at it would be refused.
        let d = Directory::new(
            &["a.test".into(), "b.test".into()],
            Some(&["jones".to_string()].into()),
            &[("staff".into(), vec!["jones".into()])],
        );
        for reply in [d.vrfy("jones"), d.vrfy("staff"), d.vrfy("postmaster")] {
            let [address] = &answered(&reply)[..] else {
                panic!("{reply:?}")
            };
            assert_eq!(address.domain.as_deref(), Some("a.test"));
            assert!(d.route(address).is_ok(), "RCPT refuses {reply:?}");
        }
        for address in answered(&d.expn("staff")) {
            assert_eq!(address.domain.as_deref(), Some("a.test"));
            assert!(d.route(&address).is_ok());
        }
        // No domain at all (not reachable from a Config): localhost.
        let bare = Directory::new(&[], None, &[]);
        assert_eq!(bare.vrfy("postmaster").text, "<postmaster@localhost>");
    }

    #[test]
    fn catch_all_spellings_of_one_name_reach_one_mailbox_or_none() {
        let d = dir(None);
        let route = |local: &str| d.route(&addr(&format!("{local}@bbn-unix.arpa")));
        assert_eq!(route("alice").unwrap().mailboxes, ["alice"]);
        assert_eq!(route("ALICE").unwrap().mailboxes, ["alice"]);
        assert_eq!(route("ａｌｉｃｅ").unwrap().mailboxes, ["alice"]);
        for bad in [
            "alice\u{200b}",
            "\u{feff}alice",
            "a\u{180e}lice",
            "\u{202e}ecila",
        ] {
            assert_eq!(route(bad), Err(reply::NAME_NOT_ALLOWED), "{bad:?}");
        }
        assert_eq!(route("jos\u{e9}").unwrap().mailboxes, ["jos\u{e9}"]);
        assert_eq!(route("jose\u{301}").unwrap().mailboxes, ["jos\u{e9}"]);
        // U+FF05 folds to `%`: a relaying hack like the plain one.
        assert_eq!(route("a\u{ff05}b"), Err(reply::RELAY_DENIED));
    }

    #[test]
    fn configured_names_are_folded_like_recipients() {
        let users: BTreeSet<String> = ["Jos\u{e9}".to_string(), "bad\u{200b}".to_string()].into();
        let d = Directory::new(
            &["a.test".into()],
            Some(&users),
            &[
                (
                    "Équipe".into(),
                    vec!["JOSE\u{301}".into(), "ghost\u{202e}".into()],
                ),
                ("bad\u{feff}".into(), vec!["jose".into()]),
            ],
        );
        for spelling in ["jos\u{e9}", "jose\u{301}", "JOS\u{c9}"] {
            let r = d.route(&addr(&format!("{spelling}@a.test"))).unwrap();
            assert_eq!(r.mailboxes, ["jos\u{e9}"], "{spelling:?}");
            assert_eq!(d.vrfy(spelling).text, "<jos\u{e9}@a.test>");
        }
        // The alias, by any spelling; its unsafe target expands to nothing.
        let r = d.route(&addr("e\u{301}quipe@a.test")).unwrap();
        assert_eq!(r.mailboxes, ["jos\u{e9}"]);
        // A user or alias name that is not safe (a Config filled in by hand) is dropped.
        assert_eq!(d.route(&addr("bad@a.test")), Err(reply::NO_SUCH_USER));
        assert_eq!(
            d.route(&addr("bad\u{200b}@a.test")),
            Err(reply::NAME_NOT_ALLOWED)
        );
        assert_eq!(d.expn("bad\u{feff}").code, 550);
    }
}
