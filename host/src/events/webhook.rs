//! The native sink: a batch POSTed as distribution's envelope, over a pooled hyper client
//! (HTTPS through rustls, trusting the system store or the endpoint's `cafile`). Any status
//! from 200 to 399 is success, as distribution counts it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::outbox::Stored;
use super::record::{envelope, EVENTS_MEDIA_TYPE};
use super::sink::{Sink, SinkError};
use crate::config::Endpoint;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("notifications.endpoints {name}: cafile {path}: {why}")]
    CaFile { name: String, path: String, why: String },
    #[error("notifications.endpoints {name}: no trusted certificates in the system store")]
    NoRoots { name: String },
    #[error("notifications.endpoints {name}: {why}")]
    Invalid { name: String, why: String },
}

pub struct Webhook {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    headers: HeaderMap,
    timeout: Duration,
    /// The last batch's body, taken back once hyper let go of it: a batch is hundreds of
    /// kilobytes, and a fresh one each time was pages faulted in and given back.
    spare: std::sync::Mutex<Vec<u8>>,
}

fn roots(e: &Endpoint) -> Result<rustls::RootCertStore, WebhookError> {
    let mut roots = rustls::RootCertStore::empty();
    match &e.cafile {
        Some(path) => {
            let ca = |why: String| WebhookError::CaFile { name: e.name.clone(), path: path.display().to_string(), why };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|err| ca(err.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|err| ca(err.to_string()))?;
            if certs.is_empty() {
                return Err(ca("no PEM CERTIFICATE section found".into()));
            }
            for c in certs {
                roots.add(c).map_err(|err| ca(err.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() && e.url.starts_with("https:") {
                return Err(WebhookError::NoRoots { name: e.name.clone() });
            }
        }
    }
    Ok(roots)
}

impl Webhook {
    pub fn new(e: &Endpoint) -> Result<Webhook, WebhookError> {
        let invalid = |why: String| WebhookError::Invalid { name: e.name.clone(), why };
        let url: Uri = e.url.parse().map_err(|err: http::uri::InvalidUri| invalid(err.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid(err.to_string()))?
            .with_root_certificates(roots(e)?)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(e.timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        let mut headers = HeaderMap::new();
        for (k, values) in &e.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|err| invalid(format!("header {k}: {err}")))?;
            for v in values {
                let v = HeaderValue::from_str(v).map_err(|err| invalid(format!("header {k}: {err}")))?;
                headers.append(name.clone(), v);
            }
        }
        Ok(Webhook { client, url, headers, timeout: e.timeout, spare: Default::default() })
    }

    async fn post(&self, body: Bytes) -> Result<(), String> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, EVENTS_MEDIA_TYPE)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        for (k, v) in &self.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        let resp = self.client.request(req).await.map_err(|e| {
            use std::error::Error;
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })?;
        let status = resp.status();
        // Read the answer so the connection can carry the next batch.
        let _ = resp.into_body().collect().await;
        if (200..400).contains(&status.as_u16()) {
            Ok(())
        } else {
            Err(format!("{}: response status {status} unaccepted", self.url))
        }
    }
}

#[async_trait]
impl Sink for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn deliver(&self, events: &[Stored]) -> Result<(), SinkError> {
        let mut buf = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        envelope(&mut buf, events.iter().map(|e| &e.json[..]));
        let body = Bytes::from(buf);
        let answer = tokio::time::timeout(self.timeout, self.post(body.clone())).await;
        // Sole owner again once the request is done with it (not after a timeout, say).
        if let Ok(b) = body.try_into_mut() {
            *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = b.into();
        }
        match answer {
            Ok(r) => r.map_err(SinkError::Retry),
            Err(_) => Err(SinkError::Retry(format!("{}: no answer within {:?}", self.url, self.timeout))),
        }
    }
}
