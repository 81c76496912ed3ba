//! Authentication and authorization, in front of every `/v2/` request.
//!
//! - `scope`: what a request needs, what a token grants, narrowing;
//! - `keys`: the keys tokens may be signed with, found by `x5c`, libtrust `kid` or JWK thumbprint;
//! - `token`: verifying a bearer token (and caching it until it expires);
//! - `htpasswd`: distribution's Basic auth file (bcrypt);
//! - `throttle`: failed-login backoff per address and per user;
//! - `issuer`: Berth's own token server (`/auth/token`), its key and certificate;
//! - `decisions`: the policy plugin's answers, cached for the TTL it gives.
//!
//! The host checks what only it can (signatures, times, audience, bcrypt hashes); who gets
//! what is the `access` claim of a token, or an `auth-policy` plugin's decision, narrowed by
//! the host to what the request asked for.

mod decisions;
pub mod htpasswd;
pub mod issuer;
pub mod keys;
pub mod scope;
mod throttle;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::api::ApiError;
use crate::config::Config;
use crate::metrics;
use crate::plugins::auth::{Credentials, PolicyPlugin};
use crate::plugins::wit::latest::types::RequestInfo;
use decisions::Decisions;
use htpasswd::HtpasswdFile;
use issuer::Issuer;
use scope::{covers, Scope};
use throttle::Throttle;
use token::{TokenError, Verifier};

/// An `alg` name from `signingalgorithms`: any asymmetric one; `none` and HMAC refused.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => {
            Err(format!("{name} is an HMAC algorithm: tokens signed with a shared secret are never accepted"))
        }
        Ok(a) => Ok(a),
        Err(_) => {
            Err(format!("unknown algorithm {name:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"))
        }
    }
}

/// Why auth could not be set up (the server refuses to start; `config check` reports it).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("auth.token: {0}")]
    Keys(#[from] keys::KeyError),
    #[error("auth.htpasswd: {0}")]
    Htpasswd(#[from] htpasswd::HtpasswdError),
    #[error("auth.issuer: {0}")]
    Issuer(String),
    #[error("{0}")]
    Config(String),
}

/// For `berth config check`: loads the files the auth mode names (a bundle, a JWKS file, an
/// htpasswd file, the issuer's configured key and certificate) as `serve` would, without
/// generating anything.
pub fn check(config: &Config) -> Result<(), SetupError> {
    let a = &config.auth;
    if let Some(t) = &a.token {
        keys::TrustStore::load(t.rootcertbundle.as_deref(), t.jwks.as_deref())?;
    }
    if let Some(h) = &a.htpasswd {
        HtpasswdFile::open(&h.path)?;
    }
    if let Some(i) = &a.issuer {
        if i.key.is_some() {
            Issuer::open(config, i).map_err(SetupError::Issuer)?;
        }
    }
    Ok(())
}

/// Who made a request, once allowed.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The authenticated subject; empty for anonymous (or no auth configured).
    pub subject: String,
    /// The subject's groups: the policy's answer when it decided this request, else the
    /// token's `groups` claim (none for Basic without a policy).
    pub groups: Vec<String>,
}

/// What the auth layer knows of a request.
pub struct Caller<'a> {
    pub headers: &'a HeaderMap,
    pub peer: Option<SocketAddr>,
    pub method: &'a Method,
    pub request_id: &'a str,
    /// The listener serves HTTPS (for a realm derived from the request).
    pub tls: bool,
}

impl Caller<'_> {
    fn request_info(&self) -> RequestInfo {
        RequestInfo {
            id: self.request_id.to_string(),
            method: self.method.to_string(),
            addr: self.peer.map(|p| p.to_string()).unwrap_or_default(),
            user_agent: self.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(String::from),
        }
    }

    fn authorization(&self) -> Option<(&str, &str)> {
        let v = self.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, rest) = v.split_once(' ')?;
        Some((scheme, rest.trim()))
    }

    fn bearer(&self) -> Option<&str> {
        self.authorization().filter(|(s, _)| s.eq_ignore_ascii_case("bearer")).map(|(_, t)| t)
    }

    /// Basic credentials, decoded; `Err` for a malformed header.
    fn basic(&self) -> Option<Result<(String, String), ()>> {
        let (_, b64) = self.authorization().filter(|(s, _)| s.eq_ignore_ascii_case("basic"))?;
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(b64).ok().and_then(|b| String::from_utf8(b).ok());
        Some(decoded.and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string()))).ok_or(()))
    }

    fn ip(&self) -> Option<std::net::IpAddr> {
        self.peer.map(|p| p.ip())
    }
}

enum Mode {
    Token { realm: String, verifier: Verifier },
    Htpasswd { realm: String, file: HtpasswdFile },
    Issuer(Issuer),
}

/// The configured auth: one mode, an optional policy plugin, the failed-login throttle.
pub struct Auth {
    mode: Mode,
    decisions: Option<Decisions>,
    throttle: Throttle,
}

fn count(outcome: &'static str) {
    metrics::get().auth_outcomes.get_or_create(&metrics::AuthLabels { outcome }).inc();
}

