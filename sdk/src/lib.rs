//! # berth-plugin-sdk
//!
//! Write Berth plugins — storage drivers, auth policies, notification
//! sinks and cleanup policies — in Rust, as WebAssembly components that Berth loads at run time,
//! sandboxes, and swaps without a rebuild or restart.
//!
//! A plugin is a `cdylib` crate built with `cargo build --target wasm32-wasip2 --release`; the
//! resulting `.wasm` *is* the component. Each plugin kind is one trait plus one export macro:
//!
//! | kind | trait | macro | WIT world |
//! |------|-------|-------|-----------|
//! | storage driver | [`storage::Driver`] | [`export_storage_driver!`] | `storage-driver-plugin` |
//! | auth policy | [`auth::AuthPolicy`] | [`export_auth_policy!`] | `auth-policy-plugin` |
//! | notification sink | [`notify::NotificationSink`] | [`export_notification_sink!`] | `notification-sink-plugin` |
//! | cleanup policy | [`cleanup::CleanupPolicy`] | [`export_cleanup_policy!`] | `cleanup-policy-plugin` |
//! | admission policy | [`admission::AdmissionPolicy`] | [`export_admission_policy!`] | `admission-policy-plugin` |
//!
//! ```ignore
//! use berth_plugin_sdk::storage::{Driver, FileInfo, Path, StorageError, Writer};
//! use berth_plugin_sdk::{Config, InitError};
//!
//! struct MyDriver { /* ... */ }
//!
//! impl Driver for MyDriver {
//!     type Writer = MyWriter;
//!     fn init(config: Config) -> Result<Self, InitError> { /* read config */ }
//!     fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError> { /* ... */ }
//!     // put_content, open_writer, stat, list, rename, delete ...
//! }
//!
//! berth_plugin_sdk::export_storage_driver!(MyDriver);
//! ```
//!
//! Every plugin gets its `config` map from Berth's configuration once, in `init`, and may log
//! into the host's `tracing` with [`log`](mod@log) and read the wall clock with [`time::now_millis`].
//! Anything else (a directory, say) must be granted in Berth's config; see [`fs`] for the
//! filesystem helpers a driver confined to a preopened directory uses.
//!
//! A plugin instance runs one call at a time, so plugin state needs no locks: use `Cell` and
//! `RefCell` for anything that changes. A panic, an infinite loop or running out of memory
//! aborts the call (the host answers with an error and discards the instance).

#![warn(missing_docs)]

pub mod admission;
pub mod auth;
pub mod bindings;
pub mod cleanup;
mod config;
pub mod fs;
pub mod log;
pub mod notify;
pub mod storage;
pub mod time;

#[doc(hidden)]
pub mod __private;

pub use config::Config;

/// Why a plugin refused its configuration (returned from `init`): `InvalidConfig((key,
/// problem))` or `Failed(message)`. Berth refuses to load (or reload) a plugin whose `init`
/// fails, and keeps serving with the previous version.
pub use bindings::common::berth::plugin::types::InitError;

/// The request that caused a plugin call (for policy and audit).
pub use bindings::common::berth::plugin::types::RequestInfo;

impl InitError {
    /// A config key is missing or has a bad value.
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        InitError::InvalidConfig((key.into(), problem.into()))
    }

    /// Anything else that stops the plugin from starting.
    pub fn failed(message: impl Into<String>) -> Self {
        InitError::Failed(message.into())
    }
}

/// Declares that the plugin keeps no state in its instance between calls (everything it
/// needs lives in granted directories or behind the network, or is rebuilt from `init`), so
/// Berth may run it in as many instances as requests need: one slow or stuck call then never
/// makes other requests wait. Without it Berth runs at most `instances` (default 1), because
/// a second instance would not see what the first one holds in memory.
///
/// ```ignore
/// berth_plugin_sdk::declare_stateless!();
/// ```
///
/// It writes the custom section `berth:plugin-info` into the component, which `berth plugin
/// check` shows. Use once, at the crate root.
#[macro_export]
macro_rules! declare_stateless {
    () => {
        #[used]
        #[link_section = "berth:plugin-info"]
        static __BERTH_PLUGIN_INFO: [u8; 9] = *b"stateless";
    };
}
