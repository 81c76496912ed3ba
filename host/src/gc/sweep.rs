//! Deleting what the mark left, in an order a crash cannot hurt: manifest revisions (with their
//! tag-history entries and referrers-index entries) first, made durable, then referrers-index
//! entries whose referrer is gone, then each blob: its layer links, then its data. A blob a kept
//! manifest references is never a candidate, so a run killed at any point leaves only
//! unreferenced leftovers, which the next run finds again.
//!
//! Each candidate is checked once more just before it goes: still older than the cutoff (the
//! grace period), and not recorded by a server during the run (the handshake in `journal`, in
//! batches for blobs: doom a batch, read the journal once).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::{stream, FutureExt, StreamExt};

use super::journal::{self, Journal};
use super::mark::Plan;
use super::paths as gc_paths;
use super::progress::Progress;
use super::report::Report;
use super::scan::{blob_info, BlobInfo, Link, RepoScan, Scan};
use crate::registry::{paths, Digest};
use crate::storage::{StorageDriver, StorageError};

/// Blob candidates per handshake batch.
const BATCH: usize = 512;

/// What the sweep needs besides the plan.
pub struct Sweep<'a> {
    pub driver: &'a dyn StorageDriver,
    pub cutoff: SystemTime,
    /// The run's id; `None`: a dry run, which deletes nothing.
    pub run: Option<&'a str>,
    /// The journal of a server in this process (its writes are recorded in memory).
    pub local: Option<&'a Journal>,
    pub concurrency: usize,
    pub progress: &'a dyn Progress,
    /// Renews the lock now and then; false once it is lost (another run holds it): then
    /// nothing more is deleted.
    pub tick: &'a (dyn Fn() -> futures_util::future::BoxFuture<'a, bool> + Send + Sync),
}

/// Counts shared by the concurrent deletions.
#[derive(Default)]
struct Tally {
    report: Mutex<Report>,
    /// Manifests spared at the last moment, and everything they reference.
    spared: Mutex<HashSet<Digest>>,
    /// Revision links deleted, to make durable before any blob goes.
    deleted: Mutex<Vec<String>>,
}

impl Tally {
    fn add(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.report.lock().unwrap())
    }
}

fn gone_ok(r: Result<(), StorageError>) -> Result<(), StorageError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

