//! A download from an object store that outlives the service request it began with.
//!
//! The HTTP client under `object_store` ends every request, its body included, at its total
//! timeout (30 s unless `AWS_TIMEOUT` / `AZURE_TIMEOUT` / `GOOGLE_TIMEOUT` says otherwise), and
//! `object_store`'s own retry of a failed body gives up once its retry window (30 s, counted
//! from the request's start) has passed. So every download that took longer than that, a large
//! layer, a slow client or one that paused, ended early, leaving its client a truncated blob
//! (measured: 6.3 MB of an 8 MiB blob on S3 after a 35 s pause, 5.4 MB on Azure). distribution's
//! drivers have no such limit.
//!
//! Here a download whose service response fails or ends early goes on with a ranged `GET` from
//! the first byte not yet handed out, of the same object (`If-Match` on its ETag, so a changed
//! object is an error, never a splice): a long download is a chain of requests, each within the
//! client's timeout, and its reader sees one stream.
//!
//! The same step lets a stalled download go: while its reader takes nothing, the answer it
//! stopped taking held the connection to the service and the HTTP client's read buffer (about
//! 1 MiB per stalled download in all, measured). After [`LET_GO_AFTER`] it is dropped, and the
//! download goes on from where it stood when the reader asks again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;

use super::{ByteStream, Result, StorageError};

/// Attempts in a row that may bring no byte before the download fails: a service that answers
/// but sends nothing is not waited on forever, while any progress starts the count again (a
/// download of any length may go on through any number of timeouts).
const MAX_FRUITLESS: u32 = 3;

/// The pause before going on after the `n`th fruitless attempt: 100 ms, doubling (each request
/// already has `object_store`'s own retries behind it).
fn pause(n: u32) -> Duration {
    Duration::from_millis(100 << n.saturating_sub(1).min(6))
}

/// Opens the rest of the object, from an offset (with the object's ETag as a precondition).
pub(super) type Reopen = Box<dyn Fn(u64) -> BoxFuture<'static, Result<ByteStream>> + Send + Sync>;

/// How long a reader takes nothing before the answer it stopped taking is let go of (the
/// connection to the service and the HTTP client's read buffer, up to about 400 KiB). Going on
/// costs a request, and what the dropped answer had read ahead is fetched again, so this is far
/// longer than a filesystem reading's 50 ms: only a client slower than about 25 KB/s (its
/// connection's 128 KiB queue taking longer than this to drain) is let go of between reads, at
/// most once per this long.
const LET_GO_AFTER: Duration = Duration::from_secs(5);

/// `first`, the object's bytes `at..end`, as a stream that goes on through `reopen` when the
/// service's answer fails or ends before `end`, or after its reader stalled.
pub(super) fn resuming(first: ByteStream, at: u64, end: u64, reopen: Reopen) -> ByteStream {
    let state = Arc::new(Mutex::new(Resuming {
        source: Source::Open(first),
        at,
        end,
        fruitless: 0,
        reopen,
        idle_since: Some(Instant::now()),
    }));
    tokio::spawn(let_go_when_stalled(Arc::downgrade(&state)));
    Box::pin(Shared(state))
}

