//! The `mboxd` command: flags in, a running server out, until SIGINT or SIGTERM.
//!
//! It exists only to turn the command line into a [`mboxd::Config`] (`cli`), set up logging and
//! the allocator (`os`), print the bound addresses for whoever started it, wait for a shutdown
//! signal (`os`), and map every failure to an exit code: 0 after a clean shutdown, 1 for a
//! failure while running, 2 when the server cannot start (a bad command line or configuration,
//! an unusable mail directory or address, a ready file, thread or signal mask that cannot be
//! had) or `--help`/`--version` cannot write its text (a closed pipe, a full disk; a closed
//! stdout is taken as one that discards, as Rust's standard library takes it). Nothing here prints with a macro that
//! panics when its stream cannot be written.
// Denied, not forbidden, so that `os` (and only it) can allow it.
#![deny(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::unwrap_used,
        clippy::expect_used
    )
)]

mod cli;
// The same file, src/decimal.rs, that the library compiles for its `--fail` rules: the flags in
// seconds are read with it.
mod decimal;
// The same file, src/os.rs, that the library compiles as its own private `os` module: the one
// place with `unsafe`. The binary calls only its signal and allocator functions; the fcntl lock
// and the socket send in it are the library's, hence the allow.
#[allow(dead_code)]
mod os;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cli::Invocation;
use mboxd::Server;

/// Allocations from this size up get a mapping of their own (glibc's default starting value,
/// fixed so that glibc does not raise it).
const MMAP_THRESHOLD: usize = 128 * 1024;

/// How soon after the shutdown signal the same signal again counts as the same one.
const REPEATED: Duration = Duration::from_millis(200);

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

fn main() -> ExitCode {
    // Before anything is written: an error or log line appended to a file over a file-size
    // limit would raise SIGXFSZ, whose default action kills the process (`Server::start` does
    // the same for the library, and logs a failure).
    let _ = os::ignore_file_size_signal();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // Not eprintln!, which panics when stderr cannot be written (a closed pipe, a full
            // disk): the exit code still says what happened.
            let _ = writeln!(std::io::stderr(), "mboxd: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Writes `text` to stdout; a failure to (a closed pipe, a full disk) exits 2.
fn write_out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure {
            code: 2,
            message: format!("cannot write to stdout: {e}"),
        })
}

fn run() -> Result<(), Failure> {
    let usage = |message: String| Failure { code: 2, message };
    // `std::env::args` would panic on an argument that is not UTF-8 (a path may be anything).
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| usage(format!("argument {arg:?} is not valid UTF-8")))
        })
        .collect::<Result<Vec<String>, Failure>>()?;
    let config = match cli::parse(args).map_err(|e| usage(e.to_string()))? {
        Invocation::Run(config) => *config,
        // Not print!, which panics when stdout cannot be written: that is a usage failure.
        Invocation::Help => return write_out(cli::USAGE),
        Invocation::Version => return write_out(&format!("mboxd {}\n", env!("CARGO_PKG_VERSION"))),
    };
    // Message buffers (see --max-inflight-bytes) each get their own mapping and are returned to
    // the system when freed, so resident memory follows the in-flight budget.
    if !os::fix_mmap_threshold(MMAP_THRESHOLD) {
        log::debug!("cannot fix the malloc mmap threshold (not glibc)");
    }
    // Before any thread starts, so every thread inherits the mask and only sigwait sees them.
    os::block_shutdown_signals().map_err(|e| Failure {
        code: 2,
        message: format!("cannot block signals: {e}"),
    })?;
    let server = Server::start(config).map_err(|e| usage(e.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    for addr in server.local_addrs() {
        // Test harnesses wait for these lines.
        let _ = writeln!(stdout, "listening on {addr}");
    }
    let _ = stdout.flush();
    drop(stdout);
    let signal = os::wait_for_shutdown_signal().map_err(|e| Failure {
        code: 1,
        message: format!("cannot wait for signals: {e}"),
    })?;
    log::info!("signal {signal}: shutting down");
    let first = Instant::now();
    // A second signal exits at once; the same signal again within REPEATED is the first one
    // over: GNU timeout(1), for one, sends it to the process and then to its process group.
    let spawned = std::thread::Builder::new()
        .name("mboxd-second-signal".into())
        .spawn(move || {
            while let Ok(again) = os::wait_for_shutdown_signal() {
                if again == signal && first.elapsed() < REPEATED {
                    log::info!("signal {again} again at once: taken as the same one");
                    continue;
                }
                log::warn!("signal {again} again: exiting now");
                std::process::exit(1);
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot watch for a second signal: {e}");
    }
    server.shutdown();
    log::info!("shut down cleanly");
    Ok(())
}
