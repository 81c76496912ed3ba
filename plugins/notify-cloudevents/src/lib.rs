//! `berth-notify-cloudevents`: each event as a CloudEvents 1.0 structured-mode JSON document
//! (`Content-Type: application/cloudevents+json`), POSTed over HTTP, one request per event, as
//! zot emits them. The `data` member is the event exactly as distribution's webhook carries it.
//!
//! | config key | default | meaning |
//! |---|---|---|
//! | `url` | (required) | `http://<ip>:<port>/<path>`; the plugin must be granted exactly that address (`grants.network`) |
//! | `source` | the registry's `host:port` | the CloudEvents `source` |
//! | `typeprefix` | `io.berth.registry` | `type` is `<typeprefix>.<manifest\|blob\|tag>.<push\|pull\|delete\|mount>` |
//!
//! A connection that fails or a 5xx/408/429 answer is `retryable`; any other 4xx is `fatal`
//! (the receiver refuses the event: dropped and counted by the host).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use berth_plugin_sdk::notify::{Action, Event, NotificationSink, SinkError};
use berth_plugin_sdk::{Config, InitError};

pub struct CloudEvents {
    addr: SocketAddr,
    host: String,
    path: String,
    source: Option<String>,
    type_prefix: String,
}

/// `http://ip:port/path` → (address, Host header, path).
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let literal = with_port.replace("localhost:", "127.0.0.1:");
    let addr = literal.parse::<SocketAddr>().map_err(|_| format!("{authority}: give an IP address and port"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn action(a: Action) -> &'static str {
    match a {
        Action::Push => "push",
        Action::Pull => "pull",
        Action::Delete => "delete",
        Action::Mount => "mount",
    }
}

impl CloudEvents {
    fn document(&self, e: &Event) -> String {
        let t = &e.target;
        let kind = if t.media_type.is_empty() && t.digest.is_empty() {
            "tag"
        } else if t.media_type == "application/octet-stream" || (t.media_type.is_empty() && e.json.contains("/blobs/")) {
            "blob"
        } else {
            "manifest"
        };
        let subject = match (&t.tag, t.digest.is_empty()) {
            (Some(tag), false) => format!("{}:{tag}@{}", t.repository, t.digest),
            (Some(tag), true) => format!("{}:{tag}", t.repository),
            (None, _) => format!("{}@{}", t.repository, t.digest),
        };
        let source = self.source.clone().unwrap_or_else(|| e.source_addr.clone());
        format!(
            "{{\"specversion\":\"1.0\",\"type\":{},\"source\":{},\"id\":{},\"time\":{},\"subject\":{},\"datacontenttype\":\"application/json\",\"data\":{}}}",
            quote(&format!("{}.{kind}.{}", self.type_prefix, action(e.action))),
            quote(&source),
            quote(&e.id),
            quote(&e.timestamp),
            quote(&subject),
            e.json
        )
    }

    fn post(&self, body: &str) -> Result<(), SinkError> {
        let retry = |what: &str, e: std::io::Error| SinkError::Retryable(format!("{what} {}: {e}", self.addr));
        let mut s = TcpStream::connect(self.addr).map_err(|e| retry("connect", e))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/cloudevents+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| retry("send to", e))?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut buf).map_err(|e| retry("read from", e))?;
            if n == 0 {
                return Err(SinkError::Retryable(format!("{} closed the connection without an answer", self.addr)));
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > 16 << 10 {
                break;
            }
        }
        let line = String::from_utf8_lossy(&head);
        let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        match status {
            200..=299 => Ok(()),
            408 | 429 => Err(SinkError::Retryable(format!("{} answered {status}", self.addr))),
            400..=499 => Err(SinkError::Fatal(format!("{} refused the event: {status}", self.addr))),
            _ => Err(SinkError::Retryable(format!("{} answered {status}", self.addr))),
        }
    }
}

impl NotificationSink for CloudEvents {
    fn init(config: Config) -> Result<Self, InitError> {
        config.deny_unknown(&["url", "source", "typeprefix"])?;
        let url = config.require("url")?;
        let (addr, host, path) = parse_url(url).map_err(|m| InitError::invalid("url", m))?;
        Ok(CloudEvents {
            addr,
            host,
            path,
            source: config.get("source").map(String::from),
            type_prefix: config.get_or("typeprefix", "io.berth.registry").to_string(),
        })
    }

    fn deliver(&self, events: Vec<Event>) -> Result<(), SinkError> {
        // In order, one at a time: a failure leaves the rest (and the failed one) to the
        // host's retry, which sends the whole batch again (at least once).
        for e in &events {
            self.post(&self.document(e))?;
        }
        Ok(())
    }
}

berth_plugin_sdk::export_notification_sink!(CloudEvents);