enum Source {
    Open(ByteStream),
    /// Let go of while the reader took nothing; opened again when it asks.
    LetGo,
    /// Waiting before the next attempt.
    Pausing(Pin<Box<tokio::time::Sleep>>),
    Reopening(BoxFuture<'static, Result<ByteStream>>),
    Done,
}

struct Resuming {
    source: Source,
    /// The first byte not handed out: where the next attempt starts.
    at: u64,
    end: u64,
    /// Attempts in a row that brought no byte.
    fruitless: u32,
    reopen: Reopen,
    /// Since when the reader has had its last chunk without asking for the next; None while it
    /// waits for one.
    idle_since: Option<Instant>,
}

fn lock(m: &Mutex<Resuming>) -> MutexGuard<'_, Resuming> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets go of the open answer once the reader has asked for nothing for [`LET_GO_AFTER`];
/// ends with the stream.
async fn let_go_when_stalled(state: Weak<Mutex<Resuming>>) {
    let mut wait = LET_GO_AFTER;
    loop {
        tokio::time::sleep(wait).await;
        let Some(state) = state.upgrade() else { return };
        let mut st = lock(&state);
        wait = LET_GO_AFTER;
        match (&st.source, st.idle_since) {
            (Source::Done, _) => return,
            (Source::Open(_), Some(since)) => match LET_GO_AFTER.checked_sub(since.elapsed()) {
                Some(left) if !left.is_zero() => wait = left,
                _ => {
                    tracing::debug!(
                        at = st.at,
                        end = st.end,
                        "download stalled: its answer from the service let go of"
                    );
                    st.source = Source::LetGo;
                }
            },
            _ => {}
        }
    }
}

impl Resuming {
    /// The answer so far failed (`error`) or ended early (None): pause and go on, or give up.
    fn attempt_failed(&mut self, error: Option<StorageError>) -> Option<StorageError> {
        self.fruitless += 1;
        let error = error.unwrap_or_else(|| {
            StorageError::Backend(format!("the service's answer ended at byte {} of {}", self.at, self.end))
        });
        if self.fruitless > MAX_FRUITLESS {
            self.source = Source::Done;
            return Some(error);
        }
        tracing::debug!(at = self.at, end = self.end, attempt = self.fruitless, error = %error, "download resumed from the service");
        crate::metrics::get().storage_reads_resumed.inc();
        self.source = Source::Pausing(Box::pin(tokio::time::sleep(pause(self.fruitless))));
        None
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        loop {
            match &mut self.source {
                Source::Open(s) => match s.as_mut().poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(b))) => {
                        if !b.is_empty() {
                            self.at += b.len() as u64;
                            self.fruitless = 0;
                        }
                        return Poll::Ready(Some(Ok(b)));
                    }
                    // Everything was handed out: whatever the service says now changes nothing.
                    Poll::Ready(_) if self.at >= self.end => {
                        self.source = Source::Done;
                        return Poll::Ready(None);
                    }
                    // Failed (`Some(Err)`) or ended early (`None`).
                    Poll::Ready(failed) => {
                        if let Some(e) = self.attempt_failed(failed.and_then(Result::err)) {
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                },
                Source::LetGo => {
                    crate::metrics::get().storage_reads_resumed.inc();
                    self.source = Source::Reopening((self.reopen)(self.at));
                }
                Source::Pausing(sleep) => {
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.source = Source::Reopening((self.reopen)(self.at));
                }
                Source::Reopening(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(s)) => self.source = Source::Open(s),
                    // The request itself had the store's retries: a refusal (the object gone
                    // or changed) or an outage is the download's end.
                    Poll::Ready(Err(e)) => {
                        self.source = Source::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Source::Done => return Poll::Ready(None),
            }
        }
    }
}

/// The stream its reader holds; the watcher holds it only weakly.
struct Shared(Arc<Mutex<Resuming>>);

impl Stream for Shared {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let mut st = lock(&self.0);
        let polled = st.poll_next(cx);
        // Every end (`None`, or a failure handed on) has set `Source::Done` already.
        st.idle_since = match polled {
            Poll::Pending => None,
            Poll::Ready(_) => Some(Instant::now()),
        };
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    fn data() -> Arc<Vec<u8>> {
        Arc::new((0..10_000u32).map(|i| (i % 251) as u8).collect())
    }

    /// The object from `at` in 1,000-byte chunks, failing after `fail_after` chunks (None:
    /// never), as a service whose request timed out does.
    fn answer(data: &Arc<Vec<u8>>, at: u64, fail_after: Option<usize>) -> ByteStream {
        let mut items: Vec<Result<Bytes>> =
            data[at as usize..].chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        if let Some(n) = fail_after {
            items.truncate(n);
            items.push(Err(StorageError::Backend("operation timed out".into())));
        }
        Box::pin(futures_util::stream::iter(items))
    }

    /// A `Reopen` answering from `data` (each answer failing after `fail_after` chunks), and
    /// the offsets it was asked for.
    fn reopening(data: &Arc<Vec<u8>>, fail_after: Option<usize>) -> (Reopen, Arc<Mutex<Vec<u64>>>) {
        let opened = Arc::new(Mutex::new(Vec::new()));
        let (d, o) = (data.clone(), opened.clone());
        let reopen: Reopen = Box::new(move |at| {
            o.lock().unwrap().push(at);
            let s = answer(&d, at, fail_after);
            Box::pin(async move { Ok(s) })
        });
        (reopen, opened)
    }

