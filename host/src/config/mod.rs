//! One typed configuration. Keys follow distribution's `config.yml` where they overlap, so an
//! existing file mostly works as it is; `BERTH_<PATH>` (and distribution's `REGISTRY_<PATH>`)
//! environment variables override the file (`env`).
//!
//! Each top-level section is a module holding its types, defaults, path resolution and
//! validation, behind [`Section`]; a new section is a new module and one line in `sections!`.

mod admission;
mod auth;
mod catalog;
mod cleanup;
mod compatibility;
pub mod duration;
mod env;
mod gc;
mod http;
mod log;
mod notifications;
mod plugins;
mod storage;

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

pub use admission::{Admission, Chain as AdmissionChain};
pub use auth::{Auth, Htpasswd, Issuer, Token};
pub use catalog::Catalog;
pub use cleanup::{parse_cadence, repository_glob, Cleanup, Policy as CleanupPolicy};
pub use compatibility::{Compatibility, Schema1};
pub use gc::Gc;
pub use http::{Debug, Http, Prometheus, Timeouts, Tls};
pub use log::{Log, LogFormatter, LogLevel};
pub use notifications::{Endpoint, EventsOptions, Ignore, Notifications, Outbox};
pub use plugins::{DirGrantConfig, DirMode, Grants, PluginConfig, PluginDefaults, Plugins};
pub use storage::{
    Azure, Delete, Driver, Filesystem, Gcs, InMemory, Maintenance, ReadOnly, Redirect, Storage, StoragePlugin,
    UploadPurging, S3,
};

/// What every top-level section offers the whole.
pub trait Section {
    /// Makes every relative path in the section absolute against `base` (see [`Config::load`]).
    fn resolve_paths(&mut self, _base: &Path) {}
    /// Appends the section's problems, each naming its full key.
    fn problems(&self, _out: &mut Vec<ConfigError>) {}
}

/// Declares [`Config`] from its sections, and the calls that visit each of them.
macro_rules! sections {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(default)]
        pub struct Config {
            /// distribution's format version; accepted and ignored.
            pub version: Option<Value>,
            $($(#[$doc])* pub $field: $ty,)*
        }

        impl Config {
            fn each_resolve_paths(&mut self, base: &Path) {
                $(self.$field.resolve_paths(base);)*
            }

            fn each_problems(&self, out: &mut Vec<ConfigError>) {
                $(self.$field.problems(out);)*
            }

            /// Each section's name and settings as `Debug` writes them: no map in the
            /// configuration iterates in a random order, so equal settings are equal text.
            fn each_section(&self) -> Vec<(&'static str, String)> {
                vec![$((stringify!($field), format!("{:?}", self.$field)),)*]
            }
        }
    };
}

sections! {
    log: Log,
    http: Http,
    storage: Storage,
    /// WebAssembly plugins by name, and their `defaults`.
    plugins: Plugins,
    compatibility: Compatibility,
    /// Catalog page sizes.
    catalog: Catalog,
    /// Who may do what (none: open).
    auth: Auth,
    /// Admission-policy plugins a write must pass, per repository glob.
    admission: Admission,
    /// Retention policies run by `cleanup-policy` plugins.
    cleanup: Cleanup,
    /// Where registry events go.
    notifications: Notifications,
    /// Garbage collection in the server, and the grace period of every run.
    gc: Gc,
}

