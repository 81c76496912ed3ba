//! A filesystem writer whose disk I/O runs on a blocking thread, so hashing (on the request
//! task) and writing overlap. When no data comes (a client that stopped sending its upload), the
//! thread parks the open file with the writer and ends, instead of waiting in tokio's blocking
//! pool; the writer starts a thread again with the next message. The pool has 512 threads: one
//! held per stalled upload let 512 stalled clients stop every filesystem operation of the
//! registry until `http.timeouts.bodystall` cut them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::parking::{next_or_park, Job, Parking};
use super::sink::{Prefetch, Sink};
use super::{FileWriter, Result, StorageError};

/// Chunks queued for the writer thread: enough to keep the disk busy while the request task
/// hashes, few enough that a slow disk holds little memory.
const WRITE_QUEUE: usize = 3;

enum WriteMsg {
    Data(Bytes),
    Commit,
    Cancel,
}

/// A writing in progress: the messages to come, the open file, and where to say how it ended.
struct Writing {
    rx: mpsc::Receiver<WriteMsg>,
    sink: Sink,
    start: u64,
    path: String,
    done: oneshot::Sender<Result<()>>,
}

impl Job for Writing {
    /// Writes what arrives until commit, cancel or the writer going away (then says how it
    /// ended), or until nothing arrives for `PARK_AFTER` (then parks itself).
    fn run(mut self, parking: &Arc<Parking<Self>>) {
        let handle = tokio::runtime::Handle::current();
        loop {
            let Some((w, msg)) = next_or_park(self, parking, &handle, |w| &mut w.rx) else { return };
            self = w;
            let (result, prefetch) = match msg {
                Some(WriteMsg::Data(data)) => match self.sink.write(&data) {
                    Ok(()) => continue,
                    Err(e) => (Err(e), None),
                },
                Some(WriteMsg::Commit) => match self.sink.commit() {
                    Ok(p) => (Ok(()), Some(p)),
                    Err(e) => (Err(e), None),
                },
                Some(WriteMsg::Cancel) => (self.sink.cancel(self.start), None),
                // The writer went away without commit or cancel (its request died).
                None => (self.sink.abandon(), None),
            };
            let _ = self.done.send(result.map_err(|e| StorageError::io(&self.path, e)));
            if let Some(p) = prefetch {
                Prefetch::run(p);
            }
            return;
        }
    }
}

/// The request task's end of a writing.
pub struct FsWriter {
    tx: mpsc::Sender<WriteMsg>,
    done: oneshot::Receiver<Result<()>>,
    size: u64,
    parking: Arc<Parking<Writing>>,
}

impl FsWriter {
    /// Opens the file on the writer's own blocking thread (one hop instead of two), then
    /// writes what arrives until commit or cancel.
    pub async fn spawn<F>(open: F, path: String, warm: u64) -> Result<Self>
    where
        F: FnOnce() -> Result<(std::fs::File, u64)> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<WriteMsg>(WRITE_QUEUE);
        let (opened_tx, opened) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let parking = Parking::empty();
        let p = parking.clone();
        tokio::task::spawn_blocking(move || {
            let (file, start) = match open() {
                Ok(v) => {
                    let _ = opened_tx.send(Ok(v.1));
                    v
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            Writing { rx, sink: Sink::new(file, start, warm), start, path, done: done_tx }.run(&p);
        });
        let start = opened.await.map_err(|_| StorageError::Backend("writer thread died".into()))??;
        Ok(FsWriter { tx, done, size: start, parking })
    }

    /// A thread for a parked writing, which has a message to take now (or sees the channel
    /// close).
    fn resume(&self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.parking.resume();
        } else if let Some(w) = self.parking.take() {
            // Dropped outside the runtime (at exit): keep what arrived, here.
            let _ = w.sink.abandon();
        }
    }

    async fn send(&self, msg: WriteMsg) -> bool {
        let sent = self.tx.send(msg).await.is_ok();
        self.resume();
        sent
    }

