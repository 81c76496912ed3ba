//! Berth: an OCI container registry. `api` speaks HTTP, `registry` holds the domain, `storage`
//! stores bytes; `server` wires them to a socket (`tls` for HTTPS) and `config` says how;
//! `debug` serves health, vars, `metrics`, `profiling` and the `admin` operations to operators.

pub mod accept_backoff;
pub mod admin;
pub mod admission;
pub mod api;
pub mod auth;
pub mod cleanup;
pub mod config;
pub mod connections;
pub mod debug;
pub mod events;
pub mod gc;
pub mod guarded_io;
pub mod heap_trim;
pub mod metrics;
pub mod plugins;
pub mod profiling;
pub mod registry;
pub mod server;
pub mod storage;
pub mod tls;