/// A problem in a configuration, naming the key it is about.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
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
        self.storage.driver()
    }

    /// The sections where `next` differs from this configuration in what a reload does not
    /// apply. A reload swaps plugins: their files and settings (`plugins`), and which plugin
    /// serves the storage and auth roles; every other setting is read once, at start.
    pub fn restart_needed_for(&self, next: &Config) -> Vec<&'static str> {
        let sections = |c: &Config| {
            let mut c = c.clone();
            // Which plugin a role names is reloaded; whether there is the role is not.
            if let Some(p) = &mut c.storage.plugin {
                p.name.clear();
            }
            let a = &mut c.auth;
            let policies = [a.token.as_mut().map(|t| &mut t.policy), a.htpasswd.as_mut().map(|h| &mut h.policy)];
            for p in policies.into_iter().flatten().flatten() {
                p.clear();
            }
            if let Some(i) = &mut a.issuer {
                i.policy.clear();
            }
            c.each_section()
        };
        sections(self)
            .into_iter()
            .zip(sections(next))
            .filter(|((name, before), (_, after))| *name != "plugins" && before != after)
            .map(|((name, _), _)| name)
            .collect()
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

    /// Loads the file (if any), applies environment overrides from `env`, makes relative paths
    /// absolute and validates.
    ///
    /// A relative path resolves against the directory of the file, or against the working
    /// directory when there is no file: one rule for every path key, whichever section it is in.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
        let loaded = Self::parse(path, env)?;
        if let Some(e) = loaded.config.problems().into_iter().next() {
            return Err(e);
        }
        Ok(loaded)
    }

    /// Reads, applies overrides, deserializes and resolves paths, without validating.
    fn parse(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
        let mut doc = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::new("(file)", format!("cannot read {}: {e}", p.display())))?;
                if text.trim().is_empty() {
                    Value::Mapping(Default::default())
                } else {
                    serde_yaml::from_str(&text)
                        .map_err(|e| ConfigError::new("(file)", format!("not valid YAML: {e}")))?
                }
            }
            None => Value::Mapping(Default::default()),
        };
        let overrides = env::apply(&mut doc, env)?;
        let applied = &overrides.applied;
        let mut unknown_keys = Vec::new();
        let mut config: Config =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(env::De(doc), &mut |p| {
                // serde_ignored shows an `Option` level as `?`: not part of the key the user wrote.
                unknown_keys.push(p.to_string().replace(".?", ""))
            }))
            .map_err(|e| {
                let key = e.path().to_string();
                let message = format!("{}{}", e.inner(), env::from_vars(&key, applied));
                ConfigError::new(key, message)
            })?;
        let unknown_keys = unknown_keys
            .into_iter()
            .map(|k| format!("{k}{}", env::from_vars(&k, applied)))
            .chain(overrides.foreign)
            .collect();
        config.resolve_paths(&base_dir(path)?);
        Ok(Loaded { config, unknown_keys })
    }

    /// Makes every relative path absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.each_resolve_paths(base);
    }

    /// Every problem in a parsed configuration, each naming its key (`berth config check`).
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        self.each_problems(&mut out);
        if let Some(p) = self.auth.policy() {
            if !self.plugins.entries.contains_key(p) {
                out.push(ConfigError::new("auth.policy", format!("no plugin {p:?} under plugins")));
            }
        }
        if let Some(p) = &self.storage.plugin {
            if !self.plugins.entries.contains_key(&p.name) {
                out.push(ConfigError::new("storage.plugin.name", format!("no plugin {:?} under plugins", p.name)));
            }
        }
        for (i, e) in self.notifications.endpoints.iter().enumerate() {
            if let Some(p) = &e.plugin {
                if !self.plugins.entries.contains_key(p) {
                    out.push(ConfigError::new(
                        format!("notifications.endpoints[{i}].plugin"),
                        format!("no plugin {p:?} under plugins"),
                    ));
                }
            }
        }
        let needs_outbox = self.notifications.enabled().next().is_some();
        if needs_outbox
            && self.notifications.outbox.directory.is_none()
            && !matches!(self.driver(), Driver::Filesystem(_))
        {
            out.push(ConfigError::new(
                "notifications.outbox.directory",
                "is required when storage is not the filesystem (a local directory for the event outbox)",
            ));
        }
        for (i, c) in self.admission.chains.iter().enumerate() {
            for p in c.plugins.iter().filter(|p| !self.plugins.entries.contains_key(*p)) {
                out.push(ConfigError::new(
                    format!("admission.chains[{i}].plugins"),
                    format!("no plugin {p:?} under plugins"),
                ));
            }
        }
        out
    }

    /// The directory of the notification outbox: as configured, else beside the data.
    pub fn outbox_dir(&self) -> Option<PathBuf> {
        self.notifications.outbox.directory.clone().or_else(|| match self.driver() {
            Driver::Filesystem(root) => Some(root.join("_berth")),
            _ => None,
        })
    }
}

