//! Object store download chunks copied into buffers of their own.
//!
//! The HTTP client under `object_store` hands out a body as slices of its read buffer, which
//! grows to about 400 KiB while a download is fast; a slice keeps the whole buffer alive. A
//! client that stops reading leaves a few such slices queued in its connection, so each stalled
//! download held about 630 KiB (measured: 100 downloads of a 4 MiB blob from moto, heap in use),
//! all of it after the connection to the service had ended. Copying what is ready into
//! [`CHUNK`]-sized buffers of our own bounds what a queued chunk holds to its own length: about
//! 340 KiB per stalled download, the queue itself. The copy costs a `memcpy` per byte on a path
//! that is bound by the service's rate, and only when blobs stream through Berth (redirects off).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::{ByteStream, Result, StorageError};

/// The most one buffer takes before it is handed on: a filesystem read's largest chunk.
pub(super) const CHUNK: usize = 128 << 10;

/// `inner`'s bytes in buffers of at most [`CHUNK`], filled from what `inner` has ready (never
/// waiting for more to fill one).
pub(super) fn rechunk(inner: ByteStream) -> ByteStream {
    Box::pin(Rechunk { inner: Some(inner), held: None, failed: None, buf: BytesMut::new() })
}

struct Rechunk {
    /// None once it ended or failed.
    inner: Option<ByteStream>,
    /// What is left of a chunk from `inner` that did not fit (copied out of it). Each time a
    /// part of it is taken, the rest is copied again, not kept as a slice: while the reader
    /// stalls, only the bytes still to come are held, not the part already handed on.
    held: Option<Bytes>,
    /// `inner`'s failure, handed on after the bytes read before it.
    failed: Option<StorageError>,
    buf: BytesMut,
}

impl Rechunk {
    /// Copies from `b` into the buffer, keeping what does not fit.
    fn take(&mut self, mut b: Bytes) {
        if self.buf.capacity() == 0 {
            self.buf.reserve(CHUNK);
        }
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b.split_to(n));
        if !b.is_empty() {
            // A copy: the slice would hold the client's whole read buffer while it waits.
            self.held = Some(Bytes::copy_from_slice(&b));
        }
    }

    /// A full buffer goes as it is; a partly filled one is copied to its length (else the
    /// small chunk would hold the whole buffer), and the buffer is kept for the next.
    fn hand_on(&mut self) -> Bytes {
        if self.buf.len() == CHUNK {
            std::mem::take(&mut self.buf).freeze()
        } else {
            let out = Bytes::copy_from_slice(&self.buf);
            self.buf.clear();
            out
        }
    }
}

impl Stream for Rechunk {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let this = self.get_mut();
        if let Some(b) = this.held.take() {
            this.take(b);
        }
        while this.buf.len() < CHUNK {
            let Some(inner) = this.inner.as_mut() else { break };
            match inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => this.take(b),
                Poll::Ready(Some(Err(e))) => {
                    this.inner = None;
                    this.failed = Some(e);
                }
                Poll::Ready(None) => this.inner = None,
                Poll::Pending if this.buf.is_empty() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        if this.buf.is_empty() {
            return Poll::Ready(this.failed.take().map(Err));
        }
        Poll::Ready(Some(Ok(this.hand_on())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn of(items: Vec<Result<Bytes>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(items))
    }

    /// Small chunks are gathered, a large one is split: every byte once, in order, no chunk
    /// over `CHUNK`.
    #[tokio::test]
    async fn chunks_are_gathered_and_split_to_at_most_chunk() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut items = Vec::new();
        let mut at = 0;
        for (i, size) in [10, 5_000, 300_000, 1, 70_000].iter().cycle().enumerate() {
            if at >= data.len() || i > 1000 {
                break;
            }
            let end = (at + size).min(data.len());
            items.push(Ok(Bytes::copy_from_slice(&data[at..end])));
            at = end;
        }
        let got: Vec<Bytes> = rechunk(of(items)).map(|r| r.unwrap()).collect().await;
        assert!(got.iter().all(|b| !b.is_empty() && b.len() <= CHUNK));
        assert_eq!(got.concat(), data);
    }

    /// A failure comes after the bytes read before it.
    #[tokio::test]
    async fn a_failure_comes_after_what_was_read_before_it() {
        let items = vec![Ok(Bytes::from_static(b"abc")), Err(StorageError::Backend("cut".into()))];
        let mut s = rechunk(of(items));
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"abc");
        assert!(matches!(s.next().await, Some(Err(StorageError::Backend(m))) if m == "cut"));
        assert!(s.next().await.is_none());
    }

    /// What is ready is handed on without waiting for more.
    #[tokio::test]
    async fn what_is_ready_is_not_held_back() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes>>();
        let mut s = rechunk(Box::pin(tokio_stream_of(rx)));
        tx.send(Ok(Bytes::from_static(b"first"))).unwrap();
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"first");
        tx.send(Ok(Bytes::from_static(b"second"))).unwrap();
        drop(tx);
        assert_eq!(&s.next().await.unwrap().unwrap()[..], b"second");
        assert!(s.next().await.is_none());
    }

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<Bytes>>,
    ) -> impl Stream<Item = Result<Bytes>> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
