//! How one batch of jobs is cut into commits: in order, each touching at most the writer's
//! bound of open mailboxes, so a batch that names many mailboxes never opens more files at once
//! than that bound.

use std::collections::HashSet;

use super::Waiting;

/// Splits a batch, in order, into groups that each touch at most `bound` distinct mailboxes. A
/// job is never split: one that alone touches more than `bound` is a group of its own.
pub(super) fn groups(batch: Vec<Waiting>, bound: usize) -> Vec<Vec<Waiting>> {
    let mut sizes = Vec::new();
    let mut names: HashSet<&str> = HashSet::new();
    let mut jobs_in_group = 0;
    for item in &batch {
        let mailboxes = || item.job.entries.iter().map(|e| e.mailbox.as_str());
        let new: HashSet<&str> = mailboxes().filter(|m| !names.contains(m)).collect();
        if jobs_in_group > 0 && names.len() + new.len() > bound {
            sizes.push(jobs_in_group);
            jobs_in_group = 0;
            names.clear();
        }
        names.extend(mailboxes());
        jobs_in_group += 1;
    }
    if jobs_in_group > 0 {
        sizes.push(jobs_in_group);
    }
    let mut jobs = batch.into_iter();
    sizes
        .into_iter()
        .map(|n| jobs.by_ref().take(n).collect())
        .collect()
}
