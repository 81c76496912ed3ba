//! Blocking-thread jobs that park instead of waiting: an upload whose client stalls (the
//! filesystem writer, the storage component's writer pump) parks its state here and ends its
//! thread, and the writer sending chunks gives it a thread again when the next one comes.
//! tokio's blocking pool has 512 threads, which every filesystem operation shares: a thread held
//! per stalled download or upload let 512 stalled clients stop all of them until
//! `http.timeouts.bodystall` cut them. (Downloads park too, in `file_stream`, which also lets go
//! of what it read ahead, so it keeps its state with its chunks rather than here.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long a thread waits for progress (room for a chunk, or the next message) before it
/// parks: longer than a steady client ever makes it wait, short enough that stalled clients do
/// not pile up in the pool.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(50);

/// A job that runs on a blocking thread until it ends or parks itself in its [`Parking`].
pub(super) trait Job: Sized + Send + 'static {
    fn run(self, parking: &Arc<Parking<Self>>);
}

/// Where a job waits, parked, for its other side to give it a thread again.
pub(super) struct Parking<J>(Mutex<Option<J>>);

impl<J: Job> Parking<J> {
    /// A parking for `job`, and a thread for it now.
    pub fn start(job: J) -> Arc<Self> {
        let parking = Self::empty();
        let p = parking.clone();
        tokio::task::spawn_blocking(move || job.run(&p));
        parking
    }

    /// A parking with nothing in it (the job starts on a thread of the caller's making).
    pub fn empty() -> Arc<Self> {
        Arc::new(Parking(Mutex::new(None)))
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<J>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parks `job`, unless `news` says the other side made progress possible meanwhile: it looks
    /// for a parked job only after making progress possible, so if it looked while this was
    /// parking it found nothing, and the job goes on here (returned) instead.
    pub fn park(&self, job: J, news: impl FnOnce(&mut J) -> bool) -> Option<J> {
        let mut slot = self.slot();
        *slot = Some(job);
        if slot.as_mut().is_some_and(news) {
            return slot.take();
        }
        None
    }

    /// The parked job, if any, taken out (to end it without a thread, or to look at it).
    pub fn take(&self) -> Option<J> {
        self.slot().take()
    }

    /// Whether a job is parked (tests).
    #[cfg(test)]
    pub fn is_parked(&self) -> bool {
        self.slot().is_some()
    }

    /// A thread for the parked job, if any: call after making progress possible.
    pub fn resume(self: &Arc<Self>) {
        if let Some(job) = self.take() {
            let p = self.clone();
            tokio::task::spawn_blocking(move || job.run(&p));
        }
    }
}

/// The next message on a job's channel (`rx` reaches it; `None` inside: the channel ended),
/// waiting at most [`PARK_AFTER`]; or `None` when nothing came and the job parked (its thread
/// then ends). A message sent while it parked, or the channel's end, is news.
pub(super) fn next_or_park<J: Job, M>(
    mut job: J,
    parking: &Parking<J>,
    rt: &tokio::runtime::Handle,
    rx: fn(&mut J) -> &mut mpsc::Receiver<M>,
) -> Option<(J, Option<M>)> {
    loop {
        match rx(&mut job).try_recv() {
            Ok(m) => return Some((job, Some(m))),
            Err(mpsc::error::TryRecvError::Disconnected) => return Some((job, None)),
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if let Ok(m) = rt.block_on(tokio::time::timeout(PARK_AFTER, rx(&mut job).recv())) {
            return Some((job, m));
        }
        job = parking.park(job, |j| !rx(j).is_empty() || rx(j).is_closed())?;
    }
}
