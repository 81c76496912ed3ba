//! `berth-bench receive`: a notification receiver for the event figures (bench/events.py).
//!
//! It reads each `POST` whole, counts the events in it and answers 200; a body that is not a
//! distribution envelope (`{"events":[...]}`) is answered 400. `GET /count` answers the number
//! of events received so far. It prints `http://127.0.0.1:<port>/` on stdout when it listens.
//!
//! It runs on the machine it measures, so what it spends is taken from the registry under test:
//! by default it counts the events by their `"action":` keys (one per event, a byte scan of the
//! body, about 0.1 µs per event) instead of parsing them. `--parse` parses every envelope with
//! serde (about 2 µs per event); a receiver in Python spends about 8 µs. What the events hold is
//! the tests' business (tests/test_events.py), not the benchmark's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request head larger than this is refused (ours are a few hundred bytes).
const MAX_HEAD: usize = 64 << 10;

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<Event<'a>>,
}

/// The fields every distribution event has (read in place); the rest is checked and skipped.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Event<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    action: std::borrow::Cow<'a, str>,
    target: serde::de::IgnoredAny,
}

pub struct Args {
    port: u16,
    /// Parse each envelope instead of scanning it.
    parse: bool,
}

pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args { port: 0, parse: false };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                out.port = args.next().ok_or("--port needs a value")?.parse().map_err(|e| format!("--port: {e}"))?
            }
            "--parse" => out.parse = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", args.port)).await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("http://{addr}/");
        let count = Arc::new(AtomicU64::new(0));
        loop {
            let (conn, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = conn.set_nodelay(true);
            tokio::task::spawn(serve(conn, count.clone(), args.parse));
        }
    })
}

/// The events in an envelope, or None if `body` is not one.
fn events_in(body: &[u8], parse: bool) -> Option<u64> {
    if parse {
        return serde_json::from_slice::<Envelope>(body).ok().map(|e| e.events.len() as u64);
    }
    let inner = body.strip_prefix(br#"{"events":["#)?.strip_suffix(b"]}")?;
    Some(memchr::memmem::find_iter(inner, br#""action":""#).count() as u64)
}

/// One keep-alive connection, request after request.
async fn serve(mut conn: TcpStream, count: Arc<AtomicU64>, parse: bool) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        // The head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD || !read_more(&mut conn, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            if !read_more(&mut conn, &mut buf).await {
                return;
            }
        }
        let answer = if head.starts_with("GET /count") {
            let n = count.load(Ordering::Relaxed).to_string();
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{n}", n.len())
        } else {
            match events_in(&buf[head_end..head_end + length], parse) {
                Some(n) => {
                    count.fetch_add(n, Ordering::Relaxed);
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                }
                None => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_string(),
            }
        };
        buf.drain(..head_end + length);
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 << 10];
    match conn.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}