impl Sweep<'_> {
    /// Runs the sweep; adds its figures to `report`.
    pub async fn run(&self, scan: &Scan, plan: &Plan, report: &mut Report) {
        let tally = Tally::default();
        let total = plan.repos.iter().map(|r| r.manifests.len()).sum::<usize>() + plan.candidates.len();
        self.progress.phase("sweep", total as u64);
        // Repositories side by side; within one, parents before children.
        let tally_ref = &tally;
        let repos: Vec<BoxFuture<'_, ()>> =
            scan.repos.iter().zip(&plan.repos).map(|(repo, rp)| self.repo(repo, rp, tally_ref).boxed()).collect();
        stream::iter(repos).buffer_unordered(self.concurrency).collect::<Vec<()>>().await;
        let deleted = std::mem::take(&mut *tally.deleted.lock().unwrap());
        let held = (self.tick)().await;
        if !deleted.is_empty() {
            if let Err(e) = self.driver.sync(&deleted).await {
                // Not durable: deleting blobs now could outlive the manifests after a crash.
                tracing::warn!(error = %e, "garbage collection: cannot make manifest deletions durable; blobs kept");
                tally.add(|r| r.errors += 1);
                self.finish(tally, report);
                return;
            }
        }
        if !held {
            self.finish(tally, report);
            return;
        }
        let spared = tally.spared.lock().unwrap().clone();
        let candidates: Vec<&Digest> = plan.candidates.iter().filter(|d| !spared.contains(*d)).collect();
        self.progress.inc((plan.candidates.len() - candidates.len()) as u64);
        for batch in candidates.chunks(BATCH) {
            if let Err(e) = self.blobs(plan, batch, &tally).await {
                tracing::warn!(error = %e, "garbage collection: a batch of blobs failed");
                tally.add(|r| r.errors += 1);
            }
            if !(self.tick)().await {
                break;
            }
        }
        self.finish(tally, report);
    }

    /// One repository's manifests, then its referrers-index entries.
    async fn repo(&self, repo: &RepoScan, rp: &super::mark::RepoPlan, tally: &Tally) {
        for d in &rp.manifests {
            self.manifest(repo, d, tally).await;
            self.progress.inc(1);
            if !(self.tick)().await {
                return;
            }
        }
        for (subject, referrer, link) in &rp.referrers {
            if tally.spared.lock().unwrap().contains(referrer) {
                continue;
            }
            if self.run.is_some() {
                if let Err(e) = gone_ok(self.driver.delete(gc_paths::parent(&link.path)).await) {
                    tracing::warn!(repo = %repo.name, %subject, %referrer, error = %e, "garbage collection: cannot delete a referrers entry");
                    tally.add(|r| r.errors += 1);
                    continue;
                }
            }
            tally.add(|r| r.referrers_swept += 1);
        }
    }

    fn finish(&self, tally: Tally, report: &mut Report) {
        let t = tally.report.into_inner().unwrap();
        report.manifests_swept += t.manifests_swept;
        report.referrers_swept += t.referrers_swept;
        report.blobs_swept += t.blobs_swept;
        report.layer_links_swept += t.layer_links_swept;
        report.bytes_freed += t.bytes_freed;
        report.kept_recent += t.kept_recent;
        report.kept_in_use += t.kept_in_use;
        report.errors += t.errors;
    }

    /// Whether a link is still there and older than the cutoff.
    async fn old(&self, path: &str) -> Result<Option<bool>, StorageError> {
        match self.driver.stat(path).await {
            Ok(i) => Ok(Some(i.modified <= self.cutoff)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The handshake for one candidate: in memory with this process's server, in storage with
    /// the others. `Ok(true)`: it may go.
    async fn doom_one(&self, run: &str, d: &Digest) -> Result<bool, StorageError> {
        if self.local.and_then(|j| j.doom_local(d)) == Some(false) {
            return Ok(false);
        }
        let free = journal::doom(self.driver, run, d).await?;
        if !free {
            if let Some(j) = self.local {
                j.spare_local(d);
            }
        }
        Ok(free)
    }

    async fn manifest(&self, repo: &RepoScan, d: &Digest, tally: &Tally) {
        if tally.spared.lock().unwrap().contains(d) {
            return;
        }
        match self.delete_manifest(repo, d, tally).await {
            Ok(true) => tally.add(|r| r.manifests_swept += 1),
            Ok(false) => {
                tally.add(|r| r.kept_in_use += 1);
                let mut spared = tally.spared.lock().unwrap();
                spared.insert(d.clone());
                if let Some(refs) = repo.revisions.get(d).and_then(|r| r.refs.as_ref()) {
                    spared.extend(refs.blobs.iter().chain(&refs.children).cloned());
                }
                // Its referrers stay with it.
                for (other, rev) in &repo.revisions {
                    if rev.refs.as_ref().and_then(|r| r.subject.as_ref()) == Some(d) {
                        spared.insert(other.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(repo = %repo.name, manifest = %d, error = %e, "garbage collection: cannot delete a manifest");
                tally.add(|r| r.errors += 1);
                // Not deleted: keep what it references.
                if let Some(refs) = repo.revisions.get(d).and_then(|r| r.refs.as_ref()) {
                    tally.spared.lock().unwrap().extend(refs.blobs.iter().chain(&refs.children).cloned());
                }
            }
        }
    }

    /// Deletes one manifest revision; `Ok(false)`: spared at the last moment.
    async fn delete_manifest(&self, repo: &RepoScan, d: &Digest, tally: &Tally) -> Result<bool, StorageError> {
        let link = paths::revision_link(&repo.name, d);
        match self.old(&link).await? {
            None => return Ok(true),
            Some(false) => return Ok(false),
            Some(true) => {}
        }
        let Some(run) = self.run else { return Ok(true) };
        if !self.doom_one(run, d).await? {
            return Ok(false);
        }
        // Tag history and the referrers entry first, the revision last: a crash in between
        // leaves a revision the next run deletes again.
        for dir in repo.tag_history.get(d).into_iter().flatten() {
            gone_ok(self.driver.delete(dir).await)?;
        }
        let refs = repo.revisions.get(d).and_then(|r| r.refs.as_ref());
        if let Some(s) = refs.and_then(|r| r.subject.as_ref()) {
            gone_ok(self.driver.delete(gc_paths::parent(&paths::referrer_link(&repo.name, s, d))).await)?;
        }
        if refs.is_some_and(|r| r.schema1) {
            gone_ok(self.driver.delete(&paths::schema1_pushed(&repo.name, d)).await)?;
        }
        gone_ok(self.driver.delete(gc_paths::parent(&link)).await)?;
        tally.deleted.lock().unwrap().push(link);
        Ok(true)
    }

    /// Deletes a batch of blobs and their layer links, but not those fresh or in use.
    async fn blobs(&self, plan: &Plan, batch: &[&Digest], tally: &Tally) -> Result<(), StorageError> {
        // Re-check: still there, older than the cutoff, and so are its links.
        let rechecks: Vec<BoxFuture<'_, _>> = batch.iter().map(|d| self.recheck(plan, d).boxed()).collect();
        let checked: Vec<Option<(Digest, BlobInfo, Vec<Link>)>> = stream::iter(rechecks)
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|r| match r {
                Ok(x) => Some(x),
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collection: cannot re-check a blob");
                    tally.add(|r| r.errors += 1);
                    None
                }
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        let mut ready = Vec::new();
        for (d, info, links) in checked.into_iter().flatten() {
            if info.modified > self.cutoff || links.iter().any(|l| l.fresh) {
                tally.add(|r| r.kept_recent += 1);
            } else {
                ready.push((d, info, links));
            }
        }
        let Some(run) = self.run else {
            for (_, info, links) in ready {
                tally.add(|r| {
                    r.layer_links_swept += links.len();
                    r.blobs_swept += 1;
                    r.bytes_freed += info.size;
                });
            }
            return Ok(());
        };
        // The handshake: in memory with this process's server, then in storage with the others.
        if let Some(j) = self.local {
            ready.retain(|(d, _, _)| {
                let free = j.doom_local(d) != Some(false);
                if !free {
                    tally.add(|r| r.kept_in_use += 1);
                }
                free
            });
        }
        let digests: Vec<Digest> = ready.iter().map(|(d, _, _)| d.clone()).collect();
        let free = journal::doom_all(self.driver, run, &digests, self.concurrency).await?;
        let free = &free;
        let deletions: Vec<BoxFuture<'_, ()>> =
            ready.into_iter().map(|(d, info, links)| self.delete_blob(d, info, links, free, tally).boxed()).collect();
        stream::iter(deletions).buffer_unordered(self.concurrency).collect::<Vec<()>>().await;
        Ok(())
    }

    async fn delete_blob(&self, d: Digest, info: BlobInfo, links: Vec<Link>, free: &HashSet<Digest>, tally: &Tally) {
        if !free.contains(&d) {
            if let Some(j) = self.local {
                j.spare_local(&d);
            }
            tally.add(|r| r.kept_in_use += 1);
            return;
        }
        let mut result = Ok(());
        for l in &links {
            result = result.and(gone_ok(self.driver.delete(gc_paths::parent(&l.path)).await));
        }
        if result.is_ok() {
            result = gone_ok(self.driver.delete(&gc_paths::blob_dir(&d)).await);
        }
        match result {
            Ok(()) => tally.add(|r| {
                r.layer_links_swept += links.len();
                r.blobs_swept += 1;
                r.bytes_freed += info.size;
            }),
            Err(e) => {
                tracing::warn!(blob = %d, error = %e, "garbage collection: cannot delete a blob");
                tally.add(|r| r.errors += 1);
            }
        }
    }

    /// A candidate's data and links as they are now (a link rewritten since the cutoff is fresh):
    /// `None` when the blob is gone.
    async fn recheck(&self, plan: &Plan, d: &Digest) -> Result<Option<(Digest, BlobInfo, Vec<Link>)>, StorageError> {
        self.progress.inc(1);
        let Some(info) = blob_info(self.driver, d).await? else { return Ok(None) };
        let mut links = Vec::new();
        for l in plan.links.get(d).map(Vec::as_slice).unwrap_or_default() {
            if let Some(old) = self.old(&l.path).await? {
                links.push(Link { path: l.path.clone(), fresh: !old });
            }
        }
        Ok(Some((d.clone(), info, links)))
    }
}