/// The answer to a refused request: the spec's JSON body and the challenge clients act on.
fn unauthorized(challenge: String, message: &str, needed: &[Scope]) -> ApiError {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message);
    let detail: Vec<_> = needed
        .iter()
        .flat_map(|s| s.actions.iter().map(move |a| json!({"Type": s.kind, "Name": s.name, "Action": a})))
        .collect();
    if !detail.is_empty() {
        e.detail = json!(detail);
    }
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        e.headers.push(("www-authenticate", v));
    }
    e
}

fn throttled(wait: Duration) -> ApiError {
    count("throttled");
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TOOMANYREQUESTS",
        "too many failed logins; wait before trying again",
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        e.headers.push(("retry-after", v));
    }
    e
}

fn policy_failed() -> ApiError {
    count("denied");
    ApiError::new(StatusCode::FORBIDDEN, "DENIED", "the authorization policy failed; access denied")
}

/// `s` as the inside of a quoted-string in a challenge.
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Auth {
    /// Sets up the configured mode (None: no `auth` section). `policy` is the loaded plugin the
    /// mode names, if it names one.
    pub async fn build(config: &Config, policy: Option<PolicyPlugin>) -> Result<Option<Arc<Auth>>, SetupError> {
        let a = &config.auth;
        let mode = if let Some(t) = &a.token {
            let keys = keys::TrustStore::load(t.rootcertbundle.as_deref(), t.jwks.as_deref())?;
            let algorithms = if t.signingalgorithms.is_empty() {
                token::DEFAULT_ALGORITHMS.to_vec()
            } else {
                t.signingalgorithms
                    .iter()
                    .map(|n| parse_algorithm(n))
                    .collect::<Result<_, _>>()
                    .map_err(SetupError::Config)?
            };
            let verifier = Verifier::new(keys, &t.issuer, &t.service, algorithms, t.leeway.as_secs());
            Mode::Token { realm: t.realm.clone(), verifier }
        } else if let Some(h) = &a.htpasswd {
            Mode::Htpasswd { realm: h.realm.clone(), file: HtpasswdFile::open(&h.path)? }
        } else if let Some(i) = &a.issuer {
            if policy.is_none() {
                return Err(SetupError::Config("auth.issuer.policy: the issuer needs its auth-policy plugin".into()));
            }
            Mode::Issuer(Issuer::open(config, i).map_err(SetupError::Issuer)?)
        } else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Auth { mode, decisions: policy.map(Decisions::new), throttle: Throttle::default() })))
    }

    /// The issuer, when Berth issues its own tokens (it then serves `/auth/token`).
    pub fn issuer(&self) -> Option<&Issuer> {
        match &self.mode {
            Mode::Issuer(i) => Some(i),
            _ => None,
        }
    }

    /// The `Bearer` challenge for `needed`, with an error when a token was presented.
    fn bearer_challenge(&self, caller: &Caller, needed: &[Scope], error: Option<&str>) -> String {
        let (realm, service) = match &self.mode {
            Mode::Token { realm, verifier } => (realm.clone(), verifier.service().to_string()),
            Mode::Issuer(i) => (i.realm(caller.headers, caller.tls), i.service().to_string()),
            Mode::Htpasswd { realm, .. } => return format!("Basic realm=\"{}\"", quoted(realm)),
        };
        let mut c = format!("Bearer realm=\"{}\",service=\"{}\"", quoted(&realm), quoted(&service));
        if !needed.is_empty() {
            c.push_str(&format!(",scope=\"{}\"", quoted(&scope::join(needed))));
        }
        if let Some(e) = error {
            c.push_str(&format!(",error=\"{e}\""));
        }
        c
    }

    /// Decides a registry request that needs `needed` (empty for `/v2/`, which needs only a
    /// valid login). `Err` is the answer to send.
    pub async fn authorize(&self, caller: &Caller<'_>, needed: &[Scope]) -> Result<Access, ApiError> {
        let outcome = match &self.mode {
            Mode::Htpasswd { realm, file } => self.authorize_basic(caller, needed, realm, file).await,
            Mode::Token { verifier, .. } => self.authorize_bearer(caller, needed, verifier, true).await,
            Mode::Issuer(i) => self.authorize_bearer(caller, needed, i.verifier(), false).await,
        };
        if outcome.is_ok() {
            count("allowed");
        }
        outcome
    }

    async fn authorize_bearer(
        &self,
        caller: &Caller<'_>,
        needed: &[Scope],
        verifier: &Verifier,
        external: bool,
    ) -> Result<Access, ApiError> {
        let Some(token) = caller.bearer() else {
            count("challenged");
            let c = self.bearer_challenge(caller, needed, None);
            return Err(unauthorized(c, "authentication required", needed));
        };
        let claims = match verifier.verify(token) {
            Ok(c) => c,
            Err(e) => {
                count("invalid_token");
                tracing::info!(reason = %e, "bearer token refused");
                let c = self.bearer_challenge(caller, needed, Some("invalid_token"));
                return Err(unauthorized(c, &refused(&e), needed));
            }
        };
        let (granted, groups) = match (&self.decisions, external) {
            // Berth's own tokens carry what its policy granted when they were issued.
            (Some(d), true) if !needed.is_empty() => {
                let answer = d
                    .decide(Credentials::Bearer(&claims), Some(token), needed, caller.request_info())
                    .await
                    .map_err(|_| policy_failed())?;
                (answer.granted, answer.groups)
            }
            _ => (claims.access.clone(), claims.groups.clone()),
        };
        if !covers(&granted, needed) {
            count("denied");
            let c = self.bearer_challenge(caller, needed, Some("insufficient_scope"));
            return Err(unauthorized(c, "the token does not grant this access", needed));
        }
        Ok(Access { subject: claims.sub.clone(), groups })
    }

    async fn authorize_basic(
        &self,
        caller: &Caller<'_>,
        needed: &[Scope],
        realm: &str,
        file: &HtpasswdFile,
    ) -> Result<Access, ApiError> {
        let challenge = format!("Basic realm=\"{}\"", quoted(realm));
        let (user, password) = match caller.basic() {
            Some(Ok(c)) => c,
            Some(Err(())) => {
                count("failed_login");
                return Err(unauthorized(challenge, "malformed Basic credentials", needed));
            }
            None => {
                count("challenged");
                return Err(unauthorized(challenge, "authentication required", needed));
            }
        };
        if let Some(wait) = self.throttle.wait(caller.ip(), Some(&user)) {
            return Err(throttled(wait));
        }
        if !file.check(&user, &password).await {
            self.throttle.failed(caller.ip(), Some(&user));
            count("failed_login");
            tracing::info!(user = %user, "login failed");
            return Err(unauthorized(challenge, "invalid username or password", needed));
        }
        self.throttle.succeeded(caller.ip(), Some(&user));
        let mut groups = Vec::new();
        if let Some(d) = &self.decisions {
            if !needed.is_empty() {
                let answer = d
                    .decide(
                        Credentials::Basic { username: &user, password: &password },
                        None,
                        needed,
                        caller.request_info(),
                    )
                    .await
                    .map_err(|_| policy_failed())?;
                if !covers(&answer.granted, needed) {
                    count("denied");
                    return Err(ApiError::new(StatusCode::FORBIDDEN, "DENIED", format!("{user} may not do this")));
                }
                groups = answer.groups;
            }
        }
        Ok(Access { subject: user, groups })
    }
}

