//! Auth policies: decide who a caller is and which of the requested scopes they get.
//!
//! The host verifies what only it can before calling — a bearer token's signature, issuer,
//! audience and times — and hands the policy the credentials: [`Credentials::Anonymous`],
//! [`Credentials::Basic`] (username and password *as the client sent them*: the policy checks
//! the password, e.g. with `Htpasswd`) or [`Credentials::Bearer`] (the
//! verified token's claims). The policy answers with a [`Decision`]; the host intersects
//! `granted` with what was requested, so a policy can never grant more than was asked.
//!
//! ```ignore
//! use berth_plugin_sdk::auth::{Actions, AuthPolicy, Credentials, Decision, Identity, Scope};
//! use berth_plugin_sdk::{Config, InitError, RequestInfo};
//!
//! /// Any token holder may pull; nobody else gets anything.
//! struct PullForTokenHolders;
//!
//! impl AuthPolicy for PullForTokenHolders {
//!     fn init(_: Config) -> Result<Self, InitError> { Ok(PullForTokenHolders) }
//!
//!     fn authorize(&self, credentials: Credentials, requested: Vec<Scope>, _: RequestInfo) -> Result<Decision, String> {
//!         let subject = match credentials {
//!             Credentials::Bearer(claims) => claims.subject,
//!             // This policy accepts no password (identity none = a failed login), and gives
//!             // anonymous callers nothing.
//!             Credentials::Basic(_) | Credentials::Anonymous => return Ok(Decision::refused()),
//!         };
//!         let granted = requested.into_iter().filter_map(|s| s.narrowed(Actions::PULL)).collect();
//!         Ok(Decision { identity: Some(Identity::user(subject)), granted, cache_ttl_seconds: 60 })
//!     }
//! }
//!
//! berth_plugin_sdk::export_auth_policy!(PullForTokenHolders);
//! berth_plugin_sdk::declare_stateless!();
//! ```
//!
//! Helpers for policy authors: [`Scope`] parsing, formatting and narrowing ([`Scope::narrowed`]
//! with an [`Actions`] set), [`glob_match`] for repository-name patterns, and (cargo feature
//! `htpasswd`) `Htpasswd`, an htpasswd reader and bcrypt verifier, and `HtpasswdFile`, which
//! re-reads itself when the file changes.

mod glob;
#[cfg(feature = "htpasswd")]
pub mod htpasswd;
mod scope;

pub use glob::glob_match;
#[cfg(feature = "htpasswd")]
pub use htpasswd::{Htpasswd, HtpasswdError, HtpasswdFile};
pub use scope::{Actions, ScopeParseError};

pub use crate::bindings::auth::exports::berth::plugin::auth_policy::{
    BasicCredentials, Credentials, Decision, Identity, Scope, TokenClaims,
};
pub use crate::{Config, InitError, RequestInfo};

/// An authorization policy, called for every request (or token issue) whose decision the host
/// has not cached.
pub trait AuthPolicy: Sized + 'static {
    /// Builds the policy from its `config` map in Berth's configuration.
    fn init(config: Config) -> Result<Self, InitError>;

    /// Decides who the caller is and which of the `requested` scopes they get.
    ///
    /// - `identity`: `None` for anonymous callers and for credentials the policy does not accept
    ///   (a wrong Basic password: the host answers 401 and counts a failed login). A bearer
    ///   token's subject is usually taken as is: the host already verified the token.
    /// - `granted`: the requested scopes narrowed to what the caller may do (an anonymous caller
    ///   may be granted some too). The host intersects them with the request and refuses a
    ///   request whose scopes are not all covered, so over-granting is harmless but useless.
    /// - `cache_ttl_seconds`: how long the host may reuse the decision for the same credentials
    ///   and scopes (0 = ask every time). It is how long a removed user or a tightened rule can
    ///   still be honoured.
    ///
    /// An error denies the request (fail closed) and is logged; so do a panic, a trap and the
    /// call deadline.
    fn authorize(
        &self,
        credentials: Credentials,
        requested: Vec<Scope>,
        request: RequestInfo,
    ) -> Result<Decision, String>;
}

impl Identity {
    /// A user with no groups.
    pub fn user(subject: impl Into<String>) -> Identity {
        Identity { subject: subject.into(), groups: Vec::new() }
    }
}

impl Decision {
    /// Credentials the policy does not accept: no identity, nothing granted, not cached (so a
    /// user who fixes a password or is added is let in at once).
    pub fn refused() -> Decision {
        Decision { identity: None, granted: Vec::new(), cache_ttl_seconds: 0 }
    }
}

/// Exports an [`AuthPolicy`] (world `auth-policy-plugin`). Use once, at the crate root.
#[macro_export]
macro_rules! export_auth_policy {
    ($policy:ty) => {
        const _: () = {
            type __BerthAuthPolicyExport = $crate::__private::AuthAdapter<$policy>;
            $crate::bindings::lifecycle::__export_lifecycle!(
                __BerthAuthPolicyExport with_types_in $crate::bindings::lifecycle
            );
            $crate::bindings::auth::__export_auth_policy!(
                __BerthAuthPolicyExport with_types_in $crate::bindings::auth
            );
        };
    };
}
