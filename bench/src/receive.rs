//! `berth-bench receive`: a notification receiver for the event figures (bench/events.py).
//!
//! It does what a receiver must, natively: reads each `POST`, parses its JSON envelope and
//! counts the events in it (a body that is not a distribution envelope is answered 400), and
//! answers 200. `GET /count` answers the number of events received so far. It prints
//! `http://127.0.0.1:<port>/` on stdout when it listens. A receiver in Python spends about
//! 8 µs of CPU per event, which on a two-core machine the registry under test would pay for.

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

pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<u16, String> {
    let mut port = 0;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                port = args.next().ok_or("--port needs a value")?.parse().map_err(|e| format!("--port: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(port)
}

pub fn run(port: u16) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("http://{addr}/");
        let count = Arc::new(AtomicU64::new(0));
        loop {
            let (conn, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = conn.set_nodelay(true);
            tokio::task::spawn(serve(conn, count.clone()));
        }
    })
}

/// One keep-alive connection, request after request.
async fn serve(mut conn: TcpStream, count: Arc<AtomicU64>) {
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
            match serde_json::from_slice::<Envelope>(&buf[head_end..head_end + length]) {
                Ok(e) => {
                    count.fetch_add(e.events.len() as u64, Ordering::Relaxed);
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_string()
                }
                Err(_) => "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_string(),
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