    async fn finish(mut self, msg: WriteMsg) -> Result<()> {
        let _ = self.send(msg).await;
        let done = std::mem::replace(&mut self.done, oneshot::channel().1);
        drop(self);
        done.await.map_err(|_| StorageError::Backend("writer thread died".into()))?
    }
}

impl Drop for FsWriter {
    /// Going away without commit or cancel: a parked writing must still see the channel close
    /// and keep what arrived (`Sink::abandon`).
    fn drop(&mut self) {
        self.resume();
    }
}

#[async_trait]
impl FileWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        if !self.send(WriteMsg::Data(data)).await {
            // The thread stopped on an error; report it.
            let (tx, _) = mpsc::channel(1);
            let done = std::mem::replace(&mut self.done, oneshot::channel().1);
            drop(std::mem::replace(&mut self.tx, tx));
            return Err(done
                .await
                .map_err(|_| StorageError::Backend("writer thread died".into()))?
                .err()
                .unwrap_or_else(|| StorageError::Backend("writer closed".into())));
        }
        self.size += len;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.finish(WriteMsg::Commit).await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        self.finish(WriteMsg::Cancel).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::parking::PARK_AFTER;
    use std::time::Duration;

    async fn writer(path: &std::path::Path) -> FsWriter {
        let p = path.to_path_buf();
        let open = move || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| StorageError::io("/f", e))?;
            let len = f.metadata().map_err(|e| StorageError::io("/f", e))?.len();
            Ok((f, len))
        };
        FsWriter::spawn(open, "/f".into(), u64::MAX).await.unwrap()
    }

    /// Pauses longer than [`PARK_AFTER`] park the writing; the next message takes it up again,
    /// and the file is whole at commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_pauses_parks_and_commits_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = writer(&path).await;
        let mut want = Vec::new();
        let mut parks = 0;
        for i in 0..5u8 {
            let chunk = vec![i; 10_000];
            want.extend_from_slice(&chunk);
            w.write(Bytes::from(chunk)).await.unwrap();
            tokio::time::sleep(PARK_AFTER * 3).await;
            parks += usize::from(w.parking.is_parked());
        }
        assert!(parks >= 4, "parked at {parks} pauses");
        Box::new(w).commit().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    /// A writer dropped while its writing is parked (its request died): the writing still ends,
    /// keeping what arrived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_dropped_while_parked_keeps_what_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = writer(&path).await;
        w.write(Bytes::from(vec![7u8; 12_345])).await.unwrap();
        tokio::time::sleep(PARK_AFTER * 3).await;
        let parked_at = Arc::downgrade(&w.parking);
        assert!(w.parking.is_parked());
        drop(w);
        for _ in 0..100 {
            if parked_at.upgrade().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(parked_at.upgrade().is_none(), "the writing outlived its writer");
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 12_345]);
    }

    /// Many writers at once, each pausing now and then around the time a writing parks (so
    /// parking and going on race with sending): every file is whole, in order, at commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writers_pausing_at_random_all_commit_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..32u64)
            .map(|n| {
                let path = dir.path().join(format!("f{n}"));
                tokio::spawn(async move {
                    let mut w = writer(&path).await;
                    let mut want = Vec::new();
                    let mut step = n;
                    for i in 0..12u64 {
                        let chunk: Vec<u8> = (0..5_000 + n * 37 + i).map(|b| (b * 7 + n + i) as u8).collect();
                        want.extend_from_slice(&chunk);
                        w.write(Bytes::from(chunk)).await.unwrap();
                        // A pause of 0 to 2 x PARK_AFTER, different for each writer and chunk.
                        step = step.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        tokio::time::sleep(PARK_AFTER.mul_f64((step >> 33) as f64 / (1u64 << 31) as f64 * 2.0)).await;
                    }
                    Box::new(w).commit().await.unwrap();
                    assert!(std::fs::read(&path).unwrap() == want, "writer {n}: the file is not what was sent");
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
    }
}
