//! The catch-all bound: which mailbox names exist or are promised, and how many may.
//!
//! It exists because in catch-all mode every safe local part is a mailbox, so a client can
//! create one file per name it invents: thousands of files, and, before the writer's bound,
//! thousands of descriptors. The session is sans-I/O, so the names are kept in memory: read once
//! from the mail directory at start, then each new name is reserved when a RCPT names it, under
//! one lock, so concurrent sessions can never reserve past the bound. A reservation lasts until
//! the server stops, whether or not a message follows (a RCPT without DATA must not be a free way
//! around the bound); the next start counts only the files that exist.
//!
//! What counts, at start: every regular file (not a symbolic link, directory or other kind) in
//! the mail directory whose name is exactly the mailbox name a RCPT could produce for it
//! ([`mailbox_name`] of the name is the name itself: so no dot files, no `.lock` files, no upper
//! case, nothing unsafe). Names already counted are always accepted, even past the bound.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::escape::Escaped;
use crate::names::mailbox_name;

/// The mailbox names a catch-all server knows, and the most it may know.
#[derive(Debug)]
pub(crate) struct Mailboxes {
    known: Mutex<HashSet<String>>,
    limit: usize,
    /// The bound was reached and logged: it is logged once per run.
    full_logged: AtomicBool,
}

impl Mailboxes {
    /// A registry that knows `existing` and admits new names while it knows fewer than `limit`.
    pub(crate) fn new(existing: impl IntoIterator<Item = String>, limit: usize) -> Mailboxes {
        Mailboxes {
            known: Mutex::new(existing.into_iter().collect()),
            limit,
            full_logged: AtomicBool::new(false),
        }
    }

    /// A registry of the mailbox files in `dir` (see the module's rule), admitting new names
    /// while it knows fewer than `limit`.
    pub(crate) fn scan(dir: &Path, limit: usize) -> io::Result<Mailboxes> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            // `file_type` does not follow a symbolic link, as the writer never does.
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str()
                && mailbox_name(name).as_deref() == Some(name)
            {
                names.push(name.to_string());
            }
        }
        if names.len() >= limit {
            log::warn!(
                "catch-all: {} mailbox files in {}, at or over --max-mailboxes {limit}: new names \
                 get 452",
                names.len(),
                dir.display()
            );
        }
        Ok(Mailboxes::new(names, limit))
    }

    /// True when `name` may be delivered to: it is known, or it is new and the bound has room,
    /// in which case it is reserved now. A refusal is logged once per run, at the first one.
    pub(crate) fn admit(&self, name: &str) -> bool {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.contains(name) {
            return true;
        }
        if known.len() < self.limit {
            known.insert(name.to_string());
            return true;
        }
        if !self.full_logged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "catch-all: {} mailboxes, the --max-mailboxes bound: new names (the first <{}>) \
                 are refused with 452 until fewer files exist at a restart",
                known.len(),
                Escaped(name)
            );
        }
        false
    }

    /// Names known now, existing or reserved.
    pub(crate) fn len(&self) -> usize {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The bound.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn new_names_are_reserved_up_to_the_bound_and_known_ones_always_pass() {
        let m = Mailboxes::new(["alice".to_string(), "bob".to_string()], 3);
        assert!(m.admit("alice"));
        assert!(m.admit("carol"));
        assert!(!m.admit("dave"));
        assert!(m.admit("carol"), "a reserved name stays admitted");
        assert!(m.admit("bob"));
        assert_eq!(m.len(), 3);
        // Past the bound from the start: only the existing names.
        let m = Mailboxes::new(["a".to_string(), "b".to_string()], 1);
        assert!(m.admit("a") && m.admit("b") && !m.admit("c"));
    }

    #[test]
    fn concurrent_sessions_never_reserve_past_the_bound() {
        let m = Arc::new(Mailboxes::new(Vec::new(), 100));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    (0..50).filter(|n| m.admit(&format!("t{t}n{n}"))).count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!((admitted, m.len()), (100, 100));
    }

    #[test]
    fn only_files_named_as_a_rcpt_would_name_them_count() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "alice",
            "bob.smith",
            "josé",
            "README",
            ".hidden",
            "alice.lock",
        ] {
            fs::write(d.join(name), b"").unwrap();
        }
        fs::write(d.join(".alice.lock.mboxd-1-2"), b"").unwrap();
        fs::create_dir(d.join("folder")).unwrap();
        std::os::unix::fs::symlink(d.join("alice"), d.join("link")).unwrap();
        let m = Mailboxes::scan(d, 10).unwrap();
        let mut known: Vec<String> = m.known.lock().unwrap().iter().cloned().collect();
        known.sort();
        assert_eq!(known, ["alice", "bob.smith", "josé"]);
        assert!(Mailboxes::scan(&d.join("missing"), 10).is_err());
    }
}
