//! `auth`: who may do what. distribution's `token` and `htpasswd` sections with its keys, so an
//! existing `config.yml` works, and Berth's own token `issuer`. None of them: the registry is
//! open, as distribution is without an `auth` section.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{duration, resolve, ConfigError, Section};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Auth {
    pub token: Option<Token>,
    pub htpasswd: Option<Htpasswd>,
    pub issuer: Option<Issuer>,
}

/// Bearer tokens from an external issuer (GitLab, a distribution token server).
#[derive(Debug, Clone, Deserialize)]
pub struct Token {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificates whose keys may sign tokens.
    #[serde(default)]
    pub rootcertbundle: Option<PathBuf>,
    /// distribution 3: a JWK set file, keys found by `kid`.
    #[serde(default)]
    pub jwks: Option<PathBuf>,
    /// Accepted `alg`s (default: RS256/384/512, ES256/384, EdDSA). `none` and HMAC never are.
    #[serde(default)]
    pub signingalgorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// An `auth-policy` plugin deciding from the verified claims (default: the `access` claim).
    #[serde(default)]
    pub policy: Option<String>,
    /// distribution 3's redirect to the realm; accepted for compatibility, not used.
    #[serde(default)]
    pub autoredirect: Option<bool>,
}

/// Basic auth against an htpasswd file (bcrypt), straight on `/v2/`, as distribution does.
#[derive(Debug, Clone, Deserialize)]
pub struct Htpasswd {
    pub realm: String,
    pub path: PathBuf,
    /// An `auth-policy` plugin deciding what each user gets (default: everything).
    #[serde(default)]
    pub policy: Option<String>,
}

/// Berth's own token server: `GET`/`POST /auth/token` on the registry's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Issuer {
    /// The token endpoint's URL for challenges (default: `/auth/token` on the request's host).
    pub realm: Option<String>,
    pub service: String,
    pub issuer: String,
    /// PEM private key (PKCS#8, or PKCS#1 RSA) and its certificate; both absent: generated on
    /// first start and kept in `statedir`.
    pub key: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    /// Where a generated key and certificate are kept (default: `berth-auth` in the filesystem
    /// driver's root directory, else in the working directory).
    pub statedir: Option<PathBuf>,
    #[serde(with = "duration")]
    pub expiration: Duration,
    #[serde(with = "duration")]
    pub refreshexpiration: Duration,
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// The `auth-policy` plugin that decides who gets which scopes.
    pub policy: String,
}

impl Default for Issuer {
    fn default() -> Self {
        Issuer {
            realm: None,
            service: "berth".into(),
            issuer: "berth".into(),
            key: None,
            certificate: None,
            statedir: None,
            expiration: Duration::from_secs(300),
            refreshexpiration: Duration::from_secs(30 * 86_400),
            leeway: default_leeway(),
            policy: String::new(),
        }
    }
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

impl Auth {
    /// The policy plugin the configured mode names, if any.
    pub fn policy(&self) -> Option<&str> {
        match (&self.token, &self.htpasswd, &self.issuer) {
            (Some(t), _, _) => t.policy.as_deref(),
            (_, Some(h), _) => h.policy.as_deref(),
            (_, _, Some(i)) => Some(i.policy.as_str()).filter(|p| !p.is_empty()),
            _ => None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.htpasswd.is_some() || self.issuer.is_some()
    }
}

impl Section for Auth {
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(t) = &mut self.token {
            for p in [&mut t.rootcertbundle, &mut t.jwks].into_iter().flatten() {
                resolve(base, p);
            }
        }
        if let Some(h) = &mut self.htpasswd {
            resolve(base, &mut h.path);
        }
        if let Some(i) = &mut self.issuer {
            for p in [&mut i.key, &mut i.certificate, &mut i.statedir].into_iter().flatten() {
                resolve(base, p);
            }
        }
    }

    fn problems(&self, out: &mut Vec<ConfigError>) {
        let modes = [self.token.is_some(), self.htpasswd.is_some(), self.issuer.is_some()];
        if modes.iter().filter(|m| **m).count() > 1 {
            out.push(ConfigError::new("auth", "configure one of auth.token, auth.htpasswd and auth.issuer"));
        }
        if let Some(t) = &self.token {
            for (key, v) in [("realm", &t.realm), ("service", &t.service), ("issuer", &t.issuer)] {
                if v.is_empty() {
                    out.push(ConfigError::new(format!("auth.token.{key}"), "must not be empty"));
                }
            }
            if t.rootcertbundle.is_none() && t.jwks.is_none() {
                out.push(ConfigError::new(
                    "auth.token.rootcertbundle",
                    "give rootcertbundle or jwks: the keys tokens are signed with",
                ));
            }
            for (i, a) in t.signingalgorithms.iter().enumerate() {
                if let Err(m) = crate::auth::parse_algorithm(a) {
                    out.push(ConfigError::new(format!("auth.token.signingalgorithms[{i}]"), m));
                }
            }
        }
        if let Some(h) = &self.htpasswd {
            if h.path.as_os_str().is_empty() {
                out.push(ConfigError::new("auth.htpasswd.path", "must not be empty"));
            }
        }
        if let Some(i) = &self.issuer {
            if i.policy.is_empty() {
                out.push(ConfigError::new(
                    "auth.issuer.policy",
                    "name the auth-policy plugin that decides who gets what",
                ));
            }
            if i.key.is_some() != i.certificate.is_some() {
                out.push(ConfigError::new(
                    "auth.issuer.key",
                    "give key and certificate together, or neither (generated)",
                ));
            }
            if i.expiration.is_zero() {
                out.push(ConfigError::new("auth.issuer.expiration", "must be longer than zero"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;
    use std::time::Duration;

    #[test]
    fn distribution_token_section() {
        let c = load(
            "auth:\n  token:\n    realm: https://gitlab/jwt/auth\n    service: container_registry\n    issuer: gitlab-issuer\n    rootcertbundle: certs/bundle.crt\n    autoredirect: false\n",
            &[],
        )
        .unwrap()
        .config;
        let t = c.auth.token.as_ref().unwrap();
        assert!(t.rootcertbundle.as_ref().unwrap().is_absolute());
        assert_eq!(t.leeway, Duration::from_secs(60));
        assert_eq!(c.auth.policy(), None);
    }

    #[test]
    fn one_mode_and_complete() {
        let e = load("auth:\n  htpasswd: {realm: r, path: p}\n  issuer: {policy: acl}\n", &[]).unwrap_err();
        assert_eq!(e.key, "auth");
        let e = load("auth:\n  issuer: {}\n", &[]).unwrap_err();
        assert_eq!(e.key, "auth.issuer.policy");
        let e = load("auth:\n  token: {realm: r, service: s, issuer: i}\n", &[]).unwrap_err();
        assert_eq!(e.key, "auth.token.rootcertbundle");
        let e = load("auth:\n  token: {realm: r, service: s, issuer: i, jwks: j, signingalgorithms: [HS256]}\n", &[])
            .unwrap_err();
        assert_eq!(e.key, "auth.token.signingalgorithms[0]");
        let c =
            load("auth:\n  issuer: {policy: acl, expiration: 2s, leeway: 0}\nplugins:\n  acl: {path: a.wasm}\n", &[])
                .unwrap()
                .config;
        let i = c.auth.issuer.unwrap();
        assert_eq!((i.expiration, i.leeway, i.service.as_str()), (Duration::from_secs(2), Duration::ZERO, "berth"));
    }
}
