//! The README's examples from other languages, run against the built binary: a pytest fixture
//! (examples/python/), nodemailer (examples/node/) and a shell script with curl
//! (examples/shell/), each with a failure rule, and AUTH where the client logs in. Each is skipped with a
//! printed reason when its interpreter or client is missing. The README quotes each file whole,
//! and this test checks that it still does.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{BIN, output_within};

fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The standard output of a run of `what` that must have succeeded (else the test fails,
/// showing both outputs).
fn succeeded(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn readme_quotes(file: &str) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(
        readme.contains(text.trim_end()),
        "README.md does not quote {file} as it is"
    );
}

#[test]
fn the_python_pytest_example_passes() {
    readme_quotes("examples/python/test_mboxd.py");
    if !have("python3", &["-m", "pytest", "--version"]) {
        println!("skipped: python3 with pytest not found (make test installs pytest with pip)");
        return;
    }
    let out = output_within(
        Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python"))
            .env("MBOXD", BIN),
        Duration::from_secs(60),
    );
    let stdout = succeeded(&out, "pytest");
    assert!(stdout.contains("3 passed"), "{stdout}");
}

#[test]
fn the_shell_curl_example_passes() {
    readme_quotes("examples/shell/send.sh");
    if !have("curl", &["--version"]) {
        println!("skipped: curl not found");
        return;
    }
    // As it is, and with a `sleep` that takes only whole seconds, as POSIX's does.
    let strict = tempfile::tempdir().expect("temp dir");
    let sleep = strict.path().join("sleep");
    std::fs::write(
        &sleep,
        "#!/bin/sh\ncase \"$1\" in *[!0-9]*) echo \"sleep: invalid time: $1\" >&2; exit 1;; esac\nexec /bin/sleep \"$1\"\n",
    )
    .expect("write sleep");
    std::fs::set_permissions(&sleep, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod sleep");
    let path = format!(
        "{}:{}",
        strict.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for path in [std::env::var("PATH").unwrap_or_default(), path] {
        let out = output_within(
            Command::new("sh")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/examples/shell/send.sh"
                ))
                .env("MBOXD", BIN)
                .env("PATH", &path),
            Duration::from_secs(30),
        );
        let stdout = succeeded(&out, &format!("send.sh with PATH={path}"));
        assert!(stdout.contains("delivered to"), "{stdout}");
        assert!(stdout.contains("refused with 452"), "{stdout}");
    }
}

#[test]
fn the_node_nodemailer_example_passes() {
    readme_quotes("examples/node/send.mjs");
    let modules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/node/node_modules/nodemailer"
    );
    if !have("node", &["--version"]) || !std::path::Path::new(modules).exists() {
        println!("skipped: node or nodemailer not found (make test installs nodemailer with npm)");
        return;
    }
    let out = output_within(
        Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/node/send.mjs"
            ))
            .env("MBOXD", BIN)
            .env("RUST_LOG", "warn"),
        Duration::from_secs(60),
    );
    let stdout = succeeded(&out, "send.mjs");
    assert!(stdout.contains("the failure rule gave 550"), "{stdout}");
}