    async fn read_all(mut s: ByteStream) -> (Vec<u8>, Option<StorageError>) {
        let mut got = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => got.extend_from_slice(&b),
                Err(e) => return (got, Some(e)),
            }
        }
        (got, None)
    }

    /// Every answer fails after three chunks: the download goes on from the first byte not
    /// handed out each time, and every byte arrives once, in order.
    #[tokio::test]
    async fn answers_that_fail_midway_are_followed_from_where_they_stopped() {
        let d = data();
        let (reopen, opened) = reopening(&d, Some(3));
        let (got, err) = read_all(resuming(answer(&d, 500, Some(3)), 500, d.len() as u64, reopen)).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, &d[500..]);
        assert_eq!(*opened.lock().unwrap(), vec![3500, 6500, 9500]);
    }

    /// An answer that ends cleanly but short (a connection closed at a chunk's edge) is
    /// followed too.
    #[tokio::test]
    async fn an_answer_that_ends_short_is_followed() {
        let d = data();
        let short: ByteStream = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(&d[..4000]))]));
        let (reopen, _) = reopening(&d, None);
        let (got, err) = read_all(resuming(short, 0, d.len() as u64, reopen)).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, *d);
    }

    /// A service that answers but never sends a byte: the download fails after
    /// `MAX_FRUITLESS` attempts in a row, with the service's error.
    #[tokio::test]
    async fn attempts_that_bring_nothing_end_the_download() {
        let d = data();
        let (reopen, opened) = reopening(&d, Some(0));
        let (got, err) = read_all(resuming(answer(&d, 0, Some(2)), 0, d.len() as u64, reopen)).await;
        assert_eq!(got, &d[..2000]);
        assert!(matches!(err, Some(StorageError::Backend(m)) if m == "operation timed out"));
        assert_eq!(*opened.lock().unwrap(), vec![2000; MAX_FRUITLESS as usize]);
    }

    /// A reopening the service refuses (the object gone, or changed: its ETag no longer
    /// matches) ends the download with that refusal; nothing else is spliced in.
    #[tokio::test]
    async fn a_refused_reopening_ends_the_download() {
        let d = data();
        let reopen: Reopen = Box::new(|_| Box::pin(async { Err(StorageError::Backend("precondition failed".into())) }));
        let (got, err) = read_all(resuming(answer(&d, 0, Some(1)), 0, d.len() as u64, reopen)).await;
        assert_eq!(got, &d[..1000]);
        assert!(matches!(err, Some(StorageError::Backend(m)) if m == "precondition failed"));
    }

    /// A reader that pauses past `LET_GO_AFTER`: the answer it stopped taking is let go of
    /// (dropped), the object opened again from the first byte not taken, and every byte
    /// arrives once, in order.
    #[tokio::test]
    async fn a_stalled_reading_lets_go_of_its_answer_and_goes_on_where_it_stood() {
        let d = data();
        let (reopen, opened) = reopening(&d, None);
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Counted(ByteStream, Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        impl Stream for Counted {
            type Item = Result<Bytes>;
            fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
                self.0.as_mut().poll_next(cx)
            }
        }
        let first = Box::pin(Counted(answer(&d, 0, None), dropped.clone()));
        let mut s = resuming(first, 0, d.len() as u64, reopen);
        let mut got = s.next().await.unwrap().unwrap().to_vec();
        tokio::time::sleep(LET_GO_AFTER + Duration::from_millis(500)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "the stalled answer is let go of");
        let (rest, err) = read_all(s).await;
        assert!(err.is_none(), "{err:?}");
        got.extend_from_slice(&rest);
        assert_eq!(got, *d);
        assert_eq!(*opened.lock().unwrap(), vec![1000]);
    }

    /// A reader that keeps taking, however slowly within `LET_GO_AFTER`, keeps its answer.
    #[tokio::test]
    async fn a_steady_reading_keeps_its_answer() {
        let d = Arc::new(vec![7u8; 3000]);
        let reopen: Reopen = Box::new(|_| panic!("opened again"));
        let mut s = resuming(answer(&d, 0, None), 0, d.len() as u64, reopen);
        let mut n = 0;
        while let Some(b) = s.next().await {
            n += b.unwrap().len();
            tokio::time::sleep(LET_GO_AFTER * 2 / 3).await;
        }
        assert_eq!(n, 3000);
    }

    /// An error after the last byte changes nothing: the download is whole.
    #[tokio::test]
    async fn an_error_after_the_last_byte_is_no_failure() {
        let d = data();
        let reopen: Reopen = Box::new(|_| panic!("opened again"));
        let (got, err) = read_all(resuming(answer(&d, 0, Some(10)), 0, d.len() as u64, reopen)).await;
        assert!(err.is_none());
        assert_eq!(got, *d);
    }
}
