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
    pub compatibility: Compatibility,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: None,
            log: Log::default(),
            http: Http::default(),
            storage: Storage::default(),
            plugins: Plugins::default(),
            compatibility: Compatibility::default(),
        }
    }
}

/// distribution's `compatibility` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Compatibility {
    pub schema1: Schema1,
}

/// Accept and serve Docker schema 1 manifests (Docker 1.9 and older), signatures verified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Schema1 {
    pub enabled: bool,
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
    /// Serve HTTPS with this certificate and key (PEM) instead of plain HTTP.
    pub tls: Option<Tls>,
    /// The debug server: health, vars and Prometheus metrics on a separate address.
    pub debug: Option<Debug>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            relativeurls: false,
            maxinflight: 0,
            tls: None,
            debug: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Debug {
    pub addr: SocketAddr,
    #[serde(default)]
    pub prometheus: Prometheus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Prometheus {
    pub enabled: bool,
    pub path: String,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus { enabled: true, path: "/metrics".into() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Storage {
    pub filesystem: Option<Filesystem>,
    pub inmemory: Option<InMemory>,
    /// A storage driver plugin (a WebAssembly component configured under `plugins`).
    pub plugin: Option<StoragePlugin>,
    pub s3: Option<S3>,
    pub azure: Option<Azure>,
    pub gcs: Option<Gcs>,
    pub delete: Delete,
    pub redirect: Redirect,
    pub maintenance: Maintenance,
}

/// S3 and S3-compatible services, with distribution's keys. Without `accesskey`/`secretkey`
/// credentials come from the environment (`AWS_*`), the web identity or the instance role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct S3 {
    pub accesskey: Option<String>,
    pub secretkey: Option<String>,
    pub sessiontoken: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    /// Endpoint of an S3-compatible service, e.g. `http://127.0.0.1:9000`.
    pub regionendpoint: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), which most S3-compatible services need; on by
    /// default when `regionendpoint` is set.
    pub forcepathstyle: Option<bool>,
    pub rootdirectory: Option<String>,
    /// Multipart part size in bytes (at least 5 MiB; default 10 MiB).
    pub chunksize: Option<u64>,
    /// Send a SHA-256 checksum with every part, which S3 verifies on arrival (default true;
    /// turn off for S3-compatible services that reject `x-amz-checksum-*`).
    pub checksums: bool,
}

impl Default for S3 {
    fn default() -> Self {
        S3 {
            accesskey: None,
            secretkey: None,
            sessiontoken: None,
            bucket: String::new(),
            region: None,
            regionendpoint: None,
            forcepathstyle: None,
            rootdirectory: None,
            chunksize: None,
            checksums: true,
        }
    }
}

/// Azure Blob Storage, with distribution's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Azure {
    pub accountname: String,
    pub accountkey: Option<String>,
    pub container: String,
    /// Domain of the service (default `core.windows.net`).
    pub realm: Option<String>,
    /// Full service URL instead of `https://<account>.blob.<realm>`, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub serviceurl: Option<String>,
    pub rootdirectory: Option<String>,
}

/// Google Cloud Storage, with distribution's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Gcs {
    pub bucket: String,
    /// Service account key file; without it, application default credentials.
    pub keyfile: Option<PathBuf>,
    pub rootdirectory: Option<String>,
    pub chunksize: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Redirect {
    /// Stream blobs through the registry instead of redirecting clients to the object store.
    pub disable: bool,
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
    /// Check that what the plugin stored is what it was given (default true): a file it hands
    /// over is checked by identity, size and times; streamed or copied bytes are read back and
    /// compared under a keyed hash the plugin never sees.
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
    pub uploadpurging: UploadPurging,
}

/// Removal of upload sessions abandoned for longer than `age`, checked every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UploadPurging {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub age: std::time::Duration,
    #[serde(with = "duration")]
    pub interval: std::time::Duration,
    /// Log what would be removed, remove nothing.
    pub dryrun: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            enabled: true,
            age: std::time::Duration::from_secs(168 * 3600),
            interval: std::time::Duration::from_secs(24 * 3600),
            dryrun: false,
        }
    }
}

