//! One typed configuration. Keys follow distribution's `config.yml` where they overlap, so an
//! existing file mostly works as it is; `BERTH_<SECTION>_<KEY>` environment variables override
//! the file (as `REGISTRY_...` do for distribution).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// distribution's format version; accepted and ignored.
    pub version: Option<Value>,
    pub log: Log,
    pub http: Http,
    pub storage: Storage,
    /// WebAssembly plugins by name, and their `defaults`.
    pub plugins: Plugins,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: None,
            log: Log::default(),
            http: Http::default(),
            storage: Storage::default(),
            plugins: Plugins::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Log {
    pub level: LogLevel,
}

impl Default for Log {
    fn default() -> Self {
        Log { level: LogLevel::Info }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Http {
    pub addr: SocketAddr,
    /// Answer with relative `Location` URLs instead of absolute ones.
    pub relativeurls: bool,
    /// Requests handled at once; past it, 429 TOOMANYREQUESTS with `Retry-After`. 0: no limit.
    pub maxinflight: usize,
}

impl Default for Http {
    fn default() -> Self {
        Http { addr: SocketAddr::from(([127, 0, 0, 1], 5000)), relativeurls: false, maxinflight: 0 }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Storage {
    pub filesystem: Option<Filesystem>,
    pub inmemory: Option<InMemory>,
    /// A storage driver plugin (a WebAssembly component configured under `plugins`).
    pub plugin: Option<StoragePlugin>,
    pub delete: Delete,
    pub maintenance: Maintenance,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Filesystem {
    pub rootdirectory: PathBuf,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem { rootdirectory: PathBuf::from("./data") }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InMemory {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoragePlugin {
    /// The plugin's name under `plugins`.
    pub name: String,
}

/// The `plugins` section: `defaults`, and every other key names a plugin.
#[derive(Debug, Clone, Default)]
pub struct Plugins {
    pub defaults: PluginDefaults,
    pub entries: BTreeMap<String, PluginConfig>,
}

impl<'de> Deserialize<'de> for Plugins {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let raw: BTreeMap<String, Value> = BTreeMap::deserialize(d)?;
        let mut out = Plugins::default();
        for (name, v) in raw {
            let shown = name.clone();
            let field = move |e: serde_yaml::Error| D::Error::custom(format!("{shown}: {e}"));
            if name == "defaults" {
                out.defaults =
                    if v.is_null() { PluginDefaults::default() } else { serde_yaml::from_value(v).map_err(field)? };
            } else {
                if name.is_empty()
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                {
                    return Err(D::Error::custom(format!("{name:?}: plugin names are made of [A-Za-z0-9._-]")));
                }
                out.entries.insert(name, serde_yaml::from_value(v).map_err(field)?);
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginDefaults {
    /// Deadline of one plugin call, enforced by epoch interruption.
    pub deadline_ms: u64,
    /// Linear memory cap of one plugin instance.
    pub memory_mib: u64,
    /// Where compiled components are cached (default `$XDG_CACHE_HOME/berth/components`).
    pub cache_dir: Option<PathBuf>,
}

impl Default for PluginDefaults {
    fn default() -> Self {
        PluginDefaults { deadline_ms: 5000, memory_mib: 64, cache_dir: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The component (`.wasm`).
    pub path: PathBuf,
    /// Optional pin: the file must have this sha256 (hex, optionally `sha256:`-prefixed).
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Warm instances serving calls in parallel (default 1). Only a plugin that keeps no state
    /// in its own memory (storage-fs) may use more than one.
    #[serde(default)]
    pub instances: Option<u32>,
    /// Re-hash every completed upload from what the plugin stored (default true).
    #[serde(default = "yes")]
    pub verify_uploads: bool,
    #[serde(default)]
    pub grants: Grants,
    /// Free-form map handed to the plugin's `init`; scalar values are passed as strings.
    #[serde(default, deserialize_with = "string_map")]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Directories preopened for the plugin.
    #[serde(default)]
    pub dirs: Vec<DirGrantConfig>,
    /// Outbound socket addresses (`ip:port`) the plugin may connect to; nothing else is reachable.
    #[serde(default)]
    pub network: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrantConfig {
    pub host: PathBuf,
    pub guest: String,
    #[serde(default)]
    pub mode: DirMode,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DirMode {
    #[default]
    Ro,
    Rw,
}

fn yes() -> bool {
    true
}

fn string_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    use serde::de::Error;
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Null => String::new(),
                _ => return Err(D::Error::custom(format!("config.{k}: values must be scalars"))),
            };
            Ok((k, s))
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Delete {
    pub enabled: bool,
}

impl Default for Delete {
    fn default() -> Self {
        Delete { enabled: true }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Maintenance {
    pub readonly: ReadOnly,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReadOnly {
    pub enabled: bool,
}

/// The storage driver the configuration selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    Filesystem(PathBuf),
    InMemory,
    /// A storage driver plugin, by name.
    Plugin(String),
}

/// A problem in a configuration, naming the key it is about.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// A loaded configuration and the keys in it that Berth does not know (warned about, not fatal,
/// so a distribution config file can be reused).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub unknown_keys: Vec<String>,
}

impl Config {
    pub fn driver(&self) -> Driver {
        if let Some(p) = &self.storage.plugin {
            return Driver::Plugin(p.name.clone());
        }
        match (&self.storage.filesystem, &self.storage.inmemory) {
            (_, Some(_)) => Driver::InMemory,
            (Some(fs), None) => Driver::Filesystem(fs.rootdirectory.clone()),
            (None, None) => Driver::Filesystem(Filesystem::default().rootdirectory),
        }
    }

    /// Loads the file (if any), applies environment overrides from `env`, and validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
        let mut doc = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                    key: "(file)".into(),
                    message: format!("cannot read {}: {e}", p.display()),
                })?;
                if text.trim().is_empty() {
                    Value::Mapping(Default::default())
                } else {
                    serde_yaml::from_str(&text)
                        .map_err(|e| ConfigError { key: "(file)".into(), message: format!("not valid YAML: {e}") })?
                }
            }
            None => Value::Mapping(Default::default()),
        };
        let overrides: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("BERTH_") && !matches!(k.as_str(), "BERTH_BIN" | "BERTH_CONFIG"))
            .collect();
        for (k, v) in overrides {
            let keys: Vec<String> = k["BERTH_".len()..].split('_').map(str::to_lowercase).collect();
            let value: Value = serde_yaml::from_str(&v).unwrap_or(Value::String(v.clone()));
            set_path(&mut doc, &keys, value).map_err(|message| ConfigError { key: k.clone(), message })?;
        }
        let mut unknown_keys = Vec::new();
        let config: Config =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(doc, &mut |p: serde_ignored::Path| {
                unknown_keys.push(p.to_string())
            }))
            .map_err(|e| ConfigError { key: e.path().to_string(), message: e.inner().to_string() })?;
        config.validate()?;
        Ok(Loaded { config, unknown_keys })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.storage.filesystem.is_some() && self.storage.inmemory.is_some() {
            return Err(ConfigError {
                key: "storage".into(),
                message: "configure exactly one storage driver (filesystem or inmemory), not both".into(),
            });
        }
        if let Some(p) = &self.storage.plugin {
            if self.storage.filesystem.is_some() || self.storage.inmemory.is_some() {
                return Err(ConfigError {
                    key: "storage".into(),
                    message: "configure exactly one storage driver (filesystem, inmemory or plugin)".into(),
                });
            }
            if !self.plugins.entries.contains_key(&p.name) {
                return Err(ConfigError {
                    key: "storage.plugin.name".into(),
                    message: format!("no plugin {:?} under plugins", p.name),
                });
            }
        }
        let d = &self.plugins.defaults;
        for (name, p) in std::iter::once(("defaults", (Some(d.deadline_ms), Some(d.memory_mib))))
            .chain(self.plugins.entries.iter().map(|(n, p)| (n.as_str(), (p.deadline_ms, p.memory_mib))))
        {
            if p.0 == Some(0) || p.0.is_some_and(|v| v > 600_000) {
                return Err(ConfigError {
                    key: format!("plugins.{name}.deadline_ms"),
                    message: "must be 1..=600000".into(),
                });
            }
            if p.1.is_some_and(|v| !(2..=1024).contains(&v)) {
                return Err(ConfigError {
                    key: format!("plugins.{name}.memory_mib"),
                    message: "must be 2..=1024".into(),
                });
            }
        }
        for (name, p) in &self.plugins.entries {
            if p.instances.is_some_and(|n| !(1..=64).contains(&n)) {
                return Err(ConfigError { key: format!("plugins.{name}.instances"), message: "must be 1..=64".into() });
            }
            if p.path.as_os_str().is_empty() {
                return Err(ConfigError { key: format!("plugins.{name}.path"), message: "must not be empty".into() });
            }
            for (i, g) in p.grants.dirs.iter().enumerate() {
                if g.guest.is_empty() || g.host.as_os_str().is_empty() {
                    return Err(ConfigError {
                        key: format!("plugins.{name}.grants.dirs[{i}]"),
                        message: "host and guest must not be empty".into(),
                    });
                }
            }
        }
        if let Some(fs) = &self.storage.filesystem {
            if fs.rootdirectory.as_os_str().is_empty() {
                return Err(ConfigError {
                    key: "storage.filesystem.rootdirectory".into(),
                    message: "must not be empty".into(),
                });
            }
        }
        Ok(())
    }
}

fn set_path(doc: &mut Value, keys: &[String], value: Value) -> Result<(), String> {
    let mut cur = doc;
    for (i, k) in keys.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Mapping(Default::default());
        }
        let map = cur
            .as_mapping_mut()
            .ok_or_else(|| format!("cannot set {} inside a non-mapping value", keys[..i].join(".")))?;
        if i == keys.len() - 1 {
            map.insert(Value::String(k.clone()), value);
            return Ok(());
        }
        cur = map.entry(Value::String(k.clone())).or_insert(Value::Mapping(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yml");
        std::fs::write(&p, yaml).unwrap();
        Config::load(Some(&p), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, []).unwrap().config;
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(c.driver(), Driver::Filesystem("./data".into()));
        assert!(c.storage.delete.enabled);
        assert!(!c.storage.maintenance.readonly.enabled);
    }

    #[test]
    fn distribution_keys_and_env_overrides() {
        let l = load(
            "version: 0.1\nhttp:\n  addr: 127.0.0.1:6000\n  secret: x\nstorage:\n  filesystem:\n    rootdirectory: /tmp/r\n  delete:\n    enabled: false\n",
            &[("BERTH_STORAGE_MAINTENANCE_READONLY_ENABLED", "true"), ("BERTH_HTTP_ADDR", "127.0.0.1:7000")],
        )
        .unwrap();
        assert_eq!(l.config.http.addr.to_string(), "127.0.0.1:7000");
        assert_eq!(l.config.driver(), Driver::Filesystem("/tmp/r".into()));
        assert!(!l.config.storage.delete.enabled);
        assert!(l.config.storage.maintenance.readonly.enabled);
        assert_eq!(l.unknown_keys, ["http.secret"]);
    }

    #[test]
    fn plugins_section() {
        let l = load(
            "plugins:\n  defaults: {deadline_ms: 2000}\n  storage-fs:\n    path: p.wasm\n    memory_mib: 32\n    grants:\n      dirs: [{host: ./d, guest: /data, mode: rw}]\n    config: {root: /data, n: 3, on: true}\nstorage:\n  plugin: {name: storage-fs}\n",
            &[],
        )
        .unwrap();
        let c = &l.config;
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
        assert_eq!(c.driver(), Driver::Plugin("storage-fs".into()));
        assert_eq!(c.plugins.defaults.deadline_ms, 2000);
        assert_eq!(c.plugins.defaults.memory_mib, 64);
        let p = &c.plugins.entries["storage-fs"];
        assert_eq!(p.memory_mib, Some(32));
        assert_eq!(p.grants.dirs[0].mode, DirMode::Rw);
        assert_eq!(p.config["n"], "3");
        assert_eq!(p.config["on"], "true");
        let spec = crate::plugins::PluginSpec::from_config(c, "storage-fs").unwrap();
        assert_eq!(spec.deadline.as_millis(), 2000);
        assert_eq!(spec.memory_bytes, 32 << 20);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("http:\n  addr: not-an-address\n", &[]).unwrap_err();
        assert_eq!(e.key, "http.addr", "{e}");
        let e = load("storage:\n  delete:\n    enabled: maybe\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.delete.enabled", "{e}");
        let e = load("storage:\n  filesystem: {}\n  inmemory: {}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage");
        let e = load("storage:\n  plugin: {name: nope}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.plugin.name", "{e}");
        let e = load("plugins:\n  p:\n    path: x.wasm\n    memory_mib: 1\n", &[]).unwrap_err();
        assert_eq!(e.key, "plugins.p.memory_mib", "{e}");
        let e = load("plugins:\n  p:\n    path: x.wasm\n    bogus: 1\n", &[]).unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
        let e = load("log:\n  level: loud\n", &[]).unwrap_err();
        assert_eq!(e.key, "log.level", "{e}");
    }
}
