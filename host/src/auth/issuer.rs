//! Berth's own token server, for sites without an issuer: `GET /auth/token` (Docker's token
//! protocol, Basic credentials or none) and `POST /auth/token` (OAuth2 `password` and
//! `refresh_token` grants). The policy plugin decides what each caller gets; the token carries
//! exactly that, signed with the issuer's key, and the registry verifies it like any other.
//!
//! The key and its certificate come from config, or are generated on first start (EC P-256)
//! and kept, the certificate where an operator can hand it to another registry's
//! `rootcertbundle`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use x509_cert::der::{Decode, DecodePem};

use super::keys::{libtrust_key_id, KeyType, TrustStore};
use super::scope::{narrow, Scope};
use super::token::{now, Claims, Verifier};
use super::{count, throttled, unauthorized, Auth, Caller};
use crate::api::ApiError;
use crate::config::{self, Config, Driver};
use crate::plugins::auth::Credentials;

/// Scopes one token request may ask for; more is a client bug or an attack on the policy.
const MAX_SCOPES: usize = 64;

pub struct Issuer {
    realm: Option<String>,
    service: String,
    issuer: String,
    expiration: Duration,
    refresh_expiration: Duration,
    key: EncodingKey,
    header: Header,
    verifier: Verifier,
}

/// Where a generated key and certificate live.
fn state_dir(config: &Config, c: &config::Issuer) -> PathBuf {
    if let Some(d) = &c.statedir {
        return d.clone();
    }
    match config.driver() {
        Driver::Filesystem(root) => root.join("berth-auth"),
        _ => std::env::current_dir().unwrap_or_default().join("berth-auth"),
    }
}

/// The PEM block's DER bytes and label.
fn pem_block(text: &str) -> Result<(String, Vec<u8>), String> {
    let start = text.find("-----BEGIN ").ok_or("no PEM block")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----").ok_or("bad PEM header")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end = rest.find("-----END ").ok_or("no PEM end")?;
    let b64: String = rest[body_start..end].chars().filter(|c| !c.is_whitespace()).collect();
    Ok((label, STANDARD.decode(b64).map_err(|e| format!("bad PEM body: {e}"))?))
}

/// An encoding key for `kind` from a PEM private key (PKCS#8; PKCS#1 for RSA too).
fn encoding_key(pem: &str, kind: KeyType) -> Result<EncodingKey, String> {
    let (label, der) = pem_block(pem)?;
    match (label.as_str(), kind) {
        ("PRIVATE KEY", KeyType::Rsa) => {
            let info = pkcs8::PrivateKeyInfo::from_der(&der).map_err(|e| format!("bad PKCS#8 key: {e}"))?;
            Ok(EncodingKey::from_rsa_der(info.private_key))
        }
        ("RSA PRIVATE KEY", KeyType::Rsa) => Ok(EncodingKey::from_rsa_der(&der)),
        ("PRIVATE KEY", KeyType::P256 | KeyType::P384) => Ok(EncodingKey::from_ec_der(&der)),
        ("PRIVATE KEY", KeyType::Ed25519) => Ok(EncodingKey::from_ed_der(&der)),
        (l, _) => {
            Err(format!("a {l} PEM block does not fit the certificate's key; give the key as PKCS#8 (\"PRIVATE KEY\")"))
        }
    }
}

