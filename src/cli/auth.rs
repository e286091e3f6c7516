//! The `--auth-file` loader: `user:password` lines into [`Config::auth`].
//!
//! It exists beside `cli.rs` (which parses the flags) because a password file has its own rules:
//! a password is taken exactly as written, so `#` starts a comment only as a line's first character
//! other than white space.

use std::path::Path;

use mboxd::{Auth, Config, ConfigError};

pub(crate) const AUTH_EXCLUSIVE: &str = "--auth-accept-any and --auth-file cannot be used together";

/// Adds the accounts of an AUTH file to `config`: `user:password` lines; a line whose first
/// non-blank character is `#` is a comment, and blank lines are skipped. The name is everything
/// before the first `:` with the blanks around it removed; the password is everything after it,
/// exactly (so it may hold `:`, `#` and spaces; a CRLF line end is not part of it). Neither may
/// be empty, and the name may hold no control character. Even an empty file turns checking on:
/// then no credentials are accepted.
pub(crate) fn load_auth(path: &Path, config: &mut Config) -> Result<(), ConfigError> {
    let text = super::read(path)?;
    if !matches!(config.auth, Auth::Users(_)) {
        config.auth = Auth::Users(Default::default());
    }
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = |why: &str| ConfigError(format!("{}:{}: {why}", path.display(), i + 1));
        let (user, password) = line
            .split_once(':')
            .ok_or_else(|| at("expected `user:password`"))?;
        let user = user.trim();
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(at("empty user name, or a control character in it"));
        }
        if password.is_empty() {
            return Err(at(&format!("user {user:?} has an empty password")));
        }
        if let Auth::Users(users) = &mut config.auth {
            users.insert(user.to_string(), password.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::run;
    use std::fs;

    #[test]
    fn auth_flags_and_file() {
        assert_eq!(run(&[]).unwrap().auth, Auth::Off);
        let c = run(&["--auth-accept-any", "--auth-required"]).unwrap();
        assert_eq!((c.auth, c.auth_required), (Auth::AcceptAny, true));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth");
        let path = file.to_str().unwrap();
        fs::write(
            &file,
            "# test accounts\njones:s3cret\n  brown : pass word # not a comment\n\n  # x\nsmith:a:b\n",
        )
        .unwrap();
        let c = run(&["--auth-file", path]).unwrap();
        assert!(!c.auth_required);
        let Auth::Users(users) = &c.auth else {
            panic!("{:?}", c.auth)
        };
        let mut accounts: Vec<_> = users
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        accounts.sort();
        assert_eq!(
            accounts,
            [
                ("brown", " pass word # not a comment"),
                ("jones", "s3cret"),
                ("smith", "a:b")
            ]
        );
        // Passwords never show in the configuration's Debug output.
        assert!(!format!("{c:?}").contains("s3cret"));

        // A second file adds to the first.
        let more = dir.path().join("more");
        fs::write(&more, "green:pw\n").unwrap();
        let c = run(&["--auth-file", path, "--auth-file", more.to_str().unwrap()]).unwrap();
        assert!(matches!(&c.auth, Auth::Users(u) if u.len() == 4));

        // An empty file still checks, and accepts no one.
        fs::write(&more, "# nobody\n").unwrap();
        let c = run(&["--auth-file", more.to_str().unwrap()]).unwrap();
        assert_eq!(c.auth, Auth::Users(Default::default()));

        for (content, why) in [
            ("jones\n", ":1: expected `user:password`"),
            ("ok:pw\n:pw\n", ":2: empty user name"),
            (
                "jo\u{7}nes:pw\n",
                ":1: empty user name, or a control character",
            ),
            ("jones:\n", ":1: user \"jones\" has an empty password"),
        ] {
            fs::write(&file, content).unwrap();
            let e = run(&["--auth-file", path]).unwrap_err();
            assert!(
                e.0.starts_with(path) && e.0.contains(why),
                "{content:?}: {e}"
            );
        }
        assert!(run(&["--auth-file", "/nonexistent/auth"]).is_err());
        assert!(run(&["--auth-file"]).is_err());
        fs::write(&file, "jones:pw\n").unwrap();
        for args in [
            &["--auth-accept-any", "--auth-file", path][..],
            &["--auth-file", path, "--auth-accept-any"],
        ] {
            assert_eq!(run(args).unwrap_err().0, AUTH_EXCLUSIVE, "{args:?}");
        }
        // Refused by the library's check, before anything is created. Were it not, the server
        // would still start on a free port in a directory of this test's own.
        let mail = dir.path().join("mail");
        let mail = mail.to_str().unwrap();
        let flags = [
            "--auth-required",
            "--listen",
            "127.0.0.1:0",
            "--mail-dir",
            mail,
        ];
        let err = mboxd::Server::start(run(&flags).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("(--auth-required) needs AUTH on"),
            "{err}"
        );
        assert!(!Path::new(mail).exists(), "the mail directory was made");
    }
}
