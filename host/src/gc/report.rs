//! What a run did: logged at its end, kept as the last run for `/debug/vars`, and counted in
//! the Prometheus metrics.

use std::sync::Mutex;

use serde::Serialize;

use crate::metrics;

/// The outcome of one run. In a dry run, the `*_swept` figures and `bytes_freed` are what the run
/// would have deleted.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    pub run: String,
    pub dry_run: bool,
    pub delete_untagged: bool,
    /// RFC 3339.
    pub started: String,
    pub duration_seconds: f64,
    pub mark_seconds: f64,
    pub sweep_seconds: f64,
    pub repositories: usize,
    pub blobs_marked: usize,
    pub manifests_marked: usize,
    pub blobs_swept: usize,
    pub manifests_swept: usize,
    pub layer_links_swept: usize,
    pub referrers_swept: usize,
    pub bytes_freed: u64,
    /// Candidates spared because they were written inside the grace period.
    pub kept_recent: usize,
    /// Candidates spared because a write during the run relied on them.
    pub kept_in_use: usize,
    pub uploads_in_progress: usize,
    /// Deletions that failed (left for the next run).
    pub errors: usize,
}

impl Report {
    /// Logs the report and records it in the metrics and as the process's last run.
    pub fn publish(&self) {
        tracing::info!(
            run = self.run,
            dry_run = self.dry_run,
            delete_untagged = self.delete_untagged,
            blobs_marked = self.blobs_marked,
            manifests_marked = self.manifests_marked,
            blobs_swept = self.blobs_swept,
            manifests_swept = self.manifests_swept,
            layer_links_swept = self.layer_links_swept,
            referrers_swept = self.referrers_swept,
            bytes_freed = self.bytes_freed,
            kept_recent = self.kept_recent,
            kept_in_use = self.kept_in_use,
            errors = self.errors,
            duration_seconds = self.duration_seconds,
            "garbage collection done"
        );
        let m = &metrics::get().gc;
        m.runs.inc();
        if !self.dry_run {
            m.blobs_swept.inc_by(self.blobs_swept as u64);
            m.manifests_swept.inc_by(self.manifests_swept as u64);
            m.bytes_freed.inc_by(self.bytes_freed);
        }
        m.last_blobs_marked.set(self.blobs_marked as i64);
        m.last_manifests_marked.set(self.manifests_marked as i64);
        m.last_duration.set(self.duration_seconds);
        m.last_end
            .set(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
        *LAST.lock().unwrap() = Some(self.clone());
    }
}

static LAST: Mutex<Option<Report>> = Mutex::new(None);

/// The last run this process finished.
pub fn last() -> Option<Report> {
    LAST.lock().unwrap().clone()
}

/// A run that failed, for the metrics.
pub fn failed() {
    metrics::get().gc.failures.inc();
}
