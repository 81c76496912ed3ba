//! Bearer token verification: signature (by a trusted key the token names), issuer, audience,
//! times, and the `access` claim. A verified token is cached by a hash of its text until it
//! expires, so the hot path pays for a signature once per token, not once per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::keys::TrustStore;
use super::scope::Scope;

/// Verified tokens kept at most; past it, expired entries go, then the oldest half. Bounds the
/// memory a client minting many valid tokens can make the registry hold.
const MAX_CACHED_TOKENS: usize = 10_000;

/// A token's claims, as Berth (and every Docker token server) writes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    /// Written as one string when there is one audience, as Docker's token servers do.
    #[serde(default, deserialize_with = "one_or_many", serialize_with = "string_if_one")]
    pub aud: Vec<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Scope>,
    /// The subject's groups, as the issuer's policy named them (Berth's issuer writes them; a
    /// private claim other issuers may set too): what admission policies see of who asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Set on Berth's refresh tokens, which are never access tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub berth_refresh: bool,
}

fn string_if_one<S: serde::Serializer>(aud: &[String], s: S) -> Result<S::Ok, S::Error> {
    match aud {
        [one] => s.serialize_str(one),
        many => many.serialize(s),
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(s) => vec![s],
        Aud::Many(v) => v,
    })
}

/// Why a token was refused (the challenge's `error="invalid_token"`); the text goes to the log
/// and, without the token, to the error body.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the token names no trusted key")]
    UnknownKey,
    #[error("the token's algorithm does not fit its key")]
    KeyMismatch,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is from another issuer")]
    Issuer,
    #[error("the token is for another service")]
    Audience,
    #[error("the token is a refresh token")]
    Refresh,
}

/// Checks tokens against one issuer, service and set of keys.
pub struct Verifier {
    keys: TrustStore,
    issuer: String,
    service: String,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    cache: RwLock<HashMap<[u8; 32], Arc<Claims>>>,
}

/// The algorithms accepted when `signingalgorithms` is not set: every asymmetric one `ring`
/// verifies. `none` and the HMAC family are never accepted, whatever the configuration says.
pub const DEFAULT_ALGORITHMS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA];

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Verifier {
    pub fn new(keys: TrustStore, issuer: &str, service: &str, algorithms: Vec<Algorithm>, leeway: u64) -> Verifier {
        let algorithms = algorithms
            .into_iter()
            .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        Verifier {
            keys,
            issuer: issuer.into(),
            service: service.into(),
            algorithms,
            leeway,
            cache: RwLock::new(HashMap::new()),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// An access token's claims, if every check passes.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(c) = self.cache.read().unwrap().get(&key) {
            // Cached only once fully verified; time is the one thing that changes.
            return if now() > c.exp + self.leeway { Err(TokenError::Expired) } else { Ok(c.clone()) };
        }
        let claims = Arc::new(self.verify_uncached(token)?);
        if claims.berth_refresh {
            return Err(TokenError::Refresh);
        }
        let mut cache = self.cache.write().unwrap();
        if cache.len() >= MAX_CACHED_TOKENS {
            let t = now();
            cache.retain(|_, c| t <= c.exp + self.leeway);
            if cache.len() >= MAX_CACHED_TOKENS {
                let mut exps: Vec<u64> = cache.values().map(|c| c.exp).collect();
                exps.sort_unstable();
                let cut = exps[exps.len() / 2];
                cache.retain(|_, c| c.exp > cut);
            }
        }
        cache.insert(key, claims.clone());
        Ok(claims)
    }

    /// A refresh token's claims (Berth's own, marked as such).
    pub fn verify_refresh(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = self.verify_uncached(token)?;
        if !claims.berth_refresh {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let key = match (&header.x5c, &header.kid) {
            (Some(_), kid) => {
                let chain = header.x5c_der().map_err(|_| TokenError::Malformed)?.unwrap_or_default();
                let leaf = chain.first().ok_or(TokenError::Malformed)?;
                let key = self.keys.by_leaf(leaf);
                // A token naming two keys must name the same one twice.
                if let (Some(k), Some(kid)) = (key, kid) {
                    if !self.keys.by_kid(kid).is_some_and(|named| Arc::ptr_eq(named, k)) {
                        return Err(TokenError::KeyMismatch);
                    }
                }
                key
            }
            (None, Some(kid)) => self.keys.by_kid(kid),
            (None, None) => None,
        }
        .ok_or(TokenError::UnknownKey)?;
        if !key.kind.fits(header.alg) {
            return Err(TokenError::KeyMismatch);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.service]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => TokenError::Signature,
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidIssuer => TokenError::Issuer,
                K::InvalidAudience => TokenError::Audience,
                K::InvalidAlgorithm => TokenError::KeyMismatch,
                _ => TokenError::Malformed,
            }
        })?;
        // An `iat` in the future is a clock far off or a forged token: refuse past the leeway.
        if data.claims.iat.is_some_and(|iat| iat > now() + self.leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(data.claims)
    }
}
