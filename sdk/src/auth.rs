//! Auth policies: decide identity and grants for a request whose credentials the host has
//! already verified (JWT signature, expiry and audience; htpasswd hashes).
//!
//! ```ignore
//! use berth_plugin_sdk::auth::{AuthPolicy, Credentials, Decision, Scope};
//! use berth_plugin_sdk::{Config, InitError, RequestInfo};
//!
//! struct PullOnly;
//! impl AuthPolicy for PullOnly {
//!     fn init(_: Config) -> Result<Self, InitError> { Ok(PullOnly) }
//!     fn authorize(&self, _: Credentials, requested: Vec<Scope>, _: RequestInfo) -> Result<Decision, String> {
//!         let granted = requested.into_iter()
//!             .map(|s| Scope { actions: s.actions.into_iter().filter(|a| a == "pull").collect(), ..s })
//!             .filter(|s| !s.actions.is_empty())
//!             .collect();
//!         Ok(Decision { identity: None, granted, cache_ttl_seconds: 60 })
//!     }
//! }
//! berth_plugin_sdk::export_auth_policy!(PullOnly);
//! ```

pub use crate::bindings::auth::exports::berth::plugin::auth_policy::{
    Credentials, Decision, Identity, Scope, TokenClaims,
};
pub use crate::{Config, InitError, RequestInfo};

/// An authorization policy. Decisions are cached by the host for the TTL the policy returns.
pub trait AuthPolicy: Sized + 'static {
    /// Builds the policy from its `config` map in Berth's configuration.
    fn init(config: Config) -> Result<Self, InitError>;

    /// Decides who the caller is and which of the `requested` scopes they get. An
    /// `identity` of `None` makes the host answer 401 with a challenge; an empty `granted`
    /// makes it answer 403. An error denies the request (fail closed) and is logged.
    fn authorize(
        &self,
        credentials: Credentials,
        requested: Vec<Scope>,
        request: RequestInfo,
    ) -> Result<Decision, String>;
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
