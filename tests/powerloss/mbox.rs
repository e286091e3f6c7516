//! What the power-loss test writes and reads back: each message's body, which follows from its
//! id, and a strict reader of the mboxes left after the cut (entries, whole messages, how often
//! each is in each mailbox) and of the lock files left in the mail directory. It is a module of
//! its own so that every check a round makes rests on one small parser.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::MAILBOXES;

/// A message whose every byte follows from its id, 1 to 10 KiB long.
pub(crate) fn body_of(id: &str) -> String {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let lines = 20 + hash % 300;
    format!(
        "Subject: {id}\n\n{}end of {id}",
        format!("{id} payload line\n").repeat(lines as usize)
    )
}

// ---------------------------------------------------------------------------------------------
// Reading the mboxes back

/// Splits an mbox into entries: each starts with a `From ` line at the start of the file or
/// after a blank line, and each, the last included, ends with a blank line (`\n\n`).
fn parse_mbox(text: &str) -> Result<Vec<&str>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    if !text.starts_with("From ") {
        return Err(format!("does not start with a From line: {:?}", head(text)));
    }
    let mut starts = vec![0];
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > 0 && line.starts_with("From ") && text[..pos].ends_with("\n\n") {
            starts.push(pos);
        }
        pos += line.len();
    }
    starts.push(text.len());
    let entries: Vec<&str> = starts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
    let last = entries[entries.len() - 1];
    if !last.ends_with("\n\n") {
        return Err(format!("the last entry is torn: ends {:?}", end(last)));
    }
    Ok(entries)
}

/// At most the first 80 bytes of `s`, cut at a character boundary.
fn head(s: &str) -> &str {
    let mut i = s.len().min(80);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// At most the last 80 bytes of `s`, cut at a character boundary.
fn end(s: &str) -> &str {
    let mut i = s.len().saturating_sub(80);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The id of a whole entry written by this test, or what is wrong with it.
fn whole_message(entry: &str) -> Result<&str, String> {
    if !entry.starts_with("From a@b.test ") {
        return Err(format!("unexpected From line: {:?}", head(entry)));
    }
    let id = entry
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .ok_or_else(|| format!("no Subject in {:?}", head(entry)))?;
    if !entry.ends_with(&format!("\n{}\n\n", body_of(id))) {
        return Err(format!("{id} is not whole: ends {:?}", end(entry)));
    }
    Ok(id)
}

/// Every mailbox's entries by id, counted; fails the test if an mbox does not parse or holds
/// anything but whole messages of this test.
pub(crate) fn read_mailboxes(mail: &Path) -> Vec<HashMap<String, usize>> {
    (0..MAILBOXES)
        .map(|b| {
            let path = mail.join(format!("box{b}"));
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => panic!("reading {}: {e}", path.display()),
            };
            let text =
                String::from_utf8(bytes).unwrap_or_else(|e| panic!("box{b} is not UTF-8: {e}"));
            let entries = parse_mbox(&text).unwrap_or_else(|e| panic!("box{b} is no mbox: {e}"));
            let mut count = HashMap::new();
            for entry in entries {
                let id = whole_message(entry).unwrap_or_else(|e| panic!("box{b}: {e}"));
                *count.entry(id.to_string()).or_insert(0) += 1;
            }
            count
        })
        .collect()
}

/// Every lock file in the mail directory, with its size: `<mbox>.lock` and any other name with
/// `.lock` in it (mboxd's own `.<mbox>.lock.mboxd-...` names).
pub(crate) fn lock_files(mail: &Path) -> Vec<String> {
    let mut locks: Vec<String> = match fs::read_dir(mail) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        dir => dir
            .expect("the mail directory")
            .map(|e| e.expect("a directory entry"))
            .filter(|e| e.file_name().to_string_lossy().contains(".lock"))
            .map(|e| {
                let len = e.metadata().map_or(0, |m| m.len());
                format!("{} ({len} bytes)", e.file_name().to_string_lossy())
            })
            .collect(),
    };
    locks.sort();
    locks
}
