//! Unit tests of `Config`: its defaults, its checks and the names it is given.

use super::*;

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert_eq!(c.mail_dir, PathBuf::from("./mail"));
    assert_eq!(
        (c.workers, c.max_recipients, c.max_message_size),
        (64, 100, 10 << 20)
    );
    assert_eq!(c.max_mailboxes, 10_000);
    assert!(c.users.is_none());
    assert_eq!(
        (c.max_inflight_bytes, c.bare_newline),
        (128 << 20, BareNewline::Normalize)
    );
    assert_eq!((&c.auth, c.auth_required), (&Auth::Off, false));
    assert_eq!(c.local_domains(), ["localhost".to_string(), c.hostname]);
}

#[test]
fn auth_builders_and_checks() {
    let c = Config::default().auth_accept_any().auth_required(true);
    assert!(c.auth.enabled() && c.auth_required);
    assert!(c.auth.check("anyone", ""));
    let c = c.auth_user("jones", "s3cret").auth_user("brown", "pw");
    assert!(c.auth.check("jones", "s3cret") && c.auth.check("brown", "pw"));
    for (user, password) in [
        ("jones", "s3cre"),
        ("jones", "s3cret!"),
        ("Jones", "s3cret"),
    ] {
        assert!(!c.auth.check(user, password), "{user} {password}");
    }
    assert!(!c.auth.check("nobody", ""));
    assert!(!Auth::Off.check("jones", "s3cret"));
    // Debug output names users, never passwords.
    let shown = format!("{c:?}");
    assert!(shown.contains("Users([\"brown\", \"jones\"])"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn names_are_checked_when_added() {
    let mut c = Config::default();
    c.add_domain("a.test").unwrap();
    c.add_domain("[127.0.0.1]").unwrap();
    assert!(c.add_domain("a b").is_err());
    assert!(c.add_domain("").is_err());
    assert_eq!(c.local_domains(), ["a.test", "[127.0.0.1]"]);

    c.add_user("Jones").unwrap();
    for bad in ["../x", ".hidden", "-rf", "a/b", "jones.lock", ""] {
        assert!(c.add_user(bad).is_err(), "{bad:?}");
    }
    // Safe as file names, but no RCPT can reach them: they had started silently.
    for unreachable in ["jones@localhost", "a<b", "a>b", "a%b", "a!b"] {
        let e = c.add_user(unreachable).unwrap_err();
        assert!(e.0.contains("no recipient can name it"), "{e}");
        assert!(
            c.add_alias(unreachable, ["jones"]).is_err(),
            "{unreachable:?}"
        );
    }
    assert_eq!(
        c.users.as_ref().unwrap().iter().collect::<Vec<_>>(),
        ["jones"]
    );

    // One user however it is spelled; invisible and bidi characters refused.
    c.add_user("JOSE\u{301}").unwrap();
    c.add_user("jos\u{e9}").unwrap();
    for bad in [
        "alice\u{200b}",
        "\u{feff}alice",
        "\u{202e}ecila",
        "\u{301}x",
    ] {
        assert!(c.add_user(bad).is_err(), "{bad:?}");
        assert!(c.add_alias(bad, ["jones"]).is_err(), "{bad:?}");
    }
    assert_eq!(
        c.users.as_ref().unwrap().iter().collect::<Vec<_>>(),
        ["jones", "jos\u{e9}"]
    );
    assert!(c.add_domain("a\u{85}b.test").is_err());
    assert!(c.add_domain("\u{202e}tset.a").is_err());

    c.add_alias("Staff", ["jones", "smith@example.com"])
        .unwrap();
    assert!(c.add_alias("../x", ["jones"]).is_err());
    assert!(c.add_alias("none", Vec::<String>::new()).is_err());
    assert!(c.add_alias("pipe", ["|/bin/sh"]).is_err());
    assert!(c.add_alias("file", ["/etc/passwd"]).is_err());
    assert!(c.add_alias("inc", [":include:/x"]).is_err());
    assert!(c.add_alias("blank", ["jones", ""]).is_err());
    for bad in ["../etc", "jo\u{202e}nes", "\"jo/nes\"", ".x"] {
        assert!(c.add_alias("bare", [bad]).is_err(), "{bad}");
    }
    assert!(
        Config::default()
            .add_alias("quoted", ["\"jo\\nes\""])
            .is_ok()
    );
    // An address RCPT would refuse; one trailing dot is the domain written absolute.
    for bad in [
        "jones@mx.test..",
        "jones@",
        "jones@a_b.test",
        "jones@[1.2.3]",
        "a@b@example.com",
        "jones smith@example.com",
        "jo\u{202e}nes@example.com",
    ] {
        assert!(c.add_alias("dots", [bad]).is_err(), "{bad}");
    }
    for good in ["jones@mx.test.", "\"odd@name\"@example.com", "j@[IPv6:::1]"] {
        assert!(Config::default().add_alias("ok", [good]).is_ok(), "{good}");
    }
    assert_eq!(
        c.aliases,
        [(
            "staff".to_string(),
            vec!["jones".to_string(), "smith@example.com".to_string()]
        )]
    );
}
