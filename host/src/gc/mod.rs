//! Garbage collection while the registry serves: mark from every tag (and, without
//! `delete_untagged`, every manifest, as distribution does), through index children and
//! referrers, to every blob a kept manifest references; sweep the rest. Built after
//! distribution's `registry/storage/garbagecollect.go`, made safe to run beside servers writing
//! to the same storage (the README's "Garbage collection" section has the design):
//!
//! - `lock`: one run at a time, across processes (an expiring object in storage);
//! - `scan`: what the storage holds; `mark`: what stays; `sweep`: deleting the rest, crash-safe;
//! - `journal`: servers record what they link during a run, and the sweep's last-moment
//!   handshake with them; the grace period spares whatever was written recently;
//! - `report`, `progress`: the outcome and the progress bar; `schedule`: runs in the server.

mod error;
pub mod journal;
pub mod lock;
mod mark;
mod pace;
mod paths;
pub mod progress;
pub mod report;
mod scan;
pub mod schedule;
mod sweep;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;

pub use error::GcError;
pub use journal::Journal;
pub use progress::{Bar, Progress, Quiet};
pub use report::Report;
pub use schedule::Service;

use crate::registry::{rfc3339, Registry, RepoName, Tag};

/// How a run goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Report what would go; delete nothing (takes no lock).
    pub dry_run: bool,
    /// Also delete manifests no tag reaches (distribution's `--delete-untagged`).
    pub delete_untagged: bool,
    /// Content written less than this long before the run started stays.
    pub grace: Duration,
    /// Storage requests in flight at once (a server's own runs use few, to leave it the rest).
    pub concurrency: usize,
    /// Share of the time the run may work; it rests the remainder (a server's own runs: a
    /// quarter; the command: all of it).
    pub pace: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            delete_untagged: false,
            grace: Duration::from_secs(3600),
            concurrency: scan::CONCURRENCY,
            pace: 1.0,
        }
    }
}

fn new_run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Runs one garbage collection over `reg`'s storage. `local` is the journal of a server in this
/// process (it then records for this run at once, without waiting for its poll).
pub fn run<'a>(
    reg: &'a Registry,
    opts: &'a Options,
    local: Option<&'a Journal>,
    progress: &'a dyn Progress,
) -> futures_util::future::BoxFuture<'a, Result<Report, GcError>> {
    // Boxed here, with its lifetimes concrete, so callers that spawn it can prove it `Send`.
    Box::pin(async move {
        let result = run_inner(reg, opts, local, progress).await;
        progress.finish();
        match &result {
            Ok(r) => r.publish(),
            Err(e) => {
                report::failed();
                tracing::warn!(error = %e, "garbage collection failed");
            }
        }
        result
    })
}

