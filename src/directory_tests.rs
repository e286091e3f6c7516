//! Unit tests of the directory: routes, VRFY and EXPN answers, alias expansion and the
//! catch-all bound, over names given as a client or a configuration would give them.

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
    let users: Option<BTreeSet<String>> = users.map(|u| u.iter().map(|s| s.to_string()).collect());
    Directory::new(
        &["bbn-unix.arpa".into(), "other.local".into()],
        users.as_ref(),
        &[
            ("staff".into(), vec!["jones".into(), "brown".into()]),
            ("fwd".into(), vec!["jones@other.local".into()]),
            ("away".into(), vec!["green@elsewhere.example".into()]),
            ("loop".into(), vec!["loop".into()]),
            ("bad".into(), vec!["../etc".into()]),
            (
                "quoted".into(),
                vec!["\"jones\"@other.local".into(), "\"br\\own\"".into()],
            ),
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
    // Quoted targets are the names they quote, as in RCPT.
    let r = d.route(&addr("quoted@bbn-unix.arpa")).unwrap();
    assert_eq!(r.mailboxes, ["jones", "brown"]);
}

#[test]
fn aliases_that_name_each_other_are_each_expanded_once() {
    // Twelve lists naming each other: every path to depth 8 was walked, 11^8 of them (and a
    // warning logged at each end), for one RCPT; each list is now expanded once.
    let lists: Vec<(String, Vec<String>)> = (0..12)
        .map(|i| {
            let mut targets = vec![format!("u{i}")];
            targets.extend((0..12).filter(|&j| j != i).map(|j| format!("l{j}")));
            (format!("l{i}"), targets)
        })
        .collect();
    let d = Directory::new(&["x.test".into()], None, &lists);
    let began = std::time::Instant::now();
    let r = d.route(&addr("l0@x.test")).unwrap();
    assert!(began.elapsed() < std::time::Duration::from_secs(1));
    // Breadth first: l0's own user, then each list's, in the order l0 names them.
    assert_eq!(
        r.mailboxes,
        (0..12).map(|i| format!("u{i}")).collect::<Vec<_>>()
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
