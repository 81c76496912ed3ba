//! Deleting what the mark left, in an order a crash cannot hurt: manifest revisions (with their
//! tag-history entries and referrers-index entries) first, then referrers-index entries whose
//! referrer is gone, then each blob: its layer links, then its data. A blob a kept manifest
//! references is never a candidate, so a run killed at any point leaves only unreferenced
//! leftovers, which the next run finds again.
//!
//! Each candidate is checked once more just before it goes: still older than the cutoff (the
//! grace period), and not recorded by a server during the run (the handshake in `journal`).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::SystemTime;

use futures_util::{stream, StreamExt};

use super::journal;
use super::mark::Plan;
use super::paths as gc_paths;
use super::progress::Progress;
use super::report::Report;
use super::scan::{blob_info, Refs, Scan, CONCURRENCY};
use crate::registry::{paths, Digest, RepoName};
use crate::storage::{StorageDriver, StorageError};

/// What the sweep needs besides the plan.
pub struct Sweep<'a> {
    pub driver: &'a dyn StorageDriver,
    pub cutoff: SystemTime,
    /// The run's id; `None`: a dry run, which deletes nothing.
    pub run: Option<&'a str>,
    pub progress: &'a dyn Progress,
    /// Renews the lock now and then.
    pub tick: &'a (dyn Fn() -> futures_util::future::BoxFuture<'a, ()> + Send + Sync),
}

/// Counts shared by the concurrent deletions.
#[derive(Default)]
struct Tally {
    report: Mutex<Report>,
    /// Blobs (and manifests) spared at the last moment, and everything they reference.
    spared: Mutex<HashSet<Digest>>,
}

impl Tally {
    fn add(&self, f: impl FnOnce(&mut Report)) {
        f(&mut self.report.lock().unwrap())
    }
}

async fn gone_ok(r: Result<(), StorageError>) -> Result<(), StorageError> {
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
        for (repo, rp) in scan.repos.iter().zip(&plan.repos) {
            for d in &rp.manifests {
                if tally.spared.lock().unwrap().contains(d) {
                    self.progress.inc(1);
                    continue;
                }
                let refs = repo.revisions.get(d).and_then(|r| r.refs.as_ref());
                match self.manifest(&repo.name, repo.tags.iter().map(|(t, _)| t), d, refs).await {
                    Ok(true) => tally.add(|r| r.manifests_swept += 1),
                    Ok(false) => {
                        tally.add(|r| r.kept_in_use += 1);
                        let mut spared = tally.spared.lock().unwrap();
                        spared.insert(d.clone());
                        if let Some(refs) = refs {
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
                    }
                }
                self.progress.inc(1);
                (self.tick)().await;
            }
            for (subject, referrer, link) in &rp.referrers {
                if tally.spared.lock().unwrap().contains(referrer) {
                    continue;
                }
                if self.run.is_some() {
                    if let Err(e) = gone_ok(self.driver.delete(gc_paths::parent(&link.path)).await).await {
                        tracing::warn!(repo = %repo.name, %subject, %referrer, error = %e, "garbage collection: cannot delete a referrers entry");
                        tally.add(|r| r.errors += 1);
                        continue;
                    }
                }
                tally.add(|r| r.referrers_swept += 1);
            }
        }
        stream::iter(&plan.candidates)
            .for_each_concurrent(CONCURRENCY, |d| {
                let tally = &tally;
                async move {
                    if !tally.spared.lock().unwrap().contains(d) {
                        if let Err(e) = self.blob(plan, d, tally).await {
                            tracing::warn!(blob = %d, error = %e, "garbage collection: cannot delete a blob");
                            tally.add(|r| r.errors += 1);
                        }
                    }
                    self.progress.inc(1);
                    (self.tick)().await;
                }
            })
            .await;
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

    /// Deletes one manifest revision; `Ok(false)`: spared at the last moment.
    async fn manifest<'t>(
        &self,
        repo: &RepoName,
        tags: impl Iterator<Item = &'t crate::registry::Tag>,
        d: &Digest,
        refs: Option<&Refs>,
    ) -> Result<bool, StorageError> {
        let link = paths::revision_link(repo, d);
        match self.old(&link).await? {
            None => return Ok(true),
            Some(false) => return Ok(false),
            Some(true) => {}
        }
        let Some(run) = self.run else { return Ok(true) };
        if !journal::doom(self.driver, run, d).await? {
            return Ok(false);
        }
        // Tag history and the referrers entry first, the revision last: a crash in between
        // leaves a revision the next run deletes again.
        for t in tags {
            gone_ok(self.driver.delete(gc_paths::parent(&paths::tag_index_link(repo, t, d))).await).await?;
        }
        if let Some(s) = refs.and_then(|r| r.subject.as_ref()) {
            gone_ok(self.driver.delete(gc_paths::parent(&paths::referrer_link(repo, s, d))).await).await?;
        }
        gone_ok(self.driver.delete(&paths::schema1_pushed(repo, d)).await).await?;
        gone_ok(self.driver.delete(gc_paths::parent(&link)).await).await?;
        self.driver.sync(std::slice::from_ref(&link)).await.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })?;
        Ok(true)
    }

    /// Deletes one blob and its layer links, unless it is fresh or in use.
    async fn blob(&self, plan: &Plan, d: &Digest, tally: &Tally) -> Result<(), StorageError> {
        let Some(info) = blob_info(self.driver, d).await? else { return Ok(()) };
        if info.modified > self.cutoff {
            tally.add(|r| r.kept_recent += 1);
            return Ok(());
        }
        let links = plan.links.get(d).map(Vec::as_slice).unwrap_or_default();
        let mut present = Vec::new();
        for l in links {
            match self.old(&l.path).await? {
                Some(false) => {
                    tally.add(|r| r.kept_recent += 1);
                    return Ok(());
                }
                Some(true) => present.push(l),
                None => {}
            }
        }
        if let Some(run) = self.run {
            if !journal::doom(self.driver, run, d).await? {
                tally.add(|r| r.kept_in_use += 1);
                return Ok(());
            }
            for l in &present {
                gone_ok(self.driver.delete(gc_paths::parent(&l.path)).await).await?;
            }
            gone_ok(self.driver.delete(&gc_paths::blob_dir(d)).await).await?;
        }
        tally.add(|r| {
            r.layer_links_swept += present.len();
            r.blobs_swept += 1;
            r.bytes_freed += info.size;
        });
        Ok(())
    }
}
