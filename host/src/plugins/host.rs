//! The `host` interface every plugin imports: a log line into the host's `tracing` under the
//! plugin's name, and the wall clock.

use super::limits::LOG_LINE_MAX;
use super::wit::latest::{host, types};
use super::State;

impl host::Host for State {
    async fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let message: String = message.chars().take(LOG_LINE_MAX).collect();
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