/// Generates an EC P-256 key and a self-signed certificate for it, written owner-only.
fn generate(dir: &Path, service: &str, issuer: &str) -> Result<(String, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec![service.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, issuer);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let (key_pem, cert_pem) = (key.serialize_pem(), cert.pem());
    write_private(&dir.join("issuer.key"), &key_pem)?;
    std::fs::write(dir.join("issuer.crt"), &cert_pem).map_err(|e| format!("cannot write the certificate: {e}"))?;
    Ok((key_pem, cert_pem))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

impl Issuer {
    pub fn open(config: &Config, c: &config::Issuer) -> Result<Issuer, String> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let (key_pem, cert_pem) = match (&c.key, &c.certificate) {
            (Some(k), Some(cert)) => (read(k)?, read(cert)?),
            _ => {
                let dir = state_dir(config, c);
                let (k, cert) = (dir.join("issuer.key"), dir.join("issuer.crt"));
                if k.exists() && cert.exists() {
                    (read(&k)?, read(&cert)?)
                } else {
                    let made = generate(&dir, &c.service, &c.issuer)?;
                    tracing::info!(certificate = %cert.display(), "generated the token issuer's key; hand this certificate to other registries' rootcertbundle");
                    made
                }
            }
        };
        let cert = x509_cert::Certificate::from_pem(cert_pem.as_bytes()).map_err(|e| format!("certificate: {e}"))?;
        let cert_der = x509_cert::der::Encode::to_der(&cert).map_err(|e| e.to_string())?;
        let store = TrustStore::single(&cert_der)?;
        let spki_der =
            x509_cert::der::Encode::to_der(&cert.tbs_certificate.subject_public_key_info).map_err(|e| e.to_string())?;
        let kind = store.by_leaf(&cert_der).map(|k| k.kind).ok_or("certificate key unusable")?;
        let key = encoding_key(&key_pem, kind)?;
        let alg = kind.signing_algorithm();
        let mut header = Header::new(alg);
        header.typ = Some("JWT".into());
        header.kid = Some(libtrust_key_id(&spki_der));
        header.x5c = Some(vec![STANDARD.encode(&cert_der)]);
        let verifier = Verifier::new(store, &c.issuer, &c.service, vec![alg], c.leeway.as_secs());
        let issuer = Issuer {
            realm: c.realm.clone(),
            service: c.service.clone(),
            issuer: c.issuer.clone(),
            expiration: c.expiration,
            refresh_expiration: c.refreshexpiration,
            key,
            header,
            verifier,
        };
        // A key that does not match its certificate would issue tokens no one accepts: prove it.
        let probe = issuer.sign("", &[], vec![], Duration::from_secs(60), false)?;
        issuer.verifier.verify(&probe).map_err(|e| format!("the key does not match the certificate: {e}"))?;
        Ok(issuer)
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The token endpoint clients are sent to: configured, or `/auth/token` on the host the
    /// client used (through a proxy's forwarded headers, as the registry's own URLs are).
    pub fn realm(&self, headers: &HeaderMap, tls: bool) -> String {
        if let Some(r) = &self.realm {
            return r.clone();
        }
        let origin = crate::api::origin(headers, tls)
            .unwrap_or_else(|| format!("{}://localhost", if tls { "https" } else { "http" }));
        format!("{origin}/auth/token")
    }

    fn sign(
        &self,
        subject: &str,
        groups: &[String],
        access: Vec<Scope>,
        lifetime: Duration,
        refresh: bool,
    ) -> Result<String, String> {
        let t = now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_string(),
            aud: vec![self.service.clone()],
            exp: t + lifetime.as_secs(),
            nbf: Some(t),
            iat: Some(t),
            jti: hex::encode(rand::random::<[u8; 16]>()),
            access,
            groups: groups.to_vec(),
            berth_refresh: refresh,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| format!("signing failed: {e}"))
    }
}

/// A token request's parameters (query string or form body).
pub struct TokenRequest {
    pub params: Vec<(String, String)>,
    pub post: bool,
}

