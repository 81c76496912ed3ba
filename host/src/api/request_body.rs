//! A request body whose client must keep sending: while a handler waits for the next bytes,
//! `http.timeouts.bodystall` runs, and when it passes the body fails with [`BodyError::Stalled`]
//! (the request then fails and the connection closes). It times the gaps between bytes, not the
//! whole upload, so a slow but steady client on a poor link finishes however long it takes,
//! while one that stops sending no longer holds its buffers, its upload file and its connection
//! forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("the client sent no body bytes for {0:?} (http.timeouts.bodystall)")]
    Stalled(Duration),
}

/// A request's body as handlers read it.
pub struct RequestBody {
    inner: Incoming,
    /// Zero: no stall timeout.
    stall: Duration,
    /// Running while the handler waits for bytes that have not come.
    timer: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    pub fn new(inner: Incoming, stall: Duration) -> Self {
        RequestBody { inner, stall, timer: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r.map(|r| r.map_err(BodyError::Http)))
            }
            Poll::Pending if self.stall.is_zero() => Poll::Pending,
            Poll::Pending => {
                let stall = self.stall;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        Poll::Ready(Some(Err(BodyError::Stalled(stall))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
