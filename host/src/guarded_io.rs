//! A client connection's byte stream (TCP, or TLS over it) as hyper sees it, watched:
//! - every read and write marks the connection active, for the header and idle timeouts
//!   (`connections::watchdog`);
//! - a write the client does not take for `http.timeouts.bodystall` (a download it stopped
//!   reading, its TCP window shut) fails, which ends the connection instead of holding its
//!   buffers and file descriptor forever;
//! - hyper answers a request it cannot parse (400, 414 for a URI over 64 KiB, 431 for too many
//!   or too large headers) by itself, with an empty body and no way to shape it; those answers
//!   are rewritten here into the registry's JSON error body, like every other error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::connections::ConnState;

pub struct GuardedIo<S> {
    inner: S,
    state: Arc<ConnState>,
    /// `http.timeouts.bodystall` for writes; zero: off.
    stall: Duration,
    /// Running while a write is pending.
    stall_timer: Option<Pin<Box<Sleep>>>,
    /// A rewritten answer still to be written (bytes, how many are written).
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> GuardedIo<S> {
    pub fn new(inner: S, state: Arc<ConnState>, stall: Duration) -> Self {
        GuardedIo { inner, state, stall, stall_timer: None, pending: None }
    }
}

/// The write stalled past `http.timeouts.bodystall`.
fn stalled(stall: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("client took no response bytes for {stall:?} (http.timeouts.bodystall)"),
    )
}

impl<S: AsyncWrite + Unpin> GuardedIo<S> {
    /// Runs the write-stall timer around a pending inner operation.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stall_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending if self.stall.is_zero() => Poll::Pending,
            Poll::Pending => {
                let stall = self.stall;
                let t = self.stall_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match t.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(stalled(stall))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// Writes what is left of a rewritten answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, done)) = &mut self.pending {
            if *done == buf.len() {
                self.pending = None;
                break;
            }
            let r = Pin::new(&mut self.inner).poll_write(cx, &buf[*done..]);
            let n = match r {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    return self.watch(cx, Poll::Pending);
                }
            };
            self.stall_timer = None;
            self.state.on_write();
            if let Some((_, done)) = &mut self.pending {
                *done += n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.state.on_read();
        }
        Poll::Ready(r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(answer) = rewrite_parse_error(buf) {
            self.pending = Some((answer, 0));
            ready!(self.drain(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.state.on_write();
            }
        }
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(answer) = rewrite_parse_error(first) {
                self.pending = Some((answer, 0));
                ready!(self.drain(cx))?;
                return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
            }
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.state.on_write();
            }
        }
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// The answer to write instead of `head`, if `head` is one hyper wrote by itself for a request
/// it could not parse: a 400, 414 or 431 head with no body and without the `x-request-id`
/// header that every answer of the registry's own carries.
fn rewrite_parse_error(head: &[u8]) -> Option<Vec<u8>> {
    let status = head.strip_prefix(b"HTTP/1.1 ").or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let (code, message) = match status.get(..4)? {
        b"400 " => ("UNSUPPORTED", "malformed HTTP request"),
        b"414 " => ("SIZE_INVALID", "request URI too long (the limit is 65534 bytes)"),
        b"431 " => (
            "SIZE_INVALID",
            "request headers too large (more fields than http.maxheaders, or over the header byte limit)",
        ),
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    for line in lines {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        match name.as_str() {
            "x-request-id" => return None,
            "content-length" => {
                if line.split(':').nth(1).map(str::trim) != Some("0") {
                    return None;
                }
            }
            "connection" | "content-type" => {}
            _ => kept.push(line),
        }
    }
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    let mut out = format!("{status_line}\r\n");
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\ndocker-distribution-api-version: registry/2.0\r\n\r\n{body}",
        body.len()
    ));
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::rewrite_parse_error;

    #[test]
    fn rewrites_only_hyper_parse_errors() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_parse_error(hyper).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{head}");
        assert!(head.contains("date: Mon") && head.contains("content-type: application/json"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["errors"][0]["code"], "SIZE_INVALID");
        assert!(rewrite_parse_error(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n").is_some());
        // The registry's own answers carry a request id; other statuses and bodies pass.
        let own = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nx-request-id: 1\r\n\r\n";
        assert!(rewrite_parse_error(own).is_none());
        assert!(rewrite_parse_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n").is_none());
        assert!(rewrite_parse_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite_parse_error(b"{\"some\": \"body\"}").is_none());
    }
}
