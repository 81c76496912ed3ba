//! Host bindings generated from `wit/` (package `berth:plugin@0.1.0`), one module per world.
//! The shared imports (`host`, `types`) are generated once, in `storage`, and reused by the
//! other worlds through `with`, so one `Linker` setup serves every plugin kind.

pub mod storage {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "storage-driver-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: { "wasi": wasmtime_wasi::p2::bindings },
    });
}

pub mod auth {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "auth-policy-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "berth:plugin/host": crate::plugins::bindings::storage::berth::plugin::host,
            "berth:plugin/types": crate::plugins::bindings::storage::berth::plugin::types,
        },
    });
}

pub mod notification {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "notification-sink-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "berth:plugin/host": crate::plugins::bindings::storage::berth::plugin::host,
            "berth:plugin/types": crate::plugins::bindings::storage::berth::plugin::types,
        },
    });
}

pub mod cleanup {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "cleanup-policy-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "berth:plugin/host": crate::plugins::bindings::storage::berth::plugin::host,
            "berth:plugin/types": crate::plugins::bindings::storage::berth::plugin::types,
        },
    });
}

use self::storage::berth::plugin::{host, types};
use super::State;

impl host::Host for State {
    async fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        // Bound what a plugin can push into the host's log.
        let message: String = message.chars().take(4096).collect();
        let plugin = &*self.plugin;
        match level {
            host::Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            host::Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            host::Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            host::Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            host::Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
        Ok(())
    }

    async fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0))
    }
}

impl types::Host for State {}