/// A refused token's reason, safe for the error body (never the token).
fn refused(e: &TokenError) -> String {
    format!("invalid token: {e}")
}

/// The scopes a registry request needs, as distribution computes them: reads `pull`, writes
/// `pull,push`, any `DELETE` `delete`, a cross-repository mount `pull` on its source too, and
/// the catalog `registry:catalog:*`. `None` for a path outside `/v2/`.
pub fn needed(target: Target<'_>, method: &Method, mount_from: Option<&str>) -> Vec<Scope> {
    let repo = match target {
        Target::Base => return Vec::new(),
        Target::Catalog => return vec![Scope::catalog()],
        Target::Repository(name) => name,
    };
    let mut out = vec![match *method {
        Method::GET | Method::HEAD => Scope::repository(repo, &["pull"]),
        Method::DELETE => Scope::repository(repo, &["delete"]),
        _ => Scope::repository(repo, &["pull", "push"]),
    }];
    if let Some(from) = mount_from.filter(|f| *f != repo && *method == Method::POST) {
        out.push(Scope::repository(from, &["pull"]));
    }
    out
}

/// What a request is about, for [`needed`].
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// `/v2/` itself, or a path under it that names nothing (answered 404 once allowed).
    Base,
    Catalog,
    Repository(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_needed_as_distribution() {
        let r = Target::Repository("team/app");
        assert_eq!(needed(r, &Method::GET, None), [Scope::repository("team/app", &["pull"])]);
        assert_eq!(needed(r, &Method::HEAD, None), [Scope::repository("team/app", &["pull"])]);
        assert_eq!(needed(r, &Method::PUT, None), [Scope::repository("team/app", &["pull", "push"])]);
        assert_eq!(needed(r, &Method::PATCH, None), [Scope::repository("team/app", &["pull", "push"])]);
        assert_eq!(needed(r, &Method::DELETE, None), [Scope::repository("team/app", &["delete"])]);
        assert_eq!(
            needed(r, &Method::POST, Some("other/base")),
            [Scope::repository("team/app", &["pull", "push"]), Scope::repository("other/base", &["pull"])]
        );
        assert_eq!(needed(Target::Catalog, &Method::GET, None), [Scope::catalog()]);
        assert!(needed(Target::Base, &Method::GET, None).is_empty());
    }

    #[test]
    fn hmac_and_none_are_never_configurable() {
        assert!(parse_algorithm("HS256").is_err());
        assert!(parse_algorithm("none").is_err());
        assert_eq!(parse_algorithm("ES256").unwrap(), Algorithm::ES256);
    }
}
