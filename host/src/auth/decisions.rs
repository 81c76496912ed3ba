//! The policy plugin's decisions, cached for the TTL it returns under a keyed hash of the
//! plugin version (a reload starts afresh), the credentials and the scopes asked for. The key is SHA-256 over a
//! per-process random secret first, so a password is never kept, not even as a plain hash an
//! attacker with a memory dump could test guesses against.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::scope::Scope;
use crate::plugins::auth::{Credentials, Decision, PolicyError, PolicyPlugin};
use crate::plugins::wit::latest::types::RequestInfo;

/// Decisions kept at most; past it, expired ones go, then all (bounds memory under a flood of
/// distinct credentials or scopes).
const MAX_CACHED: usize = 20_000;
/// However long a plugin asks, a decision is re-asked at least this often.
const MAX_TTL: Duration = Duration::from_secs(3600);

pub struct Decisions {
    policy: PolicyPlugin,
    secret: [u8; 32],
    cache: Mutex<HashMap<[u8; 32], (Decision, Instant)>>,
}

impl Decisions {
    pub fn new(policy: PolicyPlugin) -> Decisions {
        Decisions { policy, secret: rand::random(), cache: Mutex::new(HashMap::new()) }
    }

    fn key(&self, credentials: &Credentials<'_>, token: Option<&str>, requested: &[Scope]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(self.policy.generation().to_le_bytes());
        match credentials {
            Credentials::Anonymous => h.update(b"\x00anonymous"),
            Credentials::Basic { username, password } => {
                h.update(b"\x00basic\x00");
                h.update(username.as_bytes());
                h.update([0]);
                h.update(password.as_bytes());
            }
            Credentials::Bearer(c) => {
                h.update(b"\x00bearer\x00");
                match token {
                    Some(t) => h.update(t.as_bytes()),
                    None => h.update(serde_json::to_vec(c).unwrap_or_default()),
                }
            }
        }
        for s in requested {
            h.update([0]);
            h.update(s.to_string().as_bytes());
        }
        h.finalize().into()
    }

    /// The policy's decision for these credentials and scopes (narrowed to them), from the
    /// cache while it is fresh. A failed call is logged and denies.
    pub async fn decide(
        &self,
        credentials: Credentials<'_>,
        token: Option<&str>,
        requested: &[Scope],
        request: RequestInfo,
    ) -> Result<Decision, PolicyError> {
        let key = self.key(&credentials, token, requested);
        if let Some((d, until)) = self.cache.lock().unwrap().get(&key) {
            if Instant::now() < *until {
                return Ok(d.clone());
            }
        }
        let decision = self.policy.authorize(credentials, requested, request).await.inspect_err(|e| {
            tracing::error!(error = %e, "auth policy failed; denying");
        })?;
        let ttl = Duration::from_secs(decision.cache_ttl_seconds as u64).min(MAX_TTL);
        if !ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap();
            if cache.len() >= MAX_CACHED {
                let now = Instant::now();
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, (decision.clone(), Instant::now() + ttl));
        }
        Ok(decision)
    }
}
