//! The WebAssembly plugin runtime, one for every plugin kind.
//!
//! - `engine`: the process-wide wasmtime engine (epoch interruption, pooling allocator);
//! - `limits`: every limit put on a guest, with the threat it answers;
//! - `sandbox`: a store's WASI context (only what is granted), memory cap, guest output;
//! - `host`: the `host` interface every plugin imports (log, clock);
//! - `wit`: the `berth:plugin` versions this host loads, bindings per frozen version;
//! - `loader`: file → pin check → compile (cached) → world and version → link, shared by
//!   load, reload, `berth plugin check` and `berth config check`;
//! - `function_cache`: compiled functions kept for the next plugin (an interpreter is compiled
//!   once, not once per JavaScript or Python plugin);
//! - `world`: the kinds (one WIT world each) and `Kind`, the glue to their bindings;
//! - `pool`: instances of any kind, the one `run` funnel for guest calls (deadline, discard
//!   on failure, metrics);
//! - `reload`: swapping in new versions, for every kind at once;
//! - `error`: `PluginError`, typed, with a stable `kind()` for metrics and health;
//! - adapters: `crate::storage::ComponentDriver` (storage), `auth` (authorization),
//!   `cleanup` (retention) and `admission` (may a write land).
//!
//! Adding a kind now takes: its world in `wit/` (and `bindgen!` in `wit/since_v0_1_0.rs`), one
//! `kind!` line in `world`, and an adapter that implements the kind's native trait over
//! `Pool<K>` (see `cleanup`, about 60 lines); loading, limits, failures, metrics, health and
//! reload come with the pool.

pub mod admission;
pub mod auth;
pub mod cleanup;
mod engine;
mod error;
mod function_cache;
mod host;
pub mod limits;
pub mod loader;
mod pool;
mod reload;
mod sandbox;
mod spec;
pub mod wit;
mod world;

pub use engine::engine;
pub use error::{Failure, PluginError};
pub use loader::Loaded;
pub use pool::{Held, Instance, Pool, Slot};
pub use reload::{PluginSet, ReloadError, Reloadable, RoleFn, Staged, Swap};
pub use sandbox::State;
pub use spec::{DirGrant, NotConfigured, PluginSpec};
pub use world::{AdmissionKind, AuthKind, CleanupKind, Kind, NotificationKind, StorageKind, World};

/// `berth plugin check FILE`: what the file is (world, version, declarations), if it links.
pub fn check_file(path: &std::path::Path) -> Result<Loaded, PluginError> {
    loader::check(path, None, None)
}

#[cfg(test)]
mod tests;
