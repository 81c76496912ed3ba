//! Cleanup (retention) policies: a pure function from a repository snapshot to the tags to
//! delete. The host gathers the snapshot, validates and applies (or dry-runs) the plan; blob
//! garbage collection stays the host's.
//!
//! ```ignore
//! use berth_plugin_sdk::cleanup::{CleanupPolicy, Deletion, Snapshot};
//! use berth_plugin_sdk::{Config, InitError};
//!
//! struct KeepN(usize);
//! impl CleanupPolicy for KeepN {
//!     fn init(config: Config) -> Result<Self, InitError> { Ok(KeepN(config.parse_or("keep", 10)?)) }
//!     fn plan(&self, mut snapshot: Snapshot) -> Result<Vec<Deletion>, String> {
//!         snapshot.tags.sort_by_key(|t| std::cmp::Reverse(t.created_millis));
//!         Ok(snapshot.tags.into_iter().skip(self.0)
//!             .map(|t| Deletion { tag: t.name, reason: format!("keep-n={}", self.0) })
//!             .collect())
//!     }
//! }
//! berth_plugin_sdk::export_cleanup_policy!(KeepN);
//! ```

pub use crate::bindings::cleanup::exports::berth::plugin::cleanup_policy::{Deletion, Snapshot, TagInfo};
pub use crate::{Config, InitError};

/// A retention policy.
pub trait CleanupPolicy: Sized + 'static {
    /// Builds the policy from its `config` map in Berth's configuration.
    fn init(config: Config) -> Result<Self, InitError>;

    /// The tags of `snapshot.repository` to delete, each with a reason shown in dry runs and
    /// audit logs. An error skips the repository for this run.
    fn plan(&self, snapshot: Snapshot) -> Result<Vec<Deletion>, String>;
}

/// Exports a [`CleanupPolicy`] (world `cleanup-policy-plugin`). Use once, at the crate root.
#[macro_export]
macro_rules! export_cleanup_policy {
    ($policy:ty) => {
        const _: () = {
            type __BerthCleanupPolicyExport = $crate::__private::CleanupAdapter<$policy>;
            $crate::bindings::lifecycle::__export_lifecycle!(
                __BerthCleanupPolicyExport with_types_in $crate::bindings::lifecycle
            );
            $crate::bindings::cleanup::__export_cleanup_policy!(
                __BerthCleanupPolicyExport with_types_in $crate::bindings::cleanup
            );
        };
    };
}
