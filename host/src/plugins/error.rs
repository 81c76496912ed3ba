//! Typed plugin errors: why a plugin could not be loaded, or why a call into it failed. Each
//! carries what an operator needs to fix it, and a stable `kind()` used as the metrics label
//! and in `/debug/health`, so nothing downstream ever matches on an error's text.

/// Why a plugin did not load, or a call into it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read {path}: {reason}")]
    FileMissing { path: String, reason: String },
    #[error("{path}: sha256 is {actual}, the configuration pins {pinned}")]
    PinMismatch { path: String, actual: String, pinned: String },
    #[error("{path} is not a WebAssembly component: {reason}")]
    NotComponent { path: String, reason: String },
    #[error("{path} is a component but not a Berth plugin: it exports no known world ({exports})")]
    UnknownWorld { path: String, exports: String },
    #[error("{path} implements {found}, not {wanted}")]
    WrongWorld { path: String, found: &'static str, wanted: &'static str },
    #[error("{path} is built against berth:plugin@{found}; this Berth loads berth:plugin@{supported}")]
    WitVersion { path: String, found: String, supported: String },
    #[error("{path} ({world}) does not link against Berth's host: {reason}")]
    Link { path: String, world: &'static str, reason: String },
    #[error("a granted directory cannot be opened: {reason}")]
    Grant { reason: String },
    #[error("init refused the configuration: config.{key}: {message}")]
    InitInvalidConfig { key: String, message: String },
    #[error("init failed: {message}")]
    InitFailed { message: String },
    #[error("trapped: {reason}")]
    Trap { reason: String },
    #[error("deadline of {ms} ms exceeded")]
    Deadline { ms: u128 },
    #[error("memory cap of {mib} MiB reached")]
    MemoryCap { mib: usize },
    #[error("the instance serving this stream was discarded after a failure")]
    Discarded,
    #[error("the WebAssembly engine is unavailable: {reason}")]
    Engine { reason: String },
}

impl PluginError {
    /// A short stable name for metrics labels, health reports and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::FileMissing { .. } => "file_missing",
            PluginError::PinMismatch { .. } => "pin_mismatch",
            PluginError::NotComponent { .. } => "not_component",
            PluginError::UnknownWorld { .. } => "unknown_world",
            PluginError::WrongWorld { .. } => "wrong_world",
            PluginError::WitVersion { .. } => "wit_version",
            PluginError::Link { .. } => "link",
            PluginError::Grant { .. } => "grant",
            PluginError::InitInvalidConfig { .. } | PluginError::InitFailed { .. } => "init",
            PluginError::Trap { .. } => "trap",
            PluginError::Deadline { .. } => "deadline",
            PluginError::MemoryCap { .. } => "memory_cap",
            PluginError::Discarded => "discarded",
            PluginError::Engine { .. } => "engine",
        }
    }
}

/// A failed call or load, with the plugin and operation it concerns; already logged and
/// counted when it is made (`Pool::fail`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin {plugin}: {op}: {error}")]
pub struct Failure {
    pub plugin: String,
    pub op: &'static str,
    #[source]
    pub error: PluginError,
}