impl TokenRequest {
    fn get(&self, k: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    /// `scope` may repeat (GET) or hold several space-separated scopes (POST).
    fn scopes(&self) -> Result<Vec<Scope>, ApiError> {
        let mut out = Vec::new();
        for (_, v) in self.params.iter().filter(|(k, _)| k == "scope") {
            for s in v.split(' ').filter(|s| !s.is_empty()) {
                out.push(Scope::parse(s).ok_or_else(|| bad_request(&format!("scope {s:?} is not type:name:actions")))?);
            }
        }
        if out.len() > MAX_SCOPES {
            return Err(bad_request("too many scopes in one request"));
        }
        Ok(out)
    }
}

fn bad_request(message: &str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", message)
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Auth {
    /// `GET`/`POST /auth/token`: who the caller is, what the policy grants of what they asked,
    /// as a signed token (and a refresh token when asked for offline use).
    pub async fn issue(&self, caller: &Caller<'_>, req: TokenRequest) -> Result<serde_json::Value, ApiError> {
        let issuer = self.issuer().ok_or_else(|| bad_request("this registry does not issue tokens"))?;
        let decisions = self.decisions.as_ref().ok_or_else(|| bad_request("no auth policy"))?;
        if let Some(s) = req.get("service") {
            if s != issuer.service {
                return Err(bad_request(&format!("this issuer serves {:?}, not {s:?}", issuer.service)));
            }
        }
        let requested = req.scopes()?;
        let basic_challenge =
            || format!("Basic realm=\"{}\"", super::quoted(&issuer.realm(caller.headers, caller.tls)));
        let grant = req.get("grant_type");
        let offline = req.get("offline_token") == Some("true")
            || req.get("access_type") == Some("offline")
            || (req.post && grant == Some("refresh_token"));
        // Credentials: a refresh token, a password grant, Basic, or none.
        let refresh_claims;
        let (credentials, user): (Credentials, Option<String>);
        let basic;
        match (req.post, grant) {
            (true, Some("refresh_token")) => {
                let t = req.get("refresh_token").ok_or_else(|| bad_request("refresh_token is missing"))?;
                refresh_claims = issuer.verifier.verify_refresh(t).map_err(|e| {
                    count("invalid_token");
                    unauthorized(basic_challenge(), &format!("invalid refresh token: {e}"), &[])
                })?;
                user = Some(refresh_claims.sub.clone());
                credentials = Credentials::Bearer(&refresh_claims);
            }
            (true, Some("password")) => {
                let u = req.get("username").unwrap_or_default().to_string();
                let p = req.get("password").unwrap_or_default().to_string();
                basic = (u, p);
                user = Some(basic.0.clone());
                credentials = Credentials::Basic { username: &basic.0, password: &basic.1 };
            }
            (true, other) => {
                return Err(bad_request(&format!("grant_type {other:?} is not supported (password, refresh_token)")))
            }
            (false, _) => match caller.basic() {
                Some(Ok(b)) => {
                    basic = b;
                    user = Some(basic.0.clone());
                    credentials = Credentials::Basic { username: &basic.0, password: &basic.1 };
                }
                Some(Err(())) => {
                    count("failed_login");
                    return Err(unauthorized(basic_challenge(), "malformed Basic credentials", &[]));
                }
                None => {
                    user = None;
                    credentials = Credentials::Anonymous;
                }
            },
        }
        let password_login = matches!(credentials, Credentials::Basic { .. });
        if password_login {
            if let Some(wait) = self.throttle.wait(caller.ip(), user.as_deref()) {
                return Err(throttled(wait));
            }
        }
        let decision = decisions
            .decide(credentials, None, &requested, caller.request_info())
            .await
            .map_err(|_| super::policy_failed())?;
        if password_login {
            if decision.subject.is_none() {
                self.throttle.failed(caller.ip(), user.as_deref());
                count("failed_login");
                tracing::info!(user = user.as_deref().unwrap_or(""), "login failed");
                return Err(unauthorized(basic_challenge(), "invalid username or password", &[]));
            }
            self.throttle.succeeded(caller.ip(), user.as_deref());
        }
        let granted = narrow(&decision.granted, &requested);
        let subject = decision.subject.clone().unwrap_or_default();
        let token =
            issuer.sign(&subject, &decision.groups, granted.clone(), issuer.expiration, false).map_err(|e| {
                tracing::error!(error = %e, "cannot sign a token");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "cannot sign a token")
            })?;
        crate::metrics::get().tokens_issued.inc();
        count("allowed");
        tracing::info!(subject = %subject, scopes = %super::scope::join(&granted), "token issued");
        let mut out = json!({
            "token": token,
            "access_token": token,
            "expires_in": issuer.expiration.as_secs(),
            "issued_at": rfc3339(SystemTime::now()),
        });
        if req.post {
            out["scope"] = json!(super::scope::join(&granted));
        }
        if offline && decision.subject.is_some() {
            let refresh = match grant {
                Some("refresh_token") => req.get("refresh_token").unwrap_or_default().to_string(),
                _ => issuer.sign(&subject, &[], vec![], issuer.refresh_expiration, true).map_err(|e| {
                    tracing::error!(error = %e, "cannot sign a refresh token");
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "cannot sign a token")
                })?,
            };
            out["refresh_token"] = json!(refresh);
        }
        Ok(out)
    }
}
