//! The host's clock.

/// Wall-clock time from the host, milliseconds since the Unix epoch. (A native build, as in
/// unit tests, reads the system clock.)
pub fn now_millis() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::common::berth::plugin::host::now_millis()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}
