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
}

impl Default for Config {
    fn default() -> Self {
        Config { version: None, log: Log::default(), http: Http::default(), storage: Storage::default() }
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
}

impl Default for Http {
    fn default() -> Self {
        Http { addr: SocketAddr::from(([127, 0, 0, 1], 5000)), relativeurls: false }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Storage {
    pub filesystem: Option<Filesystem>,
    pub inmemory: Option<InMemory>,
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
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError { key: "(file)".into(), message: format!("cannot read {}: {e}", p.display()) })?;
                if text.trim().is_empty() {
                    Value::Mapping(Default::default())
                } else {
                    serde_yaml::from_str(&text).map_err(|e| ConfigError { key: "(file)".into(), message: format!("not valid YAML: {e}") })?
                }
            }
            None => Value::Mapping(Default::default()),
        };
        let overrides: BTreeMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("BERTH_") && !matches!(k.as_str(), "BERTH_BIN" | "BERTH_CONFIG")).collect();
        for (k, v) in overrides {
            let keys: Vec<String> = k["BERTH_".len()..].split('_').map(str::to_lowercase).collect();
            let value: Value = serde_yaml::from_str(&v).unwrap_or(Value::String(v.clone()));
            set_path(&mut doc, &keys, value).map_err(|message| ConfigError { key: k.clone(), message })?;
        }
        let mut unknown_keys = Vec::new();
        let config: Config = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(doc, &mut |p: serde_ignored::Path| {
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
        if let Some(fs) = &self.storage.filesystem {
            if fs.rootdirectory.as_os_str().is_empty() {
                return Err(ConfigError { key: "storage.filesystem.rootdirectory".into(), message: "must not be empty".into() });
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
        let map = cur.as_mapping_mut().ok_or_else(|| format!("cannot set {} inside a non-mapping value", keys[..i].join(".")))?;
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
    fn errors_name_the_key() {
        let e = load("http:\n  addr: not-an-address\n", &[]).unwrap_err();
        assert_eq!(e.key, "http.addr", "{e}");
        let e = load("storage:\n  delete:\n    enabled: maybe\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.delete.enabled", "{e}");
        let e = load("storage:\n  filesystem: {}\n  inmemory: {}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage");
        let e = load("log:\n  level: loud\n", &[]).unwrap_err();
        assert_eq!(e.key, "log.level", "{e}");
    }
}
