//! The journal of what servers write while a run is on, and the handshake that makes deleting
//! a candidate safe against a write racing it.
//!
//! A server (any process on the same storage) learns that a run is on from the lock object (it
//! polls it every [`POLL`]; a run in its own process tells it at once). While a run is on, every
//! write that is about to rely on existing content (a mount, a finished upload, a manifest and
//! what it references) first records each digest under the run's `journal/`, then checks that
//! none of them is under the run's `doomed/`. The sweep, for each candidate, first writes it
//! under `doomed/`, then checks `journal/`. Storage is read-after-write consistent (a local
//! filesystem, S3 since 2020), so of a write and a deletion that race, at least one sees the
//! other: either the sweep spares the candidate, or the write fails cleanly (503 UNAVAILABLE,
//! retry) and never lands a manifest whose blob is gone.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{lock, paths};
use crate::registry::{Digest, WriteWatch};
use crate::storage::StorageDriver;

/// How often a server reads the lock to learn of runs in other processes.
pub const POLL: Duration = Duration::from_secs(1);

/// How long a run waits after taking the lock before it starts marking: every server has read
/// the lock by then and records its writes, so whatever the scan misses is in the journal.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A server's side: which run (if any) its writes are recorded for.
#[derive(Default)]
pub struct Journal {
    /// A run in another process, as read from the lock: recorded in storage.
    run: RwLock<Option<String>>,
    /// A run in this process: recorded in memory, the handshake under one mutex.
    local: Mutex<Option<LocalRun>>,
}

#[derive(Default)]
struct LocalRun {
    id: String,
    recorded: HashSet<Digest>,
    doomed: HashSet<Digest>,
}

impl Journal {
    pub fn current(&self) -> Option<String> {
        self.run.read().unwrap().clone()
    }

    /// The run another process holds (`None`: none), as the poll read it.
    pub fn set(&self, run: Option<String>) {
        *self.run.write().unwrap() = run;
    }

    /// A run in this process starts (or ends, with `None`): writes are recorded in memory at once.
    pub fn set_local(&self, run: Option<&str>) {
        *self.local.lock().unwrap() = run.map(|id| LocalRun { id: id.to_string(), ..Default::default() });
    }

    /// The in-memory side of the handshake for a local run: `Some(true)` the candidate may go
    /// (now doomed), `Some(false)` a write recorded it; `None` when no local run is on.
    pub fn doom_local(&self, d: &Digest) -> Option<bool> {
        let mut g = self.local.lock().unwrap();
        let run = g.as_mut()?;
        if run.recorded.contains(d) {
            return Some(false);
        }
        run.doomed.insert(d.clone());
        Some(true)
    }

    /// Takes a candidate off the local doomed set again.
    pub fn spare_local(&self, d: &Digest) {
        if let Some(run) = self.local.lock().unwrap().as_mut() {
            run.doomed.remove(d);
        }
    }

    /// Reads the lock every [`POLL`] for as long as the journal is alive.
    pub fn spawn_poller<T: AsRef<crate::registry::Registry> + Send + Sync + 'static>(self: &Arc<Self>, owner: Weak<T>) {
        let journal = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (Some(j), Some(o)) = (journal.upgrade(), owner.upgrade()) else { return };
                let reg: &crate::registry::Registry = (*o).as_ref();
                match lock::read(reg.driver()).await {
                    Ok(held) => {
                        let run = held.filter(|r| r.live()).map(|r| r.run);
                        if run != j.current() {
                            tracing::info!(run = run.as_deref().unwrap_or("(none)"), "garbage collection run seen");
                        }
                        j.set(run);
                    }
                    // Unknown: keep recording for the run we knew of (the safe side).
                    Err(e) => tracing::debug!(error = %e, "garbage collection lock unreadable"),
                }
            }
        });
    }
}

#[async_trait]
impl WriteWatch for Journal {
    async fn linking(&self, driver: &dyn StorageDriver, digests: &[Digest]) -> Result<(), Digest> {
        let local_id = {
            let mut g = self.local.lock().unwrap();
            match g.as_mut() {
                Some(run) => {
                    if let Some(d) = digests.iter().find(|d| run.doomed.contains(*d)) {
                        return Err(d.clone());
                    }
                    run.recorded.extend(digests.iter().cloned());
                    Some(run.id.clone())
                }
                None => None,
            }
        };
        // The run the lock names, unless it is this process's own (recorded above).
        let Some(run) = self.current().filter(|r| Some(r) != local_id.as_ref()) else { return Ok(()) };
        let recorded = digests.iter().map(|d| {
            let path = paths::journal(&run, d);
            async move { driver.put_volatile(&path, Bytes::new()).await }
        });
        if let Err(e) = futures_util::future::try_join_all(recorded).await {
            // Unrecorded, the run could delete what this write needs: refuse the write.
            tracing::warn!(error = %e, "garbage collection journal: cannot record a write");
            return Err(digests[0].clone());
        }
        let checks = digests.iter().map(|d| {
            let path = paths::doomed(&run, d);
            async move { (d, driver.stat(&path).await) }
        });
        for (d, r) in futures_util::future::join_all(checks).await {
            match r {
                Err(e) if e.is_not_found() => {}
                // Doomed, or cannot tell: the write fails rather than risk a dangling reference.
                _ => return Err(d.clone()),
            }
        }
        Ok(())
    }
}

/// The sweep's side of the handshake for one candidate: marks it doomed, then reports whether a
/// server has recorded it (the candidate must then be spared, and un-doomed).
pub async fn doom(driver: &dyn StorageDriver, run: &str, d: &Digest) -> Result<bool, crate::storage::StorageError> {
    Ok(doom_all(driver, run, std::slice::from_ref(d), 1).await?.contains(d))
}

/// The handshake for a batch: marks every candidate doomed, then reads the journal once; returns
/// the candidates no server recorded (the others are un-doomed).
pub async fn doom_all(
    driver: &dyn StorageDriver,
    run: &str,
    candidates: &[Digest],
    concurrency: usize,
) -> Result<HashSet<Digest>, crate::storage::StorageError> {
    use futures_util::{StreamExt, TryStreamExt};
    let puts: Vec<_> = candidates.iter().map(|d| paths::doomed(run, d)).collect();
    let puts: Vec<_> = puts.iter().map(|p| driver.put_volatile(p, Bytes::new())).collect();
    futures_util::stream::iter(puts).buffer_unordered(concurrency.max(1)).try_collect::<Vec<()>>().await?;
    let recorded: HashSet<Digest> =
        super::scan::list_digests(driver, &paths::journal_dir(run)).await?.into_iter().map(|(d, _)| d).collect();
    let mut out = HashSet::new();
    for d in candidates {
        if recorded.contains(d) {
            spare(driver, run, d).await;
        } else {
            out.insert(d.clone());
        }
    }
    Ok(out)
}

/// Takes a candidate off `doomed/` again.
pub async fn spare(driver: &dyn StorageDriver, run: &str, d: &Digest) {
    let _ = driver.delete(&paths::doomed(run, d)).await;
}

/// Whether a server recorded `d` during the run.
pub async fn recorded(driver: &dyn StorageDriver, run: &str, d: &Digest) -> Result<bool, crate::storage::StorageError> {
    match driver.stat(&paths::journal(run, d)).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
