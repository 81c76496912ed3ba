//! `http`: the registry listener, TLS and the debug server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Serve HTTPS with this certificate and key (PEM) instead of plain HTTP.
    pub tls: Option<Tls>,
    /// The debug server: health, vars and Prometheus metrics on a separate address.
    pub debug: Option<Debug>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            relativeurls: false,
            maxinflight: 0,
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
}
