//! Unit tests of the rule parser, the glob matcher, counts and the seeded draws.

use super::*;

fn rule(s: &str) -> FailRule {
    FailRule::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn error(s: &str) -> String {
    FailRule::parse(s).expect_err(s).0
}

fn faults(rules: &[&str], seed: u64) -> Faults {
    let mut config = Config::default().fail_seed(seed);
    config.hostname = "mx.test".into();
    for r in rules {
        config = config.fail(rule(r));
    }
    Faults::new(&config)
}

#[test]
fn the_issues_examples_parse() {
    let r = rule("rcpt:busy-*@*=450");
    assert_eq!(
        (r.stage, r.effect.clone(), r.count, r.p),
        (Stage::Rcpt, Effect::Reply(450, None), None, None)
    );
    assert!(r.matches(&["Busy-1@Example.TEST"]) && !r.matches(&["idle@x"]));
    assert_eq!(rule("data-end:*=452").stage, Stage::DataEnd);
    assert_eq!(
        rule("mail:slow@*=delay:5s").effect,
        Effect::Delay(Duration::from_secs(5))
    );
    assert_eq!(rule("connect=421").pattern, None);
    assert_eq!(rule("rcpt:*=451,count=1").count, Some(1));
    let r = rule("data-end:*=drop,p=0.1");
    assert_eq!((r.effect.clone(), r.p), (Effect::Drop, Some(0.1)));
    assert_eq!(r.to_string(), "data-end:*=drop,p=0.1");
}

#[test]
fn actions_texts_and_options() {
    assert_eq!(
        rule("rcpt=552 mailbox full").effect,
        Effect::Reply(552, Some("mailbox full".into()))
    );
    // A comma inside the text stays in it; options are only the trailing `,key=value`s.
    let r = rule("data=451 busy, try later,count=2,p=1");
    assert_eq!(
        (r.effect.clone(), r.count, r.p),
        (
            Effect::Reply(451, Some("busy, try later".into())),
            Some(2),
            Some(1.0)
        )
    );
    assert_eq!(
        rule("helo=delay:500ms").effect,
        Effect::Delay(Duration::from_millis(500))
    );
    assert_eq!(
        rule("HELO=Delay:1.5s").effect,
        Effect::Delay(Duration::from_millis(1500))
    );
    // The first `=` ends the pattern.
    assert_eq!(rule("mail:x@*=DROP").effect, Effect::Drop);
}

#[test]
fn malformed_rules_say_what_is_wrong() {
    for (bad, why) in [
        ("rcpt", "expected STAGE[:PATTERN]=ACTION"),
        ("quit=450", "unknown stage \"quit\""),
        ("rcpt:=450", "empty pattern"),
        ("connect:1.2.3.4=421", "connect takes no pattern"),
        ("rcpt=250", "code 250 is not a failure"),
        ("rcpt=600", "code 600 is not a failure"),
        ("rcpt=45", "action \"45\": expected a 4xx or 5xx reply code"),
        ("rcpt=450busy", "action \"450busy\""),
        ("rcpt=explode", "action \"explode\""),
        ("connect=554 caf\u{e9}", "printable ASCII and tab"),
        ("rcpt=550 a\u{202e}b", "printable ASCII and tab"),
        ("rcpt=550 a\u{2028}b", "printable ASCII and tab"),
        ("rcpt=550 a\u{7f}b", "printable ASCII and tab"),
        ("rcpt=", "action \"\""),
        ("mail=delay:5", "expected a number and a unit"),
        ("mail=delay:-1s", "at most an hour"),
        ("mail=delay:2h", "expected a number and a unit"),
        ("mail=delay:7200s", "at most an hour"),
        (
            "rcpt=451,count=0",
            "count=0: expected a whole number from 1",
        ),
        ("rcpt=451,count=x", "count=x"),
        (
            "rcpt=451,count=+3",
            "count=+3: expected a whole number from 1",
        ),
        (
            "rcpt=451,p=1.5",
            "p=1.5: expected a probability from 0 to 1",
        ),
        ("rcpt=451,p=NaN", "p=NaN"),
        (
            "rcpt=451,p=1e-1",
            "p=1e-1: expected a probability from 0 to 1",
        ),
        ("mail=delay:1e3ms", "at most an hour"),
        ("rcpt=451,p=0.5,p=0.1", "p given twice"),
        ("rcpt=451,cnt=3", "unknown option \"cnt\""),
    ] {
        let e = error(bad);
        assert!(e.starts_with(&format!("--fail {bad:?}: ")), "{e}");
        assert!(e.contains(why), "{bad}: {e}");
    }
    assert!(FailRule::parse("rcpt:a\u{7}b=450").is_err());
    assert!("rcpt=450".parse::<FailRule>().is_ok());
}

#[test]
fn glob_matches_whole_subjects() {
    let g = |p: &str, s: &str| {
        glob(
            &p.chars().collect::<Vec<_>>(),
            &s.chars().collect::<Vec<_>>(),
        )
    };
    assert!(g("*", "") && g("*", "abc") && g("a*c", "abc") && g("a*c", "ac"));
    assert!(g("*@*", "x@y") && !g("*@*", "xy"));
    assert!(g("a*b*c", "axxbyybzc") && !g("a*b*c", "axxbyyb"));
    assert!(!g("abc", "abcd") && !g("abcd", "abc") && g("", ""));
    assert!(g("**a**", "bab"));
    assert!(g("jos\u{e9}*", "jos\u{e9}@x"));
    // Bounded work on the classic exponential case.
    let pattern = "a*".repeat(50) + "b";
    let subject = "a".repeat(5000);
    let start = std::time::Instant::now();
    assert!(!g(&pattern, &subject));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn first_firing_rule_wins_and_delays_add_up() {
    let f = faults(
        &[
            "rcpt=delay:1s",
            "rcpt:b*=delay:2s",
            "rcpt:b*=550",
            "rcpt=451",
        ],
        0,
    );
    let (delay, fault) = f.check(Stage::Rcpt, &["bob@x"], "t");
    assert_eq!(delay, Duration::from_secs(3));
    let Some(Fault::Refuse(r)) = fault else {
        panic!("{fault:?}")
    };
    assert_eq!((r.code, r.enhanced), (550, Some("5.1.1")));
    assert_eq!(
        f.check(Stage::Mail, &["bob@x"], "t"),
        (Duration::ZERO, None)
    );
    let (_, fault) = f.check(Stage::Rcpt, &["al@x"], "t");
    assert!(matches!(fault, Some(Fault::Refuse(r)) if r.code == 451));
}

#[test]
fn counts_and_421() {
    let f = faults(&["helo=421,count=2"], 0);
    for _ in 0..2 {
        let (_, fault) = f.check(Stage::Helo, &["c"], "t");
        let Some(Fault::Close(r)) = fault else {
            panic!("{fault:?}")
        };
        assert_eq!(
            r.text,
            "mx.test Service not available, closing transmission channel"
        );
    }
    assert_eq!(f.check(Stage::Helo, &["c"], "t").1, None);
}

#[test]
fn draws_repeat_with_their_seed() {
    let pattern = |seed: u64| {
        let f = faults(&["rcpt=450,p=0.5"], seed);
        (0..64)
            .map(|_| f.check(Stage::Rcpt, &["a@b"], "t").1.is_some())
            .collect::<Vec<_>>()
    };
    let a = pattern(1);
    assert_eq!(a, pattern(1));
    assert_ne!(a, pattern(2));
    let fired = a.iter().filter(|x| **x).count();
    assert!((16..=48).contains(&fired), "{fired} of 64");
    let never = faults(&["rcpt=450,p=0"], 3);
    let always = faults(&["rcpt=450,p=1"], 3);
    for _ in 0..1000 {
        assert!(never.check(Stage::Rcpt, &[""], "t").1.is_none());
        assert!(always.check(Stage::Rcpt, &[""], "t").1.is_some());
    }
}

#[test]
fn a_stage_is_armed_only_by_a_rule_for_it() {
    let f = faults(&["rcpt:*@x=450", "data-end=drop"], 1);
    assert!(f.armed(Stage::Rcpt) && f.armed(Stage::DataEnd));
    assert!(!f.armed(Stage::Mail) && !f.armed(Stage::Connect));
    assert!(!Faults::default().armed(Stage::Rcpt));
}

#[test]
fn every_code_has_an_enhanced_code_of_its_class() {
    for code in 400..600u16 {
        for (_, stage) in STAGES {
            let (enhanced, text) = default_reply(code, stage);
            assert!(enhanced.starts_with(if code < 500 { "4." } else { "5." }));
            assert!(!text.is_empty());
        }
    }
    assert_eq!(default_reply(552, Stage::Rcpt).0, "5.2.2");
    assert_eq!(default_reply(552, Stage::DataEnd).0, "5.3.4");
    assert_eq!(default_reply(553, Stage::Mail).0, "5.1.7");
    assert_eq!(default_reply(455, Stage::Mail).0, "4.5.4");
}
