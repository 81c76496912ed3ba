//! One endpoint's delivery task: reads what it has not taken from the outbox, in order, in
//! batches, and moves its cursor only after the sink accepted a batch (at least once). After
//! `threshold` failures in a row it waits `backoff`, doubling with each further failure up to
//! `maxbackoff`. Each endpoint has its own task, so a slow or dead one delays no other and no
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::outbox::{label, Outbox};
use super::sink::{Sink, SinkError};
use crate::config::Endpoint;

/// The pause between failed attempts before the threshold is reached.
const QUICK_RETRY: Duration = Duration::from_millis(50);

/// How long a task woken by a new event waits for more before it reads, and the least time
/// between two batches that were not full: events made by concurrent requests then go out in
/// one batch, not a few per request (the receiver and the registry pay per request).
const LINGER: Duration = Duration::from_millis(20);

/// How often the pending gauge is refreshed while events flow.
const GAUGE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub threshold: u32,
    pub backoff: Duration,
    pub maxbackoff: Duration,
    pub batch: usize,
}

impl Policy {
    pub fn of(e: &Endpoint) -> Policy {
        Policy {
            threshold: e.threshold.max(1),
            backoff: e.backoff,
            maxbackoff: e.maxbackoff.max(e.backoff),
            batch: e.batch.max(1),
        }
    }

    /// The wait after `failures` failures in a row.
    pub fn pause(&self, failures: u32) -> Duration {
        if failures < self.threshold {
            return QUICK_RETRY.min(self.backoff);
        }
        let doublings = (failures - self.threshold).min(20);
        self.backoff.saturating_mul(1 << doublings).min(self.maxbackoff)
    }
}

#[derive(Default)]
struct Status {
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
    last_success: Option<SystemTime>,
    consecutive_failures: u32,
    retry_at: Option<SystemTime>,
}

/// What `/debug/vars` shows of an endpoint.
pub struct EndpointState {
    pub name: String,
    /// Its bit in the outbox.
    pub index: usize,
    pub sink_kind: &'static str,
    pub target: String,
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Dropped by the sink (a plugin's `fatal`); the outbox counts its own drops.
    refused: AtomicU64,
    status: Mutex<Status>,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl EndpointState {
    pub fn new(name: String, index: usize, sink_kind: &'static str, target: String) -> EndpointState {
        EndpointState {
            name,
            index,
            sink_kind,
            target,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            status: Mutex::new(Status::default()),
        }
    }

    pub fn report(&self, outbox: &Outbox) -> Value {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let p = &outbox.positions()[self.index];
        json!({
            "sink": self.sink_kind,
            "target": self.target,
            "pending": outbox.pending(self.index),
            "delivered": self.delivered.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "dropped": p.dropped.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed),
            "cursor": p.at(),
            "consecutive_failures": s.consecutive_failures,
            "last_error": s.last_error,
            "last_error_at": s.last_error_at.map(rfc3339),
            "last_success": s.last_success.map(rfc3339),
            "retry_at": s.retry_at.map(rfc3339),
        })
    }
}

/// Delivers endpoint `state.index`'s events until the outbox stops.
pub async fn run(outbox: Arc<Outbox>, state: Arc<EndpointState>, sink: Arc<dyn Sink>, policy: Policy) {
    let i = state.index;
    let m = crate::metrics::get();
    let labels = label(&state.name);
    let (delivered_c, failed_c, dropped_c, pending_g) = (
        m.events_delivered.get_or_create(&labels).clone(),
        m.events_failed.get_or_create(&labels).clone(),
        m.events_dropped.get_or_create(&labels).clone(),
        m.events_pending.get_or_create(&labels).clone(),
    );
    let mut failures: u32 = 0;
    let mut gauge_at = Instant::now() - GAUGE_EVERY;
    loop {
        if gauge_at.elapsed() >= GAUGE_EVERY {
            pending_g.set(outbox.pending(i) as i64);
            gauge_at = Instant::now();
        }
        let at = outbox.positions()[i].at();
        if outbox.head() <= at {
            pending_g.set(outbox.pending(i) as i64);
            if !outbox.wait_past(at).await {
                return;
            }
            tokio::time::sleep(LINGER).await;
            continue;
        }
        let read = match outbox.read_fresh(i, at, policy.batch) {
            Some(r) => Ok(Ok(r)),
            None => {
                let o = outbox.clone();
                let batch = policy.batch;
                tokio::task::spawn_blocking(move || o.read(i, at, batch)).await
            }
        };
        let (batch, last) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::error!(endpoint = %state.name, error = %e, "event outbox read failed");
                tokio::time::sleep(policy.backoff).await;
                continue;
            }
            Err(_) => return,
        };
        if batch.is_empty() {
            outbox.advance(i, last);
            continue;
        }
        let n = batch.len() as u64;
        let sent_at = Instant::now();
        match sink.deliver(&batch).await {
            Ok(()) => {
                outbox.advance(i, last);
                state.delivered.fetch_add(n, Ordering::Relaxed);
                delivered_c.inc_by(n);
                failures = 0;
                {
                    let mut s = state.status.lock().unwrap_or_else(|p| p.into_inner());
                    s.last_success = Some(SystemTime::now());
                    s.consecutive_failures = 0;
                    s.retry_at = None;
                }
                // A batch that was not full: what comes next gathers for a while.
                if batch.len() < policy.batch {
                    tokio::time::sleep_until((sent_at + LINGER).into()).await;
                }
            }
            Err(SinkError::Drop(why)) => {
                outbox.advance(i, last);
                state.refused.fetch_add(n, Ordering::Relaxed);
                dropped_c.inc_by(n);
                tracing::warn!(endpoint = %state.name, events = n, error = %why, "events dropped by the sink");
                let mut s = state.status.lock().unwrap_or_else(|p| p.into_inner());
                s.last_error = Some(why);
                s.last_error_at = Some(SystemTime::now());
            }
            Err(SinkError::Retry(why)) => {
                failures = failures.saturating_add(1);
                state.failed.fetch_add(n, Ordering::Relaxed);
                failed_c.inc_by(n);
                let pause = policy.pause(failures);
                if failures == policy.threshold {
                    tracing::warn!(endpoint = %state.name, failures, backoff_ms = pause.as_millis() as u64, error = %why, "endpoint failing; backing off");
                } else {
                    tracing::debug!(endpoint = %state.name, failures, error = %why, "delivery failed");
                }
                {
                    let mut s = state.status.lock().unwrap_or_else(|p| p.into_inner());
                    s.last_error = Some(why);
                    s.last_error_at = Some(SystemTime::now());
                    s.consecutive_failures = failures;
                    s.retry_at = Some(SystemTime::now() + pause);
                }
                pending_g.set(outbox.pending(i) as i64);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_after_the_threshold_and_is_capped() {
        let p =
            Policy { threshold: 3, backoff: Duration::from_millis(500), maxbackoff: Duration::from_secs(2), batch: 10 };
        assert_eq!(p.pause(1), QUICK_RETRY);
        assert_eq!(p.pause(2), QUICK_RETRY);
        assert_eq!(p.pause(3), Duration::from_millis(500));
        assert_eq!(p.pause(4), Duration::from_secs(1));
        assert_eq!(p.pause(5), Duration::from_secs(2));
        assert_eq!(p.pause(50), Duration::from_secs(2));
    }
}
