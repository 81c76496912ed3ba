//! `plugins`: WebAssembly plugins by name, and their `defaults`.
//!
//! Keys are spelled as distribution spells its own (lowercase, no separators); the snake_case
//! spellings of earlier releases (`deadline_ms`, `memory_mib`, `cache_dir`, `verify_uploads`)
//! are still read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Error, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{resolve, ConfigError, Section};

/// The `plugins` section: `defaults`, and every other key names a plugin.
#[derive(Debug, Clone, Default)]
pub struct Plugins {
    pub defaults: PluginDefaults,
    pub entries: BTreeMap<String, PluginConfig>,
}

/// What a plugin name is made of; the environment override rule (`config::env`) relies on it.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl<'de> Deserialize<'de> for Plugins {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Plugins;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of plugin names (and `defaults`)")
            }
            fn visit_unit<E: Error>(self) -> Result<Plugins, E> {
                Ok(Plugins::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Plugins, A::Error> {
                let mut out = Plugins::default();
                while let Some(name) = map.next_key::<String>()? {
                    if name == "defaults" {
                        out.defaults = map.next_value::<Option<PluginDefaults>>()?.unwrap_or_default();
                    } else if !valid_name(&name) {
                        return Err(A::Error::custom(format!("{name:?}: plugin names are made of [A-Za-z0-9._-]")));
                    } else {
                        let p = map.next_value()?;
                        out.entries.insert(name, p);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl Section for Plugins {
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(d) = &mut self.defaults.cache_dir {
            resolve(base, d);
        }
        for p in self.entries.values_mut() {
            resolve(base, &mut p.path);
            for g in &mut p.grants.dirs {
                resolve(base, &mut g.host);
            }
        }
    }

    fn problems(&self, out: &mut Vec<ConfigError>) {
        let d = &self.defaults;
        for (name, (deadline, memory)) in std::iter::once(("defaults", (Some(d.deadline_ms), Some(d.memory_mib))))
            .chain(self.entries.iter().map(|(n, p)| (n.as_str(), (p.deadline_ms, p.memory_mib))))
        {
            if deadline.is_some_and(|v| !(1..=600_000).contains(&v)) {
                out.push(ConfigError::new(format!("plugins.{name}.deadlinems"), "must be 1..=600000"));
            }
            if memory.is_some_and(|v| !(2..=1024).contains(&v)) {
                out.push(ConfigError::new(format!("plugins.{name}.memorymib"), "must be 2..=1024"));
            }
        }
        for (name, p) in &self.entries {
            if p.instances.is_some_and(|n| !(1..=64).contains(&n)) {
                out.push(ConfigError::new(format!("plugins.{name}.instances"), "must be 1..=64"));
            }
            if p.max_instances.is_some_and(|n| !(1..=64).contains(&n) || n < p.instances.unwrap_or(1)) {
                out.push(ConfigError::new(
                    format!("plugins.{name}.maxinstances"),
                    "must be 1..=64 and at least instances",
                ));
            }
            if p.path.as_os_str().is_empty() {
                out.push(ConfigError::new(format!("plugins.{name}.path"), "must not be empty"));
            }
            for (i, g) in p.grants.dirs.iter().enumerate() {
                if g.guest.is_empty() || g.host.as_os_str().is_empty() {
                    out.push(ConfigError::new(
                        format!("plugins.{name}.grants.dirs[{i}]"),
                        "host and guest must not be empty",
                    ));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginDefaults {
    /// Deadline of one plugin call, enforced by epoch interruption.
    #[serde(rename = "deadlinems", alias = "deadline_ms")]
    pub deadline_ms: u64,
    /// Linear memory cap of one plugin instance.
    #[serde(rename = "memorymib", alias = "memory_mib")]
    pub memory_mib: u64,
    /// Where compiled components are cached (default `$XDG_CACHE_HOME/berth/components`).
    #[serde(rename = "cachedir", alias = "cache_dir")]
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
    #[serde(default, rename = "deadlinems", alias = "deadline_ms")]
    pub deadline_ms: Option<u64>,
    #[serde(default, rename = "memorymib", alias = "memory_mib")]
    pub memory_mib: Option<u64>,
    /// Warm instances serving calls in parallel (default 1). Only a plugin that keeps no state
    /// in its own memory (storage-fs) may use more than one.
    #[serde(default)]
    pub instances: Option<u32>,
    /// How far the pool of a plugin that declares itself stateless may grow when every warm
    /// instance is busy (default 8; never fewer than `instances`). Ignored for other plugins.
    #[serde(default, rename = "maxinstances")]
    pub max_instances: Option<u32>,
    /// Check that what the plugin stored is what it was given (default true): a file it hands
    /// over is checked by identity, size and times; streamed or copied bytes are read back and
    /// compared under a keyed hash the plugin never sees.
    #[serde(default = "yes", rename = "verifyuploads", alias = "verify_uploads")]
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

/// A scalar, as the text the plugin's `init` receives.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_unit<E: Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new()))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, Scalar>> = Option::deserialize(d)?;
    Ok(raw.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;
    use crate::config::Driver;

    #[test]
    fn plugins_section() {
        let l = load(
            "plugins:\n  defaults: {deadlinems: 2000}\n  storage-fs:\n    path: p.wasm\n    memorymib: 32\n    grants:\n      dirs: [{host: ./d, guest: /data, mode: rw}]\n    config: {root: /data, n: 3, on: true}\nstorage:\n  plugin: {name: storage-fs}\n",
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
    fn snake_case_spellings_still_load() {
        let l = load(
            "plugins:\n  defaults: {deadline_ms: 2000, memory_mib: 16, cache_dir: /c}\n  p:\n    path: /p.wasm\n    deadline_ms: 10\n    memory_mib: 8\n    verify_uploads: false\n",
            &[],
        )
        .unwrap();
        let c = &l.config.plugins;
        assert_eq!((c.defaults.deadline_ms, c.defaults.memory_mib), (2000, 16));
        assert_eq!(c.defaults.cache_dir.as_deref(), Some(Path::new("/c")));
        let p = &c.entries["p"];
        assert_eq!((p.deadline_ms, p.memory_mib, p.verify_uploads), (Some(10), Some(8), false));
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("plugins:\n  p:\n    path: x.wasm\n    memorymib: 1\n", &[]).unwrap_err();
        assert_eq!(e.key, "plugins.p.memorymib", "{e}");
        let e = load("plugins:\n  defaults: {deadlinems: 0}\n", &[]).unwrap_err();
        assert_eq!(e.key, "plugins.defaults.deadlinems", "{e}");
        let e = load("plugins:\n  p:\n    path: x.wasm\n    bogus: 1\n", &[]).unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
        assert_eq!(e.key, "plugins.p.bogus", "{e}");
        let e = load("plugins:\n  p:\n    path: x.wasm\n    instances: many\n", &[]).unwrap_err();
        assert_eq!(e.key, "plugins.p.instances", "{e}");
        let e = load("plugins:\n  'a b': {path: x.wasm}\n", &[]).unwrap_err();
        assert!(e.message.contains("plugin names"), "{e}");
        let e = load("plugins:\n  p:\n    path: x.wasm\n    config: {k: [1]}\n", &[]).unwrap_err();
        assert_eq!(e.key, "plugins.p.config.k", "{e}");
    }
}