async fn run_inner(
    reg: &Registry,
    opts: &Options,
    local: Option<&Journal>,
    progress: &dyn Progress,
) -> Result<Report, GcError> {
    let driver = reg.driver();
    let started = SystemTime::now();
    let clock = Instant::now();
    let cutoff = started.checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let run_id = new_run_id();
    let mut report = Report {
        run: run_id.clone(),
        dry_run: opts.dry_run,
        delete_untagged: opts.delete_untagged,
        started: rfc3339(started),
        ..Report::default()
    };
    let lock = if opts.dry_run { None } else { Some(lock::Lock::acquire(driver, &run_id).await?) };
    tracing::info!(
        run = run_id,
        dry_run = opts.dry_run,
        delete_untagged = opts.delete_untagged,
        grace_seconds = opts.grace.as_secs_f64(),
        "garbage collection started"
    );
    if lock.is_some() {
        if let Some(j) = local {
            j.set_local(Some(&run_id));
        }
        clear_old_runs(reg, &run_id).await?;
    }
    let held = lock.map(|l| Mutex::new((l, Instant::now())));
    let lost = std::sync::atomic::AtomicBool::new(false);
    let pacer = pace::Pacer::new(opts.pace);
    // Reads the lock and pushes its expiry on; false (and `lost` set) once it names another run.
    let renew = || {
        async {
            let Some(h) = &held else { return true };
            let mut l = {
                let mut g = h.lock().unwrap();
                g.1 = Instant::now();
                lock::Lock { record: g.0.record.clone() }
            };
            let kept = l.renew(driver).await.is_ok();
            h.lock().unwrap().0.record = l.record;
            if !kept {
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            kept
        }
        .boxed()
    };
    // Between two steps of the scan or the sweep: paces them and renews the lock when due; false
    // once the lock is lost, so the sweep stops deleting.
    let tick = || {
        async {
            pacer.breathe().await;
            let due = held.as_ref().is_some_and(|h| h.lock().unwrap().1.elapsed() >= lock::RENEW);
            if due {
                renew().await;
            }
            !lost.load(std::sync::atomic::Ordering::SeqCst)
        }
        .boxed()
    };
    let outcome = async {
        if held.is_some() {
            // Mark only once every server has read the lock and records its writes: a write the
            // scan misses is then in the journal by the time the sweep looks.
            tokio::time::sleep(journal::SETTLE).await;
            // And only if the lock is still ours. Taking it is write-then-read-back: a rival's
            // write still in flight when this run read its own back lands after, and names the
            // rival, whose journal the servers now write to. Found here, it costs nothing.
            if !renew().await {
                return Err(GcError::LockLost);
            }
        }
        let mark_start = Instant::now();
        let scan = scan::scan(reg, cutoff, opts.concurrency.max(1), &tick, progress).await?;
        // Paced as a step; the lock is looked at just below, before the sweep.
        pacer.breathe().await;
        let plan = mark::mark(&scan, opts.delete_untagged, &[]);
        report.repositories = scan.repos.len();
        report.uploads_in_progress = scan.repos.iter().map(|r| r.uploads).sum();
        report.manifests_marked = plan.manifests_marked();
        let existing: std::collections::HashSet<_> = scan.blobs.iter().collect();
        report.blobs_marked = plan.marked.iter().filter(|d| existing.contains(d)).count();
        report.mark_seconds = mark_start.elapsed().as_secs_f64();
        // The last look before anything is deleted.
        if !renew().await {
            return Err(GcError::LockLost);
        }
        let sweep_start = Instant::now();
        let sweep = sweep::Sweep {
            driver,
            cutoff,
            run: held.as_ref().map(|_| run_id.as_str()),
            local,
            concurrency: opts.concurrency.max(1),
            progress,
            tick: &tick,
        };
        sweep.run(&scan, &plan, &mut report).await;
        report.sweep_seconds = sweep_start.elapsed().as_secs_f64();
        if lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(GcError::LockLost);
        }
        Ok::<_, GcError>(())
    }
    .await;
    if let Some(h) = held {
        if let Some(j) = local {
            j.set_local(None);
        }
        let (l, _) = h.into_inner().unwrap();
        let _ = driver.delete(&paths::run(&run_id)).await;
        l.release(driver).await;
    }
    outcome?;
    report.duration_seconds = clock.elapsed().as_secs_f64();
    Ok(report)
}

/// Removes the journals of earlier runs (one that crashed leaves its own behind).
async fn clear_old_runs(reg: &Registry, own: &str) -> Result<(), GcError> {
    let driver = reg.driver();
    let runs = match driver.list(&paths::runs()).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for r in runs {
        if !r.ends_with(&format!("/{own}")) {
            match driver.delete(&r).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The blob bytes a run would free if the tags in `pretend_untagged` were deleted first: a dry
/// mark with no grace period (what a cleanup policy reports before it deletes anything).
pub async fn estimate_freed(
    reg: &Registry,
    pretend_untagged: &[(RepoName, Tag)],
    delete_untagged: bool,
) -> Result<u64, GcError> {
    let scan = scan::scan(reg, SystemTime::now(), scan::CONCURRENCY, &|| async { true }.boxed(), &Quiet).await?;
    let plan = mark::mark(&scan, delete_untagged, pretend_untagged);
    let mut bytes = 0;
    for d in &plan.candidates {
        if let Some(i) = scan::blob_info(reg.driver(), d).await? {
            bytes += i.size;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
