//! What a cleanup run did: per repository, each tag the policy chose with its reason and what
//! became of it; shown by `berth cleanup`, answered by `POST /admin/cleanup`, logged, counted
//! in metrics and kept (the last run) for `/debug/vars`.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::{self, CleanupLabels};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub policies: Vec<String>,
    /// Repositories a policy ran over (a repository two policies cover counts twice).
    pub repositories: usize,
    pub deleted: usize,
    pub would_delete: usize,
    pub skipped: usize,
    pub failed_repositories: usize,
    /// Bytes of the chosen tags' images, shared blobs counted in full: an upper bound of what
    /// a garbage collection frees afterwards.
    pub tag_bytes: u64,
    /// What a garbage collection with `--delete-untagged` then frees (when estimated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_would_free: Option<u64>,
    pub duration_ms: u64,
    /// Repositories where the policy chose something or failed.
    pub outcomes: Vec<RepoOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepoOutcome {
    pub policy: String,
    pub repository: String,
    pub tags: Vec<TagOutcome>,
    /// Why nothing (more) was deleted in this repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagOutcome {
    pub tag: String,
    pub digest: String,
    pub size: u64,
    pub reason: String,
    pub result: TagResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "why")]
pub enum TagResult {
    Deleted,
    WouldDelete,
    /// Left alone: it moved or went since the snapshot.
    Skipped(String),
    Failed(String),
}

impl TagResult {
    fn label(&self) -> &'static str {
        match self {
            TagResult::Deleted => "deleted",
            TagResult::WouldDelete => "would_delete",
            TagResult::Skipped(_) => "skipped",
            TagResult::Failed(_) => "failed",
        }
    }
}

impl RepoOutcome {
    pub fn new(policy: &str, repository: &str) -> Self {
        RepoOutcome { policy: policy.into(), repository: repository.into(), tags: Vec::new(), error: None }
    }

    pub fn failed(mut self, why: String) -> Self {
        self.error = Some(why);
        self
    }
}

/// The last run's report, for `/debug/vars`.
static LAST: Mutex<Option<Report>> = Mutex::new(None);

pub fn last_report() -> Option<Report> {
    LAST.lock().unwrap().clone()
}

impl Report {
    pub fn new(dry_run: bool, policies: Vec<String>) -> Self {
        Report {
            dry_run,
            policies,
            repositories: 0,
            deleted: 0,
            would_delete: 0,
            skipped: 0,
            failed_repositories: 0,
            tag_bytes: 0,
            gc_would_free: None,
            duration_ms: 0,
            outcomes: Vec::new(),
        }
    }

    pub fn push(&mut self, o: RepoOutcome) {
        self.repositories += 1;
        let m = metrics::get();
        for t in &o.tags {
            match &t.result {
                TagResult::Deleted => self.deleted += 1,
                TagResult::WouldDelete => self.would_delete += 1,
                TagResult::Skipped(_) => self.skipped += 1,
                TagResult::Failed(_) => {}
            }
            if matches!(t.result, TagResult::Deleted | TagResult::WouldDelete) {
                self.tag_bytes += t.size;
            }
            m.cleanup.get_or_create(&CleanupLabels { policy: o.policy.clone(), result: t.result.label() }).inc();
        }
        let failed = o.error.is_some() || o.tags.iter().any(|t| matches!(t.result, TagResult::Failed(_)));
        if failed {
            self.failed_repositories += 1;
            m.cleanup.get_or_create(&CleanupLabels { policy: o.policy.clone(), result: "repository_failed" }).inc();
            tracing::error!(policy = %o.policy, repository = %o.repository, error = o.error.as_deref().unwrap_or("a tag could not be deleted"), "cleanup: nothing more deleted in this repository");
        }
        if failed || !o.tags.is_empty() {
            self.outcomes.push(o);
        }
    }

    pub fn finish(&mut self, took: Duration) {
        self.duration_ms = took.as_millis() as u64;
    }

    /// Logs the summary and keeps the report for `/debug/vars`.
    pub fn record(&self) {
        tracing::info!(
            policies = ?self.policies,
            dry_run = self.dry_run,
            repositories = self.repositories,
            deleted = self.deleted,
            would_delete = self.would_delete,
            skipped = self.skipped,
            failed_repositories = self.failed_repositories,
            tag_bytes = self.tag_bytes,
            duration_ms = self.duration_ms,
            "cleanup run done"
        );
        *LAST.lock().unwrap() = Some(self.clone());
    }
}

/// The CLI's listing: one line per tag, then the summary.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for o in &self.outcomes {
            for t in &o.tags {
                let what = match &t.result {
                    TagResult::Deleted => "deleted".to_string(),
                    TagResult::WouldDelete => "would delete".to_string(),
                    TagResult::Skipped(why) => format!("skipped ({why})"),
                    TagResult::Failed(why) => format!("failed ({why})"),
                };
                writeln!(
                    f,
                    "{}:{}\t{}\t{}\t{} bytes\t[{}] {}",
                    o.repository, t.tag, what, t.digest, t.size, o.policy, t.reason
                )?;
            }
            if let Some(e) = &o.error {
                writeln!(f, "{}\terror\t[{}] {e}", o.repository, o.policy)?;
            }
        }
        let verb = if self.dry_run { "would delete" } else { "deleted" };
        let n = if self.dry_run { self.would_delete } else { self.deleted };
        write!(
            f,
            "{verb} {n} tags in {} repositories ({} skipped, {} repositories failed); their images weigh {} bytes",
            self.repositories, self.skipped, self.failed_repositories, self.tag_bytes
        )?;
        if let Some(bytes) = self.gc_would_free {
            write!(f, "\nberth garbage-collect --delete-untagged would then free {bytes} bytes")?;
        }
        Ok(())
    }
}
