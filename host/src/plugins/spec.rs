//! A plugin as configured: everything needed to load and instantiate it, taken from the
//! validated configuration (or built by `berth plugin bench/test`).

use std::path::PathBuf;
use std::time::Duration;

use super::limits::DEFAULT_MAX_INSTANCES;
use crate::config::{Config, DirMode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub sha256: Option<String>,
    pub deadline: Duration,
    pub memory_bytes: usize,
    /// Warm instances kept ready to serve calls in parallel.
    pub instances: usize,
    /// How far the pool of a plugin that declares itself stateless may grow when every warm
    /// instance is busy (a stateful plugin never has more than `instances`).
    pub max_instances: usize,
    /// Storage plugins: check that what the plugin stored is what it was given.
    pub verify_uploads: bool,
    pub dirs: Vec<DirGrant>,
    /// Socket addresses the plugin may connect to (empty: no network at all).
    pub network: Vec<std::net::SocketAddr>,
    pub config: Vec<(String, String)>,
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// A plugin name the configuration does not define.
#[derive(Debug, thiserror::Error)]
#[error("plugin {0:?} is not configured under plugins")]
pub struct NotConfigured(pub String);

impl PluginSpec {
    /// A spec with the defaults: no grants, no config, one instance, 5 s, 64 MiB.
    pub fn new(name: impl Into<String>, path: PathBuf) -> PluginSpec {
        PluginSpec {
            name: name.into(),
            path,
            sha256: None,
            deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            instances: 1,
            max_instances: DEFAULT_MAX_INSTANCES,
            verify_uploads: true,
            dirs: Vec::new(),
            network: Vec::new(),
            config: Vec::new(),
            cache_dir: None,
        }
    }

    /// The spec of plugin `name` from a validated configuration.
    pub fn from_config(config: &Config, name: &str) -> Result<PluginSpec, NotConfigured> {
        let p = config.plugins.entries.get(name).ok_or_else(|| NotConfigured(name.to_string()))?;
        let d = &config.plugins.defaults;
        let instances = p.instances.unwrap_or(1) as usize;
        Ok(PluginSpec {
            name: name.to_string(),
            path: p.path.clone(),
            sha256: p.sha256.clone(),
            deadline: Duration::from_millis(p.deadline_ms.unwrap_or(d.deadline_ms)),
            memory_bytes: (p.memory_mib.unwrap_or(d.memory_mib) as usize) << 20,
            instances,
            max_instances: p.max_instances.map_or(DEFAULT_MAX_INSTANCES, |n| n as usize).max(instances),
            verify_uploads: p.verify_uploads,
            dirs: p
                .grants
                .dirs
                .iter()
                .map(|g| DirGrant { host: g.host.clone(), guest: g.guest.clone(), read_only: g.mode == DirMode::Ro })
                .collect(),
            network: p.grants.network.clone(),
            config: p.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cache_dir: d.cache_dir.clone().or_else(default_cache_dir),
        })
    }
}

/// `$XDG_CACHE_HOME/berth/components` (or `~/.cache/...`).
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("berth").join("components"))
}
