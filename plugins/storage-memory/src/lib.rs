//! `berth-storage-memory`: an in-memory storage driver component, Berth's second backend. It
//! shows that swapping storage is a config change: point `storage.plugin.name` at it instead of
//! `storage-fs` and reload.
//!
//! Config (all optional): `max_bytes` — refuse writes (`unavailable`) once the objects reach
//! this many bytes, instead of trapping at the host's per-plugin memory cap.
//!
//! Grants: none. The state lives in the plugin instance's memory, so the host must keep one
//! instance for this plugin (a reload or a trap starts empty).

mod store;

pub use store::{MemoryDriver, MemoryWriter};

berth_plugin_sdk::export_storage_driver!(MemoryDriver);