/// What relative paths resolve against: the directory of the file, else the working directory.
fn base_dir(file: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let cwd = std::env::current_dir()
        .map_err(|e| ConfigError::new("(file)", format!("cannot resolve relative paths: working directory: {e}")))?;
    Ok(match file {
        Some(f) => cwd.join(f).parent().map(Path::to_path_buf).unwrap_or(cwd),
        None => cwd,
    })
}

/// `path` made absolute against `base`, without `.` components; an empty path stays empty so
/// validation can name it.
pub(crate) fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() && !path.as_os_str().is_empty() {
        *path = base.join(path.components().filter(|c| *c != Component::CurDir).collect::<PathBuf>());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Loads `yaml` from a file in a fresh directory, with `env` as the environment.
    pub fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yml");
        std::fs::write(&p, yaml).unwrap();
        Config::load(Some(&p), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, []).unwrap().config;
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:5000");
        assert_eq!(c.log.level, LogLevel::Info);
        assert!(!c.compatibility.schema1.enabled);
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
    fn relative_paths_resolve_against_the_file_or_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("etc");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("berth.yml");
        let yaml = "storage:\n  filesystem: {rootdirectory: ./data}\nhttp:\n  tls: {certificate: tls/c.pem, key: /abs/k.pem}\nplugins:\n  defaults: {cachedir: cache}\n  p:\n    path: ../p.wasm\n    grants:\n      dirs: [{host: ./d, guest: /data}]\n";
        std::fs::write(&file, yaml).unwrap();
        let c = Config::load(Some(&file), []).unwrap().config;
        assert_eq!(c.driver(), Driver::Filesystem(sub.join("data")));
        let tls = c.http.tls.as_ref().unwrap();
        assert_eq!(tls.certificate, sub.join("tls/c.pem"));
        assert_eq!(tls.key, Path::new("/abs/k.pem"));
        assert_eq!(c.plugins.defaults.cache_dir.as_deref(), Some(sub.join("cache").as_path()));
        let p = &c.plugins.entries["p"];
        assert_eq!(p.path, sub.join("../p.wasm"));
        assert_eq!(p.grants.dirs[0].host, sub.join("d"));
        // Without a file: the working directory. Environment values follow the same rule.
        let cwd = std::env::current_dir().unwrap();
        let c = Config::load(None, [("BERTH_STORAGE_FILESYSTEM_ROOTDIRECTORY".into(), "r".into())]).unwrap().config;
        assert_eq!(c.driver(), Driver::Filesystem(cwd.join("r")));
    }

    /// A reload applies plugins and which plugin serves a role; it names what else changed.
    #[test]
    fn what_a_reload_leaves_for_a_restart() {
        let base = "plugins:\n  a: {path: a.wasm, config: {k: '1'}}\n  b: {path: b.wasm}\n  acl: {path: acl.wasm}\n\
                    storage:\n  plugin: {name: a}\n";
        let running = load(base, &[]).unwrap().config;
        let next = |extra: &str, swap: bool| {
            let mut y = base.replace("k: '1'", "k: '2'");
            if swap {
                y = y.replace("name: a", "name: b");
            }
            load(&format!("{y}{extra}"), &[]).unwrap().config
        };
        assert!(running.restart_needed_for(&load(base, &[]).unwrap().config).is_empty());
        // A plugin's settings, and another plugin for the storage role: reloaded.
        assert!(running.restart_needed_for(&next("", true)).is_empty());
        assert_eq!(running.restart_needed_for(&next("http: {addr: '127.0.0.1:5001'}\n", false)), ["http"]);
        let two = next("catalog: {maxentries: 7}\nauth:\n  htpasswd: {realm: r, path: /h, policy: acl}\n", true);
        assert_eq!(running.restart_needed_for(&two), ["catalog", "auth"]);
    }
}
