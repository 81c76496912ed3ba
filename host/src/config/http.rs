//! `http`: the registry listener, TLS and the debug server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{resolve, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Http {
    pub addr: SocketAddr,
    /// Answer with relative `Location` URLs instead of absolute ones.
    pub relativeurls: bool,
    /// Requests handled at once; past it, 429 TOOMANYREQUESTS with `Retry-After`. 0: no limit.
    pub maxinflight: usize,
    /// How long a client may take over each part of a connection: see [`Timeouts`].
    pub timeouts: Timeouts,
    /// Open client connections at most. Each holds a file descriptor and buffers, so a flood of
    /// idle or half-open connections would otherwise run the process out of descriptors (every
    /// accept then fails, for everyone). At the cap the connection idle the longest is closed to
    /// make room; when none is idle the new one is refused at once (plain HTTP gets a 503).
    /// 0: three quarters of the open-file limit (`ulimit -n`), leaving the rest to storage.
    pub maxconnections: usize,
    /// Request header fields accepted in one HTTP/1.1 request (past it, 431). Proxy chains add
    /// forwarding and tracing headers; Go's server, and so distribution, has no count limit
    /// (only 1 MiB of header bytes), while hyper's default of 100 refused real requests. The
    /// header bytes stay bounded by the read buffer (about 400 KiB) whatever this says.
    pub maxheaders: usize,
    /// Bytes of manifest bodies held in memory at once, across all requests. A manifest `PUT`
    /// is read whole before it is parsed (up to the 8 MiB manifest cap), so without a shared
    /// budget a hundred clients that send most of an 8 MiB body and stall pin most of a GiB.
    /// Past it, a manifest `PUT` gets 503 UNAVAILABLE with `Retry-After` before its body
    /// is read.
    pub manifestmemory: usize,
    /// Serve HTTPS with this certificate and key (PEM) instead of plain HTTP.
    pub tls: Option<Tls>,
    /// The debug server: health, vars and Prometheus metrics on a separate address.
    pub debug: Option<Debug>,
}

/// Per-connection timeouts, each the answer to a client that holds a connection without making
/// progress. Each is a Go-style duration (`30s`, `2m`) or milliseconds; `0` turns one off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// From the first byte of a request head to its end (slowloris: a header byte a second
    /// would otherwise hold the connection forever).
    #[serde(with = "super::duration")]
    pub header: Duration,
    /// A keep-alive connection with no request in it is closed after this long. Longer than
    /// the 90 s after which Go's and Docker's clients drop their own idle connections, so the
    /// client, not the server, normally closes (a server close races the client's next request).
    #[serde(with = "super::duration")]
    pub idle: Duration,
    /// No body bytes moving for this long while a handler waits for them (a request body that
    /// stops arriving) or while a response waits for the client to read (a download the client
    /// stopped reading): the request fails and the connection closes. A stall timeout, not a
    /// total-time cap: a slow but steady upload on a poor link keeps going however long it takes.
    #[serde(with = "super::duration")]
    pub bodystall: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { header: Duration::from_secs(30), idle: Duration::from_secs(120), bodystall: Duration::from_secs(60) }
    }
}

/// Default for `http.maxheaders`.
pub const DEFAULT_MAX_HEADERS: usize = 1000;

/// Default for `http.manifestmemory`: 64 MiB, eight maximal manifests or thousands of real ones.
pub const DEFAULT_MANIFEST_MEMORY: usize = 64 << 20;

impl Default for Http {
    fn default() -> Self {
        Http {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            relativeurls: false,
            maxinflight: 0,
            timeouts: Timeouts::default(),
            maxconnections: 0,
            maxheaders: DEFAULT_MAX_HEADERS,
            manifestmemory: DEFAULT_MANIFEST_MEMORY,
            tls: None,
            debug: None,
        }
    }
}

impl Section for Http {
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(tls) = &mut self.tls {
            resolve(base, &mut tls.certificate);
            resolve(base, &mut tls.key);
        }
    }
}

/// The files are read (and their problems reported) by `crate::tls`, at startup and by
/// `berth config check`.
#[derive(Debug, Clone, Deserialize)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Debug {
    pub addr: SocketAddr,
    #[serde(default)]
    pub prometheus: Prometheus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Prometheus {
    pub enabled: bool,
    pub path: String,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus { enabled: true, path: "/metrics".into() }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;

    #[test]
    fn listener_tls_and_debug() {
        let l = load(
            "http:\n  addr: 127.0.0.1:6000\n  relativeurls: true\n  tls: {certificate: c.pem, key: /k.pem}\n  debug: {addr: 127.0.0.1:6001}\n",
            &[],
        )
        .unwrap();
        let h = &l.config.http;
        assert_eq!(h.addr.to_string(), "127.0.0.1:6000");
        assert!(h.relativeurls);
        let tls = h.tls.as_ref().unwrap();
        assert!(tls.certificate.is_absolute() && tls.certificate.ends_with("c.pem"), "{tls:?}");
        assert_eq!(tls.key.to_str(), Some("/k.pem"));
        let d = h.debug.as_ref().unwrap();
        assert!(d.prometheus.enabled);
        assert_eq!(d.prometheus.path, "/metrics");
        let e = load("http:\n  addr: not-an-address\n", &[]).unwrap_err();
        assert_eq!(e.key, "http.addr", "{e}");
    }

    #[test]
    fn limits_and_timeouts() {
        let d = load("", &[]).unwrap().config.http;
        assert_eq!(
            (d.timeouts.header.as_secs(), d.timeouts.idle.as_secs(), d.timeouts.bodystall.as_secs()),
            (30, 120, 60)
        );
        assert_eq!((d.maxconnections, d.maxheaders, d.manifestmemory), (0, 1000, 64 << 20));
        let l = load(
            "http:\n  timeouts: {header: 2s, idle: 1m, bodystall: 1500}\n  maxconnections: 10\n  maxheaders: 5000\n  manifestmemory: 1048576\n",
            &[],
        )
        .unwrap();
        let h = &l.config.http;
        assert_eq!(h.timeouts.header.as_secs(), 2);
        assert_eq!(h.timeouts.idle.as_secs(), 60);
        assert_eq!(h.timeouts.bodystall.as_millis(), 1500);
        assert_eq!((h.maxconnections, h.maxheaders, h.manifestmemory), (10, 5000, 1 << 20));
        let e = load("http:\n  timeouts: {idle: soon}\n", &[]).unwrap_err();
        assert_eq!(e.key, "http.timeouts.idle", "{e}");
    }
}
