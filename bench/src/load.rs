//! A small closed-loop HTTP/1.1 load generator (`berth-bench load`).
//!
//! wrk cannot measure `HEAD`: its response parser is never told the request was a `HEAD`, so it
//! waits for the `Content-Length` bytes of a body that never comes. This one sends a pre-built
//! request on each of `--connections` keep-alive connections, parses just the status line and
//! `Content-Length`, skips the body (none for `HEAD`) and sends the next request: one request in
//! flight per connection, no pipelining, like wrk. Each `--threads` thread runs its own
//! single-threaded tokio runtime (epoll), so a pinned thread costs about what wrk's does.

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct LoadArgs {
    pub url: String,
    pub method: String,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub headers: Vec<String>,
}

pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<LoadArgs, String> {
    let mut out = LoadArgs {
        url: String::new(),
        method: "GET".into(),
        connections: 32,
        threads: 1,
        duration: Duration::from_secs(10),
        headers: Vec::new(),
    };
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--url" => out.url = val("--url")?,
            "--method" | "-m" => out.method = val("--method")?.to_ascii_uppercase(),
            "--connections" | "-c" => {
                out.connections = val("--connections")?.parse().map_err(|e| format!("--connections: {e}"))?
            }
            "--threads" | "-t" => out.threads = val("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--duration" | "-d" => {
                let s: f64 =
                    val("--duration")?.trim_end_matches('s').parse().map_err(|e| format!("--duration: {e}"))?;
                out.duration = Duration::from_secs_f64(s);
            }
            "--header" | "-H" => out.headers.push(val("--header")?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if out.url.is_empty() {
        return Err("--url is required".into());
    }
    if out.connections == 0 || out.threads == 0 || out.threads > out.connections {
        return Err("need 1 <= threads <= connections".into());
    }
    Ok(out)
}

#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    non2xx: u64,
    errors: u64,
    reconnects: u64,
    bytes: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.ok += o.ok;
        self.non2xx += o.non2xx;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        self.bytes += o.bytes;
    }
}

/// Split `http://host:port/path?q` into (host:port, path?q).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
    Ok((authority, path.to_string()))
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parse a complete response head in `buf`: Ok(Some((status, head_len, body_len, close))).
fn parse_head(buf: &[u8], head: bool) -> Result<Option<(u16, usize, usize, bool)>, String> {
    let Some(end) = find_header_end(buf) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "non-UTF-8 response head")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 =
        parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut content_length = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            if !head {
                return Err("chunked responses are not supported by this load generator".into());
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = if head || status == 204 || status == 304 || (100..200).contains(&status) {
        0
    } else {
        content_length.ok_or("response without Content-Length")?
    };
    Ok(Some((status, end, body, close)))
}

async fn connection(addr: std::net::SocketAddr, request: Arc<Vec<u8>>, head: bool, stop: Arc<AtomicBool>) -> Counts {
    let mut c = Counts::default();
    let mut buf = vec![0u8; 64 * 1024];
    'outer: while !stop.load(Ordering::Relaxed) {
        let mut stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("berth-bench load: connect {addr}: {e}");
                c.errors += 1;
                break;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut filled = 0usize;
        while !stop.load(Ordering::Relaxed) {
            if stream.write_all(&request).await.is_err() {
                c.errors += 1;
                c.reconnects += 1;
                continue 'outer;
            }
            // read one full response
            let (status, total, close) = loop {
                match parse_head(&buf[..filled], head) {
                    Ok(Some((status, head_len, body_len, close))) => {
                        let total = head_len + body_len;
                        if total > buf.len() {
                            buf.resize(total.next_power_of_two(), 0);
                        }
                        if filled >= total {
                            break (status, total, close);
                        }
                    }
                    Ok(None) => {
                        if filled == buf.len() {
                            buf.resize(buf.len() * 2, 0);
                        }
                    }
                    Err(e) => {
                        eprintln!("berth-bench load: {e}");
                        c.errors += 1;
                        stop.store(true, Ordering::Relaxed);
                        break 'outer;
                    }
                }
                match stream.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => {
                        c.errors += 1;
                        c.reconnects += 1;
                        continue 'outer;
                    }
                    Ok(n) => filled += n,
                }
            };
            if (200..300).contains(&status) {
                c.ok += 1;
            } else {
                c.non2xx += 1;
            }
            c.bytes += total as u64;
            buf.copy_within(total..filled, 0);
            filled -= total;
            if close {
                c.reconnects += 1;
                continue 'outer;
            }
        }
        break;
    }
    c
}

pub fn run(args: LoadArgs) -> Result<(), String> {
    let (authority, path) = split_url(&args.url)?;
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {authority}: no address"))?;
    let mut req = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", args.method, path, authority);
    for h in &args.headers {
        req.push_str(h.trim());
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    let request = Arc::new(req.into_bytes());
    let head = args.method == "HEAD";
    let stop = Arc::new(AtomicBool::new(false));

    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let conns = args.connections / args.threads + usize::from(t < args.connections % args.threads);
        let request = request.clone();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("tokio runtime");
            rt.block_on(async move {
                let tasks: Vec<_> = (0..conns)
                    .map(|_| tokio::task::spawn(connection(addr, request.clone(), head, stop.clone())))
                    .collect();
                let mut total = Counts::default();
                for t in tasks {
                    if let Ok(c) = t.await {
                        total.add(c);
                    }
                }
                total
            })
        }));
    }
    std::thread::sleep(args.duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = Counts::default();
    for h in handles {
        total.add(h.join().map_err(|_| "load thread panicked")?);
    }
    let secs = start.elapsed().as_secs_f64();
    let done = total.ok + total.non2xx;
    let rps = done as f64 / secs;
    eprintln!(
        "{} {}: {} requests in {:.2} s over {} connections ({} threads): {:.0} requests/s, \
         {} non-2xx, {} errors, {} reconnects, {:.1} MB read",
        args.method,
        args.url,
        done,
        secs,
        args.connections,
        args.threads,
        rps,
        total.non2xx,
        total.errors,
        total.reconnects,
        total.bytes as f64 / 1e6
    );
    println!("{rps:.0} {} {}", total.non2xx, total.errors);
    if done == 0 {
        return Err("no request completed".into());
    }
    Ok(())
}
