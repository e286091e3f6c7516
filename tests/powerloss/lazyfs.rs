//! LazyFS, the file system that stands in for a disk losing power: whether the test can run here
//! (root, `/dev/fuse`, `fusermount3`, a LazyFS binary), and one mount of it that drops every
//! unsynced write on command and is unmounted however the test ends. It is a module of its own
//! because the mount, its two FIFOs and their cleanup know nothing of mboxd or SMTP.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::WAIT;
use crate::support::wait_bounded;

// ---------------------------------------------------------------------------------------------
// Prerequisites

/// The LazyFS binary, or why the test cannot run here.
pub(crate) fn prerequisites() -> Result<PathBuf, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status ({e}), so cannot tell if root"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .ok_or("no Uid line in /proc/self/status")?;
    if euid != "0" {
        return Err(format!("not root (uid {euid}); LazyFS needs root to mount"));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    if find_in_path("fusermount3").is_none() {
        return Err("fusermount3 not found (Debian package fuse3)".into());
    }
    if let Some(named) = std::env::var_os("LAZYFS").filter(|v| !v.is_empty()) {
        let named = PathBuf::from(named);
        return if is_executable(&named) {
            Ok(named)
        } else {
            Err(format!(
                "LAZYFS={} is not an executable file",
                named.display()
            ))
        };
    }
    let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/lazyfs/build.sh");
    let script = fs::read_to_string(&build).map_err(|e| {
        format!(
            "LAZYFS is not set and {} cannot be read ({e})",
            build.display()
        )
    })?;
    // build.sh's default destination, from its `DEST=${1:-...}` line.
    let dest = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("DEST=${1:-"))
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| format!("no DEST=${{1:-...}} line in {}", build.display()))?;
    let binary = Path::new(dest).join("lazyfs/build/lazyfs");
    if is_executable(&binary) {
        Ok(binary)
    } else {
        Err(format!(
            "LazyFS is not built ({} missing): `make test` builds it, or set LAZYFS=",
            binary.display()
        ))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

// ---------------------------------------------------------------------------------------------
// LazyFS

/// One LazyFS mount, unmounted and its process ended when dropped, also when the test fails.
pub(crate) struct LazyFs {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
    done_path: PathBuf,
    /// The faults FIFO, opened read-write for the whole mount so a command written to it is
    /// never lost, and opening it never blocks.
    faults: Option<File>,
    /// Lines LazyFS writes to its completion FIFO.
    done: Option<Receiver<io::Result<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl LazyFs {
    /// Mounts `backing` at `mnt` with LazyFS in the foreground and waits until the mount is live.
    pub(crate) fn mount(binary: &Path, dir: &Path, backing: &Path, mnt: &Path) -> LazyFs {
        let faults_path = dir.join("faults.fifo");
        let done_path = dir.join("done.fifo");
        // LazyFS logs to its stdout when `logfile` is empty; both streams go to one file.
        let log = dir.join("lazyfs.out");
        let config = dir.join("lazyfs.toml");
        // The cache is allocated up front (1 GiB takes seconds); a round writes a few MiB.
        fs::write(
            &config,
            format!(
                "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n\
                 [cache]\napply_eviction=false\n\
                 [cache.simple]\ncustom_size=\"128mb\"\nblocks_per_page=1\n\
                 [filesystem]\nlog_all_operations=false\nlogfile=\"\"\n",
                faults_path.display(),
                done_path.display(),
            ),
        )
        .unwrap();
        let output = File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg(mnt)
            .arg("--config-path")
            .arg(&config)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", backing.display()))
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("start lazyfs");
        let mut fs = LazyFs {
            child,
            mnt: mnt.to_path_buf(),
            log,
            done_path: done_path.clone(),
            faults: None,
            done: None,
            reader: None,
        };
        // No signal tells when a FUSE mount is live: poll the mount table, with a deadline.
        let deadline = Instant::now() + WAIT;
        while !is_mounted(mnt) {
            if let Some(status) = fs.child.try_wait().unwrap() {
                panic!("lazyfs exited before mounting: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "lazyfs did not mount within {WAIT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        // LazyFS creates both FIFOs before it mounts.
        fs.faults = Some(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&faults_path)
                .expect("open the faults FIFO"),
        );
        // Opening a FIFO to read blocks until LazyFS opens it to write, so a thread does it.
        let (tx, rx) = mpsc::channel();
        fs.done = Some(rx);
        fs.reader = Some(
            thread::Builder::new()
                .name("lazyfs-done-fifo".into())
                .spawn(move || {
                    let fifo = match File::open(&done_path) {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    for line in BufReader::new(fifo).lines() {
                        let end = line.is_err();
                        if tx.send(line).is_err() || end {
                            return;
                        }
                    }
                })
                .unwrap(),
        );
        fs
    }

    /// Drops every unsynced write, as a power cut would, and waits until LazyFS says it is done.
    pub(crate) fn clear_cache(&mut self) {
        let faults = self.faults.as_mut().unwrap();
        faults.write_all(b"lazyfs::clear-cache\n").unwrap();
        match self.done.as_ref().unwrap().recv_timeout(WAIT) {
            Ok(Ok(line)) => assert_eq!(line.trim(), "finished::clear-cache"),
            Ok(Err(e)) => panic!("reading LazyFS's completion FIFO: {e}"),
            Err(e) => panic!("LazyFS did not confirm clear-cache within {WAIT:?}: {e}"),
        }
    }

    /// Unmounts and waits for LazyFS to exit, failing the test if either does not happen.
    pub(crate) fn unmount(&mut self) {
        let mut umount = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut umount, WAIT);
        assert!(status.success(), "fusermount3 -u failed: {status}");
        assert!(!is_mounted(&self.mnt), "still mounted after fusermount3 -u");
        // LazyFS (a47a5ba) never joins its fault thread, so it ends in std::terminate (SIGABRT)
        // after every unmount: that it exits is checked, not how.
        wait_bounded(&mut self.child, WAIT);
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        // After a clean `unmount` both are no-ops. Otherwise the daemon goes first, so that
        // unmounting cannot wait on it; a dead daemon's mount unmounts at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.mnt) {
            let quiet = |args: &[&str]| {
                Command::new("fusermount3")
                    .args(args)
                    .arg(&self.mnt)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            // A lazy unmount if something still holds a file open on it.
            if !quiet(&["-u"]) {
                quiet(&["-u", "-z"]);
            }
        }
        self.faults = None;
        // If the reader still waits to open the completion FIFO, a writer that comes and goes
        // lets it open and then read end of file.
        drop(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.done_path),
        );
        if let Some(reader) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
        if thread::panicking() {
            eprintln!("--- end of {}:", self.log.display());
            eprintln!("{}", tail(&self.log, 20));
        }
    }
}

fn is_mounted(mnt: &Path) -> bool {
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(want) = mnt.to_str() else {
        return false;
    };
    // The fifth field is the mount point.
    table.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
