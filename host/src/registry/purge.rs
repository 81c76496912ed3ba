//! Upload purging (distribution's `maintenance.uploadpurging`): sessions started longer ago
//! than `age` are abandoned pushes; their partial data is removed every `interval`.

use std::time::{Duration, SystemTime};

use super::listing::last_component;
use super::{paths, Registry, RepoName, Result};

/// What one purge pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Sessions removed (or, in a dry run, that would have been).
    pub purged: Vec<String>,
    /// Sessions still younger than the age limit, or in use.
    pub kept: usize,
}

/// When a session started: its `startedat` (RFC 3339, as distribution writes it), else the
/// modification time of its data.
async fn started(reg: &Registry, repo: &RepoName, id: &str) -> Option<SystemTime> {
    if let Ok(b) = reg.driver.get_content(&paths::upload_started_at(repo, id)).await {
        if let Some(t) = std::str::from_utf8(&b)
            .ok()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.trim()).ok())
            .map(SystemTime::from)
        {
            return Some(t);
        }
    }
    reg.driver.stat_file(&paths::upload_data(repo, id)).await.ok().map(|i| i.modified)
}

impl Registry {
    /// Removes upload sessions older than `age`; with `dry_run` only reports them. A session
    /// with a request in flight is never touched.
    pub async fn purge_uploads(&self, age: Duration, dry_run: bool) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let cutoff = SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        for dir in self.repository_dirs().await?.into_iter().filter(|d| d.has("_uploads")) {
            let Ok(repo) = RepoName::parse(&dir.name) else { continue };
            let sessions = match self.driver.list(&format!("{}/_uploads", paths::repo(&repo))).await {
                Ok(s) => s,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for s in sessions {
                let id = last_component(&s).to_string();
                let old = started(self, &repo, &id).await.is_none_or(|t| t < cutoff);
                let what = format!("{repo}/_uploads/{id}");
                if !old {
                    report.kept += 1;
                } else if dry_run {
                    tracing::info!(upload = what, "upload purging (dry run): would remove");
                    report.purged.push(what);
                } else {
                    let Some(_idle) = self.uploads.try_lock(&id) else {
                        report.kept += 1;
                        continue;
                    };
                    match self.driver.delete(&paths::upload_dir(&repo, &id)).await {
                        Ok(()) => tracing::info!(upload = what, "upload purging: removed"),
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            tracing::warn!(upload = what, error = %e, "upload purging: could not remove");
                            continue;
                        }
                    }
                    self.uploads.remove(&id);
                    report.purged.push(what);
                }
            }
        }
        Ok(report)
    }
}

/// Runs a purge every `interval` for as long as the registry lives.
pub fn spawn_purger<T: AsRef<Registry> + Send + Sync + 'static>(
    registry: std::sync::Weak<T>,
    age: Duration,
    interval: Duration,
    dry_run: bool,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(owner) = registry.upgrade() else { return };
            let reg: &Registry = (*owner).as_ref();
            match reg.purge_uploads(age, dry_run).await {
                Ok(r) if !r.purged.is_empty() => {
                    tracing::info!(purged = r.purged.len(), kept = r.kept, dry_run, "upload purging pass done")
                }
                Ok(_) => tracing::debug!("upload purging: nothing to remove"),
                Err(e) => tracing::warn!(error = %e, "upload purging pass failed"),
            }
            drop(owner);
        }
    });
}
