//! Berth: an OCI container registry. `api` speaks HTTP, `registry` holds the domain, `storage`
//! stores bytes; `server` wires them to a socket and `config` says how.

pub mod api;
pub mod config;
pub mod plugins;
pub mod registry;
pub mod server;
pub mod storage;
