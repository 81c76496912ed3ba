//! Adapter for `auth-policy-plugin`: an authorization policy run by a plugin, over
//! `Pool<AuthKind>`. The host narrows whatever the plugin grants to what was requested, so a
//! policy that over-grants gains nothing; a failed call denies.

use std::sync::Arc;

use super::wit::latest::auth::exports::berth::plugin::auth_policy as wit;
use super::wit::latest::types::RequestInfo;
use super::{AuthKind, Failure, Swap};
use crate::auth::scope::{narrow, Scope};

/// What the caller presented, as the plugin sees it.
#[derive(Debug, Clone)]
pub enum Credentials<'a> {
    Anonymous,
    /// As the client sent them; the plugin checks the password.
    Basic {
        username: &'a str,
        password: &'a str,
    },
    /// A token whose signature, issuer, audience and times the host verified.
    Bearer(&'a crate::auth::token::Claims),
}

/// A policy's answer, already narrowed to the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None`: the credentials were not accepted (or there were none).
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub granted: Vec<Scope>,
    pub cache_ttl_seconds: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Plugin(#[from] Failure),
    #[error("auth policy {policy} failed: {message}")]
    Refused { policy: String, message: String },
}

/// An `auth-policy-plugin`.
pub struct PolicyPlugin(pub Arc<Swap<AuthKind>>);

impl PolicyPlugin {
    /// The serving version (one load of a file and its config): decisions cached under one
    /// version are not reused under another.
    pub fn generation(&self) -> u64 {
        self.0.current().generation
    }

    pub async fn authorize(
        &self,
        credentials: Credentials<'_>,
        requested: &[Scope],
        request: RequestInfo,
    ) -> Result<Decision, PolicyError> {
        let p = self.0.current();
        let credentials = match credentials {
            Credentials::Anonymous => wit::Credentials::Anonymous,
            Credentials::Basic { username, password } => wit::Credentials::Basic(wit::BasicCredentials {
                username: username.to_string(),
                password: password.to_string(),
            }),
            Credentials::Bearer(c) => wit::Credentials::Bearer(wit::TokenClaims {
                issuer: c.iss.clone(),
                subject: c.sub.clone(),
                audience: c.aud.clone(),
                expires_at: c.exp,
                access: c.access.iter().map(to_wit).collect(),
            }),
        };
        let wanted: Vec<wit::Scope> = requested.iter().map(to_wit).collect();
        let answer = p
            .call("authorize", |i| {
                Box::pin(async move {
                    i.bindings
                        .berth_plugin_auth_policy()
                        .call_authorize(&mut i.store, &credentials, &wanted, &request)
                        .await
                })
            })
            .await?
            .map_err(|message| PolicyError::Refused { policy: p.name().to_string(), message })?;
        let granted: Vec<Scope> =
            answer.granted.into_iter().map(|s| Scope { kind: s.kind, name: s.name, actions: s.actions }).collect();
        let (subject, groups) = match answer.identity {
            Some(i) => (Some(i.subject), i.groups),
            None => (None, Vec::new()),
        };
        Ok(Decision {
            subject,
            groups,
            granted: narrow(&granted, requested),
            cache_ttl_seconds: answer.cache_ttl_seconds,
        })
    }
}

fn to_wit(s: &Scope) -> wit::Scope {
    wit::Scope { kind: s.kind.clone(), name: s.name.clone(), actions: s.actions.clone() }
}
