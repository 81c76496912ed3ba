//! HTTPS: the PEM certificate chain and key of `http.tls`, loaded once at startup into a rustls
//! acceptor (ring provider, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`). A problem names its config key, so
//! `berth serve` and `berth config check` report it the same way.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, Tls};

/// The ALPN protocol id of HTTP/2; `server::serve` speaks HTTP/2 on a connection that chose it.
pub const ALPN_H2: &[u8] = b"h2";

const CERTIFICATE_KEY: &str = "http.tls.certificate";
const KEY_KEY: &str = "http.tls.key";

fn problem(key: &str, path: &Path, e: impl std::fmt::Display) -> ConfigError {
    ConfigError { key: key.into(), message: format!("{}: {e}", path.display()) }
}

/// Reads the certificate chain (leaf first); fails on a missing, unreadable or empty file.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| problem(CERTIFICATE_KEY, path, describe(e)))?;
    if certs.is_empty() {
        return Err(problem(CERTIFICATE_KEY, path, "no PEM CERTIFICATE section found"));
    }
    Ok(certs)
}

/// Reads the private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| problem(KEY_KEY, path, describe(e)))
}

fn describe(e: pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => "no PEM private key section found".into(),
        e => format!("not valid PEM: {e}"),
    }
}

/// The server configuration: every problem with the files, each naming its key.
pub fn server_config(tls: &Tls) -> Result<rustls::ServerConfig, Vec<ConfigError>> {
    let (certs, key) = match (load_certificates(&tls.certificate), load_key(&tls.key)) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![ConfigError { key: "http.tls".into(), message: e.to_string() }])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => "does not match the certificate's public key".to_string(),
                e => e.to_string(),
            };
            vec![problem(KEY_KEY, &tls.key, why)]
        })?;
    // HTTP/2 first: a client offering both gets it (one connection multiplexes a pull's blobs).
    config.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The acceptor `server::serve` wraps each connection in.
pub fn acceptor(tls: &Tls) -> Result<TlsAcceptor, Vec<ConfigError>> {
    Ok(TlsAcceptor::from(Arc::new(server_config(tls)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(dir: &Path, cert: &str, key: &str) -> Tls {
        std::fs::write(dir.join("c.pem"), cert).unwrap();
        std::fs::write(dir.join("k.pem"), key).unwrap();
        Tls { certificate: dir.join("c.pem"), key: dir.join("k.pem") }
    }

    #[test]
    fn problems_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Tls { certificate: dir.path().join("none.pem"), key: dir.path().join("none.key") };
        let errs = server_config(&missing).unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, [CERTIFICATE_KEY, KEY_KEY]);
        assert!(errs[0].message.contains("cannot read"), "{}", errs[0]);

        let errs = server_config(&tls(dir.path(), "not pem", "not pem either")).unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, [CERTIFICATE_KEY, KEY_KEY]);

        // Well-formed PEM whose content is not a key rustls can load.
        let bogus_cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let bogus_key = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
        let errs = server_config(&tls(dir.path(), bogus_cert, bogus_key)).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].key, KEY_KEY, "{}", errs[0]);
    }
}