/// Go-style durations as distribution writes them: `168h`, `1h30m`, `500ms`, `10s`.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a duration like 168h, 30m or 10s")))
    }

    pub fn parse(s: &str) -> Option<Duration> {
        let mut rest = s.trim();
        if rest.is_empty() {
            return None;
        }
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
            let value: f64 = rest[..n].parse().ok()?;
            rest = &rest[n..];
            let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = match &rest[..u] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            rest = &rest[u..];
            total += Duration::try_from_secs_f64(value * unit).ok()?;
        }
        Some(total)
    }
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
    S3(S3),
    Azure(Azure),
    Gcs(Gcs),
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
        if let Some(s3) = &self.storage.s3 {
            return Driver::S3(s3.clone());
        }
        if let Some(a) = &self.storage.azure {
            return Driver::Azure(a.clone());
        }
        if let Some(g) = &self.storage.gcs {
            return Driver::Gcs(g.clone());
        }
        match (&self.storage.filesystem, &self.storage.inmemory) {
            (_, Some(_)) => Driver::InMemory,
            (Some(fs), None) => Driver::Filesystem(fs.rootdirectory.clone()),
            (None, None) => Driver::Filesystem(Filesystem::default().rootdirectory),
        }
    }

    /// For `berth config check`: the configuration and every problem in it. A file that does not
    /// parse stops at its first error; validation reports all of them.
    pub fn check(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, Vec<ConfigError>> {
        let loaded = Self::parse(Some(path), env).map_err(|e| vec![e])?;
        let problems = loaded.config.problems();
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(problems)
        }
    }

    /// Loads the file (if any), applies environment overrides from `env`, and validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
        let loaded = Self::parse(path, env)?;
        loaded.config.validate()?;
        Ok(loaded)
    }

    /// Reads, applies overrides and deserializes, without validating.
    fn parse(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
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
            // Only variables naming a config section: BERTH_BIN, BERTH_TEST_* and the like are
            // for tools, not configuration.
            .filter(|(k, _)| {
                ["BERTH_VERSION", "BERTH_LOG_", "BERTH_HTTP_", "BERTH_STORAGE_", "BERTH_PLUGINS_"]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .collect();
        for (k, v) in overrides {
            let keys: Vec<String> = k["BERTH_".len()..].split('_').map(str::to_lowercase).collect();
            let value: Value = serde_yaml::from_str(&v).unwrap_or(Value::String(v.clone()));
            set_path(&mut doc, &keys, value).map_err(|message| ConfigError { key: k.clone(), message })?;
        }
        let mut unknown_keys = Vec::new();
        let config: Config =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(doc, &mut |p: serde_ignored::Path| {
                // serde_ignored shows an `Option` level as `?`: not part of the key the user wrote.
                unknown_keys.push(p.to_string().replace(".?", ""))
            }))
            .map_err(|e| ConfigError { key: e.path().to_string(), message: e.inner().to_string() })?;
        Ok(Loaded { config, unknown_keys })
    }

    /// The first problem, if any (what `serve` refuses to start with).
    fn validate(&self) -> Result<(), ConfigError> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every problem in a parsed configuration, each naming its key (`berth config check`).
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let st = &self.storage;
        let drivers = [
            st.filesystem.is_some(),
            st.inmemory.is_some(),
            st.plugin.is_some(),
            st.s3.is_some(),
            st.azure.is_some(),
            st.gcs.is_some(),
        ];
        if drivers.iter().filter(|d| **d).count() > 1 {
            out.push(ConfigError {
                key: "storage".into(),
                message: "configure exactly one storage driver (filesystem, inmemory, s3, azure, gcs or plugin)".into(),
            });
        }
        let need = |out: &mut Vec<ConfigError>, key: &str, v: &str| {
            if v.trim().is_empty() {
                out.push(ConfigError { key: key.into(), message: "is required".into() });
            }
        };
        let chunk = |out: &mut Vec<ConfigError>, key: &str, v: Option<u64>| {
            if let Some(n) = v.filter(|n| !(5 << 20..=5 << 30).contains(n)) {
                out.push(ConfigError {
                    key: key.into(),
                    message: format!("{n} is outside 5 MiB..5 GiB, the sizes object stores take for a part"),
                });
            }
        };
        if let Some(s3) = &st.s3 {
            need(&mut out, "storage.s3.bucket", &s3.bucket);
            chunk(&mut out, "storage.s3.chunksize", s3.chunksize);
            if s3.accesskey.is_some() != s3.secretkey.is_some() {
                out.push(ConfigError {
                    key: "storage.s3.secretkey".into(),
                    message: "accesskey and secretkey go together (omit both to use the environment or instance role)"
                        .into(),
                });
            }
            if let Some(e) = &s3.regionendpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    out.push(ConfigError {
                        key: "storage.s3.regionendpoint".into(),
                        message: format!("{e:?} is not an http:// or https:// URL"),
                    });
                }
            }
        }
        if let Some(a) = &st.azure {
            need(&mut out, "storage.azure.accountname", &a.accountname);
            need(&mut out, "storage.azure.container", &a.container);
        }
        if let Some(g) = &st.gcs {
            need(&mut out, "storage.gcs.bucket", &g.bucket);
            chunk(&mut out, "storage.gcs.chunksize", g.chunksize);
        }
        let purge = &st.maintenance.uploadpurging;
        if purge.enabled && (purge.age.is_zero() || purge.interval.is_zero()) {
            out.push(ConfigError {
                key: "storage.maintenance.uploadpurging".into(),
                message: "age and interval must be more than zero".into(),
            });
        }
        if let Some(p) = &self.storage.plugin {
            if !self.plugins.entries.contains_key(&p.name) {
                out.push(ConfigError {
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
                out.push(ConfigError {
                    key: format!("plugins.{name}.deadline_ms"),
                    message: "must be 1..=600000".into(),
                });
            }
            if p.1.is_some_and(|v| !(2..=1024).contains(&v)) {
                out.push(ConfigError { key: format!("plugins.{name}.memory_mib"), message: "must be 2..=1024".into() });
            }
        }
        for (name, p) in &self.plugins.entries {
            if p.instances.is_some_and(|n| !(1..=64).contains(&n)) {
                out.push(ConfigError { key: format!("plugins.{name}.instances"), message: "must be 1..=64".into() });
            }
            if p.path.as_os_str().is_empty() {
                out.push(ConfigError { key: format!("plugins.{name}.path"), message: "must not be empty".into() });
            }
            for (i, g) in p.grants.dirs.iter().enumerate() {
                if g.guest.is_empty() || g.host.as_os_str().is_empty() {
                    out.push(ConfigError {
                        key: format!("plugins.{name}.grants.dirs[{i}]"),
                        message: "host and guest must not be empty".into(),
                    });
                }
            }
        }
        if let Some(fs) = &self.storage.filesystem {
            if fs.rootdirectory.as_os_str().is_empty() {
                out.push(ConfigError {
                    key: "storage.filesystem.rootdirectory".into(),
                    message: "must not be empty".into(),
                });
            }
        }
        out
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
    fn object_stores_and_maintenance() {
        let l = load(
            "storage:\n  s3:\n    accesskey: a\n    secretkey: b\n    bucket: reg\n    region: us-east-1\n    regionendpoint: http://127.0.0.1:9000\n    rootdirectory: /r\n    chunksize: 10485760\n    v4auth: true\n  redirect:\n    disable: true\n  maintenance:\n    uploadpurging: {enabled: true, age: 1h30m, interval: 10s, dryrun: true}\n",
            &[],
        )
        .unwrap();
        assert_eq!(l.unknown_keys, ["storage.s3.v4auth"]);
        let Driver::S3(s3) = l.config.driver() else { panic!("not s3") };
        assert_eq!(s3.bucket, "reg");
        assert_eq!(s3.chunksize, Some(10 << 20));
        assert!(l.config.storage.redirect.disable);
        let p = &l.config.storage.maintenance.uploadpurging;
        assert_eq!(p.age.as_secs(), 5400);
        assert_eq!(p.interval.as_secs(), 10);
        assert!(p.dryrun);
        assert_eq!(duration::parse("500ms").unwrap().as_millis(), 500);
        assert!(duration::parse("5 days").is_none());
        let e = load("storage:\n  s3: {bucket: b, chunksize: 1024}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.s3.chunksize", "{e}");
        let e = load("storage:\n  s3: {region: x}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.s3.bucket", "{e}");
        let e = load("storage:\n  s3: {bucket: b}\n  filesystem: {}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage", "{e}");
        let e = load("storage:\n  maintenance:\n    uploadpurging: {age: forever}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.maintenance.uploadpurging.age", "{e}");
        let e = load("storage:\n  azure: {accountname: a}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.azure.container", "{e}");
        // `config check` reports every problem, not just the first.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yml");
        std::fs::write(&p, "storage:\n  s3: {chunksize: 1, accesskey: a, regionendpoint: ftp://x}\n").unwrap();
        let keys: Vec<String> = Config::check(&p, []).unwrap_err().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            ["storage.s3.bucket", "storage.s3.chunksize", "storage.s3.secretkey", "storage.s3.regionendpoint"]
        );
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
