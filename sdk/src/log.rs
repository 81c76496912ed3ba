//! Logging into the host: each line goes to Berth's `tracing` output under target `plugin`,
//! tagged with the plugin's name.
//!
//! ```ignore
//! use berth_plugin_sdk::log;
//! log::info("driver ready");
//! berth_plugin_sdk::log!(Warn, "slow backend: {} ms", 1200);
//! ```
//!
//! Built for a native target (unit tests), lines go to stderr instead.

/// Log levels, as the host's `tracing` knows them.
pub use crate::bindings::common::berth::plugin::host::Level;

/// Sends one log line to the host.
pub fn log(level: Level, message: impl AsRef<str>) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::common::berth::plugin::host::log(level, message.as_ref());
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {}", message.as_ref());
}

/// Logs at `trace`.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message)
}

/// Logs at `debug`.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message)
}

/// Logs at `info`.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message)
}

/// Logs at `warn`.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message)
}

/// Logs at `error`.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message)
}

/// Formats and logs a line: `log!(Info, "wrote {} bytes", n)`. The level is a [`Level`]
/// variant name (`Trace`, `Debug`, `Info`, `Warn`, `Error`).
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, ::std::format!($($arg)+))
    };
}
