//! Environment overrides: `BERTH_<PATH>` and distribution's `REGISTRY_<PATH>`.
//!
//! Keys have no separators (distribution's spelling), so `_` separates levels:
//! `BERTH_PLUGINS_DEFAULTS_DEADLINEMS=1000` sets `plugins.defaults.deadlinems`. Two places hold
//! names rather than keys:
//! - after `PLUGINS_`, the plugin name: a plugin named in the file (or by `storage.plugin.name`)
//!   whose name, uppercased with `-` and `.` written as `_`, equals the longest run of segments
//!   (`BERTH_PLUGINS_STORAGE_FS_PATH` is `plugins.storage-fs.path`); with no such plugin, the
//!   next segment, lowercased, is the name of a new one;
//! - after a plugin's `CONFIG_`, the rest, lowercased, is one key of its free-form `config` map.
//!
//! `REGISTRY_*` variables are applied first, `BERTH_*` after them, so `BERTH_` wins. A `BERTH_`
//! variable whose first segment names no section (`BERTH_BIN`, `BERTH_CONFIG`, `BERTH_TEST_*`) is
//! not configuration and is left alone; a `REGISTRY_` one (`REGISTRY_REDIS_*`: a section Berth
//! lacks) is warned about as an unknown key. Within a section, a key Berth does not know is warned
//! about like the same key in a file.
//!
//! A value is read as YAML: a flow mapping or sequence (`[{host: /d, guest: /data}]`) is set as
//! such; a scalar takes the type of its key, so `true` is a bool for `enabled` and `1000` a
//! number for `deadlinems`, while `1000` for a string key (`bucket`, `sha256`) stays the text
//! `1000`. [`De`] does that last part at deserialization, when the key's type is known.

use std::fmt;

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{IntoDeserializer, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::Value;

use super::{Config, ConfigError};

/// Marks a scalar that came from the environment, to be typed by the key that reads it.
const ENV_TAG: &str = "berth-env";

/// The prefixes read, in the order applied (a later one wins).
const PREFIXES: [&str; 2] = ["REGISTRY_", "BERTH_"];

/// One variable applied, for naming it beside an unknown key it produced.
#[derive(Debug)]
pub struct Applied {
    pub path: Vec<String>,
    pub var: String,
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Overrides {
    pub applied: Vec<Applied>,
    /// `REGISTRY_` variables naming no section of Berth's, as the key each names and the
    /// variable: warned about, never set (Kubernetes defines `REGISTRY_PORT` and
    /// `REGISTRY_PORT_5000_TCP_ADDR` for a service named `registry`, which no document holds both of).
    pub foreign: Vec<String>,
}

/// Applies the overrides in `env` to the parsed file `doc`.
pub fn apply(doc: &mut Value, env: impl IntoIterator<Item = (String, String)>) -> Result<Overrides, ConfigError> {
    let sections = sections();
    let mut out = Overrides::default();
    let mut vars: Vec<(usize, String, String)> = Vec::new();
    for (k, v) in env {
        let Some(rank) = PREFIXES.iter().position(|p| k.starts_with(p)) else { continue };
        let rest = &k[PREFIXES[rank].len()..];
        let first = rest.split('_').next().unwrap_or_default().to_ascii_lowercase();
        if sections.contains(&first.as_str()) {
            vars.push((rank, k, v));
        } else if PREFIXES[rank] == "REGISTRY_" {
            out.foreign.push(format!("{} (from {k})", rest.to_ascii_lowercase().replace('_', ".")));
        }
    }
    out.foreign.sort();
    // Plugin names are matched against the plugins the rest of the configuration names, so those
    // variables go last; within each group REGISTRY_ before BERTH_.
    vars.sort_by_key(|(rank, k, _)| {
        (k[PREFIXES[*rank].len()..].to_ascii_uppercase().starts_with("PLUGINS_"), *rank, k.clone())
    });
    for (rank, var, raw) in vars {
        let err = |message: String| ConfigError { key: var.clone(), message };
        let segments: Vec<&str> = var[PREFIXES[rank].len()..].split('_').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(err("empty level in the name (two `_` in a row, or one at the end)".into()));
        }
        let path = key_path(doc, &segments).map_err(err)?;
        set_path(doc, &path, value(raw)).map_err(err)?;
        out.applied.push(Applied { path, var });
    }
    Ok(out)
}

/// The key path `segments` name, by the rules in the module comment.
fn key_path(doc: &Value, segments: &[&str]) -> Result<Vec<String>, String> {
    let lower = |s: &[&str]| s.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
    if segments.len() < 2
        || !segments[0].eq_ignore_ascii_case("plugins")
        || segments[1].eq_ignore_ascii_case("defaults")
    {
        return Ok(lower(segments));
    }
    let mut known: Vec<String> = doc
        .get("plugins")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().filter_map(Value::as_str).filter(|k| *k != "defaults").map(String::from).collect())
        .unwrap_or_default();
    if let Some(n) = doc.get("storage").and_then(|s| s.get("plugin")).and_then(|p| p.get("name")) {
        if let Some(n) = n.as_str().or_else(|| n.as_tagged_env()) {
            known.push(n.to_string());
        }
    }
    known.sort();
    known.dedup();
    let rest = &segments[1..];
    let (name, after) = (1..=rest.len())
        .rev()
        .find_map(|n| {
            let run = normalize(&rest[..n].join("_"));
            let found: Vec<&String> = known.iter().filter(|k| normalize(k) == run).collect();
            (!found.is_empty()).then_some((found, n))
        })
        .map(|(found, n)| match found[..] {
            [one] => Ok((one.clone(), &rest[n..])),
            _ => Err(format!(
                "names more than one plugin ({}); rename one",
                found.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )),
        })
        .unwrap_or_else(|| Ok((rest[0].to_ascii_lowercase(), &rest[1..])))?;
    let mut path = vec!["plugins".to_string(), name];
    match after {
        [config, key @ ..] if config.eq_ignore_ascii_case("config") && !key.is_empty() => {
            path.push("config".into());
            path.push(key.join("_").to_ascii_lowercase());
        }
        _ => path.extend(lower(after)),
    }
    Ok(path)
}

/// A plugin name as it appears in a variable name.
fn normalize(name: &str) -> String {
    name.chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_uppercase() }).collect()
}

/// An environment value as set into the document: structure as YAML, a scalar marked for [`De`].
fn value(raw: String) -> Value {
    match serde_yaml::from_str::<Value>(&raw) {
        Ok(v @ (Value::Mapping(_) | Value::Sequence(_))) => v,
        _ => Value::Tagged(Box::new(TaggedValue { tag: Tag::new(ENV_TAG), value: Value::String(raw) })),
    }
}

trait AsTaggedEnv {
    fn as_tagged_env(&self) -> Option<&str>;
}

impl AsTaggedEnv for Value {
    fn as_tagged_env(&self) -> Option<&str> {
        match self {
            Value::Tagged(t) if t.tag == Tag::new(ENV_TAG) => t.value.as_str(),
            _ => None,
        }
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
            .ok_or_else(|| format!("cannot set {} inside a value that is not a mapping", keys[..i].join(".")))?;
        if i == keys.len() - 1 {
            if !names_a_name(keys) {
                // The same key in an older spelling (`deadline_ms` for `deadlinems`) would be a
                // duplicate field next to the new one.
                map.retain(|old, _| old.as_str().is_none_or(|o| o == k || o.replace(['_', '-'], "") != *k));
            }
            map.insert(Value::String(k.clone()), value);
            return Ok(());
        }
        cur = map.entry(Value::String(k.clone())).or_insert(Value::Mapping(Default::default()));
    }
    Ok(())
}

/// Whether the last level of `keys` is a name the user chose (a plugin, a key of its `config`)
/// rather than a key of Berth's.
fn names_a_name(keys: &[String]) -> bool {
    keys.first().is_some_and(|k| k == "plugins") && (keys.len() == 2 || (keys.len() == 4 && keys[2] == "config"))
}

/// The top-level keys of [`Config`], as serde sees them: what a `BERTH_` variable must start
/// with to be configuration. Read from the derived `Deserialize`, so a new section needs no list.
fn sections() -> &'static [&'static str] {
    #[derive(Debug)]
    enum Probe {
        Fields(&'static [&'static str]),
        Other,
    }
    impl fmt::Display for Probe {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }
    impl std::error::Error for Probe {}
    impl serde::de::Error for Probe {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Probe::Other
        }
    }
    struct Fields;
    impl<'de> Deserializer<'de> for Fields {
        type Error = Probe;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probe> {
            Err(Probe::Other)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Probe> {
            Err(Probe::Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    match Config::deserialize(Fields) {
        Err(Probe::Fields(f)) => f,
        _ => &[],
    }
}

/// A YAML document to deserialize, in which the scalars from the environment take the type of
/// the key that reads them (see the module comment). Everything else reads as plain YAML.
pub struct De(pub Value);

impl<'de> IntoDeserializer<'de, serde_yaml::Error> for De {
    type Deserializer = De;
    fn into_deserializer(self) -> De {
        self
    }
}

/// An environment scalar read as YAML, for a key that wants a bool, a number or nothing.
fn scalar(raw: &str) -> Value {
    serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn visit_map<'de, V: Visitor<'de>>(m: serde_yaml::Mapping, v: V) -> Result<V::Value, serde_yaml::Error> {
    let mut de = MapDeserializer::new(m.into_iter().map(|(k, v)| (De(k), De(v))));
    let out = v.visit_map(&mut de)?;
    de.end()?;
    Ok(out)
}

fn visit_seq<'de, V: Visitor<'de>>(s: serde_yaml::Sequence, v: V) -> Result<V::Value, serde_yaml::Error> {
    let mut de = SeqDeserializer::new(s.into_iter().map(De));
    let out = v.visit_seq(&mut de)?;
    de.end()?;
    Ok(out)
}

/// Methods where an environment scalar is read as YAML first.
macro_rules! typed {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
            match self.0.as_tagged_env() {
                Some(raw) => scalar(raw).$method(v),
                None => self.0.$method(v),
            }
        }
    )*};
}

/// Methods where an environment scalar is the text as written.
macro_rules! text {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
            match self.0.as_tagged_env() {
                Some(raw) => v.visit_string(raw.to_string()),
                None => self.0.$method(v),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for De {
    type Error = serde_yaml::Error;

    typed! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64 deserialize_unit
    }
    text! { deserialize_char deserialize_str deserialize_string deserialize_identifier deserialize_bytes deserialize_byte_buf }

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Mapping(m) => visit_map(m, v),
            Value::Sequence(s) => visit_seq(s, v),
            other => match other.as_tagged_env() {
                Some(raw) => v.visit_string(raw.to_string()),
                None => other.deserialize_any(v),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        let none = match self.0.as_tagged_env() {
            Some(raw) => scalar(raw).is_null(),
            None => self.0.is_null(),
        };
        if none {
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Self::Error> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Sequence(s) => visit_seq(s, v),
            other => match other.as_tagged_env() {
                Some(raw) => scalar(raw).deserialize_seq(v),
                None => other.deserialize_seq(v),
            },
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Mapping(m) => visit_map(m, v),
            other => match other.as_tagged_env() {
                Some(raw) => scalar(raw).deserialize_map(v),
                None => other.deserialize_map(v),
            },
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0.as_tagged_env() {
            Some(raw) => Value::String(raw.to_string()).deserialize_enum(name, variants, v),
            None => self.0.deserialize_enum(name, variants, v),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_unit()
    }
}

/// The variables that set `key` (a key path as serde names it) or a part of it, as
/// ` (from A, B)`; empty when the key came from the file alone.
pub fn from_vars(key: &str, applied: &[Applied]) -> String {
    let related = |p: &str, q: &str| p == q || [".", "["].iter().any(|sep| q.starts_with(&format!("{p}{sep}")));
    let vars: Vec<&str> = applied
        .iter()
        .filter(|a| {
            let p = a.path.join(".");
            related(&p, key) || related(key, &p)
        })
        .map(|a| a.var.as_str())
        .collect();
    if vars.is_empty() {
        String::new()
    } else {
        format!(" (from {})", vars.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::tests::load;
    use crate::config::{DirMode, Loaded, LogFormatter, LogLevel};

    /// Every key the README shows, the variable that sets it (after the prefix) and a value.
    const EVERY_KEY: &[(&str, &str, &str)] = &[
        ("log.level", "LOG_LEVEL", "debug"),
        ("log.formatter", "LOG_FORMATTER", "json"),
        ("http.addr", "HTTP_ADDR", "0.0.0.0:6000"),
        ("http.relativeurls", "HTTP_RELATIVEURLS", "true"),
        ("http.maxinflight", "HTTP_MAXINFLIGHT", "7"),
        ("http.timeouts.header", "HTTP_TIMEOUTS_HEADER", "5s"),
        ("http.timeouts.idle", "HTTP_TIMEOUTS_IDLE", "2m"),
        ("http.timeouts.bodystall", "HTTP_TIMEOUTS_BODYSTALL", "1500"),
        ("http.maxconnections", "HTTP_MAXCONNECTIONS", "300"),
        ("http.maxheaders", "HTTP_MAXHEADERS", "4000"),
        ("http.manifestmemory", "HTTP_MANIFESTMEMORY", "1048576"),
        ("http.tls.certificate", "HTTP_TLS_CERTIFICATE", "/tls/chain.pem"),
        ("http.tls.key", "HTTP_TLS_KEY", "/tls/key.pem"),
        ("http.debug.addr", "HTTP_DEBUG_ADDR", "127.0.0.1:6001"),
        ("http.debug.prometheus.enabled", "HTTP_DEBUG_PROMETHEUS_ENABLED", "false"),
        ("http.debug.prometheus.path", "HTTP_DEBUG_PROMETHEUS_PATH", "/m"),
        ("storage.filesystem.rootdirectory", "STORAGE_FILESYSTEM_ROOTDIRECTORY", "/srv/registry"),
        ("storage.filesystem.warmbytes", "STORAGE_FILESYSTEM_WARMBYTES", "1048576"),
        ("storage.inmemory", "STORAGE_INMEMORY", "{}"),
        ("storage.delete.enabled", "STORAGE_DELETE_ENABLED", "false"),
        ("storage.maintenance.readonly.enabled", "STORAGE_MAINTENANCE_READONLY_ENABLED", "true"),
        ("storage.maintenance.uploadpurging.enabled", "STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED", "false"),
        ("storage.maintenance.uploadpurging.age", "STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "2h"),
        ("storage.maintenance.uploadpurging.interval", "STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL", "90s"),
        ("storage.maintenance.uploadpurging.dryrun", "STORAGE_MAINTENANCE_UPLOADPURGING_DRYRUN", "true"),
        ("storage.redirect.disable", "STORAGE_REDIRECT_DISABLE", "true"),
        // String keys given text that YAML would read as a number or a bool stay text.
        ("storage.s3.accesskey", "STORAGE_S3_ACCESSKEY", "007"),
        ("storage.s3.secretkey", "STORAGE_S3_SECRETKEY", "true"),
        ("storage.s3.bucket", "STORAGE_S3_BUCKET", "2024"),
        ("storage.s3.region", "STORAGE_S3_REGION", "eu-west-1"),
        ("storage.s3.regionendpoint", "STORAGE_S3_REGIONENDPOINT", "http://127.0.0.1:9000"),
        ("storage.s3.forcepathstyle", "STORAGE_S3_FORCEPATHSTYLE", "false"),
        ("storage.s3.rootdirectory", "STORAGE_S3_ROOTDIRECTORY", "/s3"),
        ("storage.s3.chunksize", "STORAGE_S3_CHUNKSIZE", "10485760"),
        ("storage.s3.checksums", "STORAGE_S3_CHECKSUMS", "false"),
        ("storage.azure.accountname", "STORAGE_AZURE_ACCOUNTNAME", "acct"),
        ("storage.azure.accountkey", "STORAGE_AZURE_ACCOUNTKEY", "a2V5=="),
        ("storage.azure.container", "STORAGE_AZURE_CONTAINER", "1.5"),
        ("storage.azure.realm", "STORAGE_AZURE_REALM", "core.chinacloudapi.cn"),
        ("storage.azure.serviceurl", "STORAGE_AZURE_SERVICEURL", "http://127.0.0.1:10000/devstoreaccount1"),
        ("storage.azure.rootdirectory", "STORAGE_AZURE_ROOTDIRECTORY", "/az"),
        ("storage.gcs.bucket", "STORAGE_GCS_BUCKET", "gbucket"),
        ("storage.gcs.keyfile", "STORAGE_GCS_KEYFILE", "/etc/gcs.json"),
        ("storage.gcs.rootdirectory", "STORAGE_GCS_ROOTDIRECTORY", "/gs"),
        ("storage.plugin.name", "STORAGE_PLUGIN_NAME", "storage-fs"),
        ("compatibility.schema1.enabled", "COMPATIBILITY_SCHEMA1_ENABLED", "true"),
        ("catalog.maxentries", "CATALOG_MAXENTRIES", "250"),
        ("plugins.defaults.deadlinems", "PLUGINS_DEFAULTS_DEADLINEMS", "1000"),
        ("plugins.defaults.memorymib", "PLUGINS_DEFAULTS_MEMORYMIB", "128"),
        ("plugins.defaults.cachedir", "PLUGINS_DEFAULTS_CACHEDIR", "/cache"),
        ("plugins.storage-fs.path", "PLUGINS_STORAGE_FS_PATH", "/p/fs.wasm"),
        ("plugins.storage-fs.sha256", "PLUGINS_STORAGE_FS_SHA256", "0123456789"),
        ("plugins.storage-fs.deadlinems", "PLUGINS_STORAGE_FS_DEADLINEMS", "250"),
        ("plugins.storage-fs.memorymib", "PLUGINS_STORAGE_FS_MEMORYMIB", "32"),
        ("plugins.storage-fs.instances", "PLUGINS_STORAGE_FS_INSTANCES", "4"),
        ("plugins.storage-fs.maxinstances", "PLUGINS_STORAGE_FS_MAXINSTANCES", "12"),
        ("plugins.storage-fs.verifyuploads", "PLUGINS_STORAGE_FS_VERIFYUPLOADS", "false"),
        (
            "plugins.storage-fs.grants.dirs",
            "PLUGINS_STORAGE_FS_GRANTS_DIRS",
            "[{host: /srv/d, guest: /data, mode: rw}]",
        ),
        ("plugins.storage-fs.grants.network", "PLUGINS_STORAGE_FS_GRANTS_NETWORK", "[127.0.0.1:9000]"),
        ("plugins.storage-fs.config.root", "PLUGINS_STORAGE_FS_CONFIG_ROOT", "/data"),
        ("plugins.storage-fs.config.max_size", "PLUGINS_STORAGE_FS_CONFIG_MAX_SIZE", "010"),
        ("plugins.acl.path", "PLUGINS_ACL_PATH", "/p/acl.wasm"),
        ("plugins.acl.grants.dirs", "PLUGINS_ACL_GRANTS_DIRS", "[{host: /etc/auth, guest: /auth, mode: ro}]"),
        ("plugins.acl.config.users", "PLUGINS_ACL_CONFIG_USERS", "/auth/htpasswd"),
        ("plugins.acl.config.groups", "PLUGINS_ACL_CONFIG_GROUPS", "a=x,y"),
        ("plugins.acl.config.rules", "PLUGINS_ACL_CONFIG_RULES", "anonymous public/** pull"),
        ("auth.token.realm", "AUTH_TOKEN_REALM", "https://gitlab/jwt/auth"),
        ("auth.token.service", "AUTH_TOKEN_SERVICE", "container_registry"),
        ("auth.token.issuer", "AUTH_TOKEN_ISSUER", "gitlab-issuer"),
        ("auth.token.rootcertbundle", "AUTH_TOKEN_ROOTCERTBUNDLE", "/etc/bundle.crt"),
        ("auth.token.jwks", "AUTH_TOKEN_JWKS", "/etc/jwks.json"),
        ("auth.token.signingalgorithms", "AUTH_TOKEN_SIGNINGALGORITHMS", "[RS256, ES256]"),
        ("auth.token.leeway", "AUTH_TOKEN_LEEWAY", "5s"),
        ("auth.token.policy", "AUTH_TOKEN_POLICY", "acl"),
        ("auth.htpasswd.realm", "AUTH_HTPASSWD_REALM", "basic-realm"),
        ("auth.htpasswd.path", "AUTH_HTPASSWD_PATH", "/etc/htpasswd"),
        ("auth.htpasswd.policy", "AUTH_HTPASSWD_POLICY", "acl"),
        ("auth.issuer.policy", "AUTH_ISSUER_POLICY", "acl"),
        ("auth.issuer.service", "AUTH_ISSUER_SERVICE", "svc"),
        ("auth.issuer.issuer", "AUTH_ISSUER_ISSUER", "iss"),
        ("auth.issuer.realm", "AUTH_ISSUER_REALM", "https://r/auth/token"),
        ("auth.issuer.expiration", "AUTH_ISSUER_EXPIRATION", "10m"),
        ("auth.issuer.refreshexpiration", "AUTH_ISSUER_REFRESHEXPIRATION", "48h"),
        ("auth.issuer.leeway", "AUTH_ISSUER_LEEWAY", "1500"),
        ("auth.issuer.key", "AUTH_ISSUER_KEY", "/etc/issuer.key"),
        ("auth.issuer.certificate", "AUTH_ISSUER_CERTIFICATE", "/etc/issuer.crt"),
        ("auth.issuer.statedir", "AUTH_ISSUER_STATEDIR", "/var/lib/berth"),
        (
            "notifications.endpoints",
            "NOTIFICATIONS_ENDPOINTS",
            "[{name: hook, url: 'https://h/e', headers: {Authorization: [t]}, timeout: 500, backoff: 2s}]",
        ),
        ("notifications.events.includereferences", "NOTIFICATIONS_EVENTS_INCLUDEREFERENCES", "true"),
        ("notifications.outbox.directory", "NOTIFICATIONS_OUTBOX_DIRECTORY", "/var/lib/outbox"),
        ("notifications.outbox.maxevents", "NOTIFICATIONS_OUTBOX_MAXEVENTS", "50"),
        ("notifications.outbox.maxbytes", "NOTIFICATIONS_OUTBOX_MAXBYTES", "65536"),
        ("notifications.outbox.pullflush", "NOTIFICATIONS_OUTBOX_PULLFLUSH", "250ms"),
        ("plugins.gitlab.path", "PLUGINS_GITLAB_PATH", "/p/gitlab.wasm"),
        ("plugins.immutable.path", "PLUGINS_IMMUTABLE_PATH", "/p/immutable.wasm"),
        ("plugins.immutable.config.may", "PLUGINS_IMMUTABLE_CONFIG_MAY", "release-bot"),
        ("plugins.rules.path", "PLUGINS_RULES_PATH", "/p/rules.wasm"),
        ("plugins.rules.memorymib", "PLUGINS_RULES_MEMORYMIB", "48"),
        ("plugins.rules.config.maxlayerbytes", "PLUGINS_RULES_CONFIG_MAXLAYERBYTES", "1024"),
        ("plugins.rules.config.annotations", "PLUGINS_RULES_CONFIG_ANNOTATIONS", "org.opencontainers.image.source"),
        ("plugins.rules.config.tags", "PLUGINS_RULES_CONFIG_TAGS", "v*"),
        ("admission.chains", "ADMISSION_CHAINS", "[{repository: 'prod/**', plugins: [immutable, rules]}]"),
        ("admission.failopen", "ADMISSION_FAILOPEN", "[rules]"),
        ("gc.schedule", "GC_SCHEDULE", "12h"),
        ("gc.deleteuntagged", "GC_DELETEUNTAGGED", "true"),
        ("gc.dryrun", "GC_DRYRUN", "true"),
        ("gc.graceperiod", "GC_GRACEPERIOD", "30m"),
        (
            "cleanup.policies",
            "CLEANUP_POLICIES",
            "[{name: ci, plugin: gitlab, repositories: ['ci/**'], settings: {keep_n: 5}, cadence: 7d}]",
        ),
    ];

    /// The leaf keys of every `yaml` block in README.md, commented-out alternatives included.
    fn readme_keys() -> BTreeSet<String> {
        fn leaves(prefix: &str, v: &Value, out: &mut BTreeSet<String>) {
            match v.as_mapping() {
                Some(m) if !m.is_empty() => {
                    for (k, v) in m {
                        let k = k.as_str().expect("string keys");
                        leaves(&if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") }, v, out);
                    }
                }
                // A free-form plugin `config` key an environment variable cannot spell (the
                // immutable-tags plugin's `protect.<glob>`) is set in the file only.
                _ if prefix.split_once(".config.").is_some_and(|(_, k)| {
                    !k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                }) => {}
                _ => {
                    out.insert(prefix.to_string());
                }
            }
        }
        let readme = include_str!("../../../README.md");
        let mut out = BTreeSet::new();
        for block in readme.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            let uncomment = |l: &str| {
                let indent = l.len() - l.trim_start().len();
                match l.trim_start().strip_prefix("# ") {
                    Some(rest) => format!("{}{rest}\n", &l[..indent]),
                    None => format!("{l}\n"),
                }
            };
            let text: String = block.lines().map(uncomment).collect();
            let v: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("README block {block}: {e}"));
            leaves("", &v, &mut out);
        }
        out
    }

    fn parse(env: &[(String, String)]) -> Loaded {
        Config::parse(None, env.iter().cloned()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn every_key(prefix: &str) -> Vec<(String, String)> {
        EVERY_KEY.iter().map(|(_, var, v)| (format!("{prefix}{var}"), v.to_string())).collect()
    }

    fn check_every_key(l: &Loaded) {
        assert!(l.unknown_keys.is_empty(), "{:?}", l.unknown_keys);
        let c = &l.config;
        assert_eq!((c.log.level, c.log.formatter), (LogLevel::Debug, LogFormatter::Json));
        assert_eq!(c.http.addr.to_string(), "0.0.0.0:6000");
        assert!(c.http.relativeurls);
        assert_eq!(c.http.maxinflight, 7);
        let t = &c.http.timeouts;
        assert_eq!(
            (t.header, t.idle, t.bodystall),
            (Duration::from_secs(5), Duration::from_secs(120), Duration::from_millis(1500))
        );
        assert_eq!((c.http.maxconnections, c.http.maxheaders, c.http.manifestmemory), (300, 4000, 1 << 20));
        let tls = c.http.tls.as_ref().unwrap();
        assert_eq!(
            (tls.certificate.as_path(), tls.key.as_path()),
            (Path::new("/tls/chain.pem"), Path::new("/tls/key.pem"))
        );
        let d = c.http.debug.as_ref().unwrap();
        assert_eq!(d.addr.to_string(), "127.0.0.1:6001");
        assert!(!d.prometheus.enabled);
        assert_eq!(d.prometheus.path, "/m");
        let st = &c.storage;
        assert_eq!(st.filesystem.as_ref().unwrap().rootdirectory, Path::new("/srv/registry"));
        assert_eq!(st.filesystem.as_ref().unwrap().warmbytes, 1 << 20);
        assert!(st.inmemory.is_some());
        assert!(!st.delete.enabled);
        assert!(st.maintenance.readonly.enabled);
        let p = &st.maintenance.uploadpurging;
        assert_eq!(
            (p.enabled, p.age, p.interval, p.dryrun),
            (false, Duration::from_secs(7200), Duration::from_secs(90), true)
        );
        assert!(st.redirect.disable);
        let s3 = st.s3.as_ref().unwrap();
        assert_eq!((s3.accesskey.as_deref(), s3.secretkey.as_deref()), (Some("007"), Some("true")));
        assert_eq!(s3.bucket, "2024");
        assert_eq!(s3.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s3.regionendpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.forcepathstyle, Some(false));
        assert_eq!(s3.rootdirectory.as_deref(), Some("/s3"));
        assert_eq!(s3.chunksize, Some(10 << 20));
        assert!(!s3.checksums);
        let az = st.azure.as_ref().unwrap();
        assert_eq!((az.accountname.as_str(), az.accountkey.as_deref()), ("acct", Some("a2V5==")));
        assert_eq!(az.container, "1.5");
        assert_eq!(az.realm.as_deref(), Some("core.chinacloudapi.cn"));
        assert_eq!(az.serviceurl.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        assert_eq!(az.rootdirectory.as_deref(), Some("/az"));
        let gcs = st.gcs.as_ref().unwrap();
        assert_eq!(gcs.bucket, "gbucket");
        assert_eq!(gcs.keyfile.as_deref(), Some(Path::new("/etc/gcs.json")));
        assert_eq!(gcs.rootdirectory.as_deref(), Some("/gs"));
        assert_eq!(st.plugin.as_ref().unwrap().name, "storage-fs");
        assert!(c.compatibility.schema1.enabled);
        assert_eq!(c.catalog.maxentries, 250);
        let d = &c.plugins.defaults;
        assert_eq!((d.deadline_ms, d.memory_mib), (1000, 128));
        assert_eq!(d.cache_dir.as_deref(), Some(Path::new("/cache")));
        assert_eq!(c.plugins.entries.keys().collect::<Vec<_>>(), ["acl", "gitlab", "immutable", "rules", "storage-fs"]);
        let acl = &c.plugins.entries["acl"];
        assert_eq!(acl.path, Path::new("/p/acl.wasm"));
        assert_eq!((acl.grants.dirs[0].guest.as_str(), acl.grants.dirs[0].mode), ("/auth", DirMode::Ro));
        assert_eq!(
            acl.config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
            [("groups", "a=x,y"), ("rules", "anonymous public/** pull"), ("users", "/auth/htpasswd")]
        );
        let t = c.auth.token.as_ref().unwrap();
        assert_eq!(
            (t.realm.as_str(), t.service.as_str(), t.issuer.as_str()),
            ("https://gitlab/jwt/auth", "container_registry", "gitlab-issuer")
        );
        assert_eq!(
            (t.rootcertbundle.as_deref(), t.jwks.as_deref()),
            (Some(Path::new("/etc/bundle.crt")), Some(Path::new("/etc/jwks.json")))
        );
        assert_eq!(
            (t.signingalgorithms.join(","), t.leeway, t.policy.as_deref()),
            ("RS256,ES256".into(), Duration::from_secs(5), Some("acl"))
        );
        let h = c.auth.htpasswd.as_ref().unwrap();
        assert_eq!(
            (h.realm.as_str(), h.path.as_path(), h.policy.as_deref()),
            ("basic-realm", Path::new("/etc/htpasswd"), Some("acl"))
        );
        let i = c.auth.issuer.as_ref().unwrap();
        assert_eq!(
            (i.policy.as_str(), i.service.as_str(), i.issuer.as_str(), i.realm.as_deref()),
            ("acl", "svc", "iss", Some("https://r/auth/token"))
        );
        assert_eq!(
            (i.expiration, i.refreshexpiration, i.leeway),
            (Duration::from_secs(600), Duration::from_secs(48 * 3600), Duration::from_millis(1500))
        );
        assert_eq!(
            (i.key.as_deref(), i.certificate.as_deref(), i.statedir.as_deref()),
            (Some(Path::new("/etc/issuer.key")), Some(Path::new("/etc/issuer.crt")), Some(Path::new("/var/lib/berth")))
        );
        assert_eq!(c.admission.chains[0].plugins, vec!["immutable".to_string(), "rules".to_string()]);
        assert_eq!(c.admission.failopen, vec!["rules".to_string()]);
        assert_eq!(c.plugins.entries["rules"].config["maxlayerbytes"], "1024");
        assert_eq!(c.plugins.entries["immutable"].config["may"], "release-bot");
        assert_eq!(c.gc.schedule, Some(Duration::from_secs(12 * 3600)));
        assert!(c.gc.deleteuntagged && c.gc.dryrun);
        assert_eq!(c.gc.graceperiod, Duration::from_secs(1800));
        let p = &c.cleanup.policies[0];
        assert_eq!((p.name.as_str(), p.plugin.as_str(), p.repositories[0].as_str()), ("ci", "gitlab", "ci/**"));
        assert_eq!((p.settings["keep_n"].as_str(), p.cadence), ("5", Some(Duration::from_secs(7 * 86_400))));
        assert_eq!(c.plugins.entries["gitlab"].path, Path::new("/p/gitlab.wasm"));
        let n = &c.notifications;
        let e = &n.endpoints[0];
        assert_eq!(
            (e.name.as_str(), e.url.as_str(), e.headers["Authorization"][0].as_str()),
            ("hook", "https://h/e", "t")
        );
        assert_eq!((e.timeout, e.backoff), (Duration::from_millis(500), Duration::from_secs(2)));
        assert!(n.events.includereferences);
        let o = &n.outbox;
        assert_eq!(o.directory.as_deref(), Some(Path::new("/var/lib/outbox")));
        assert_eq!((o.maxevents, o.maxbytes, o.pullflush), (50, 65536, Duration::from_millis(250)));
        let p = &c.plugins.entries["storage-fs"];
        assert_eq!(p.path, Path::new("/p/fs.wasm"));
        assert_eq!(p.sha256.as_deref(), Some("0123456789"));
        assert_eq!((p.deadline_ms, p.memory_mib, p.instances), (Some(250), Some(32), Some(4)));
        assert_eq!(p.max_instances, Some(12));
        assert!(!p.verify_uploads);
        let g = &p.grants.dirs[..];
        assert_eq!(
            (g.len(), g[0].host.as_path(), g[0].guest.as_str(), g[0].mode),
            (1, Path::new("/srv/d"), "/data", DirMode::Rw)
        );
        assert_eq!(p.grants.network, ["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(
            p.config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
            [("max_size", "010"), ("root", "/data")]
        );
    }

    #[test]
    fn every_readme_key_from_the_environment() {
        let covered: BTreeSet<String> = EVERY_KEY.iter().map(|(k, _, _)| k.to_string()).collect();
        let missing: Vec<String> = readme_keys().into_iter().filter(|k| !covered.contains(k)).collect();
        assert!(missing.is_empty(), "README keys this test does not override: {missing:?}");
        for (key, var, _) in EVERY_KEY {
            let spelled = key.replace("storage-fs", "storage_fs").replace('.', "_").to_ascii_uppercase();
            assert_eq!(&spelled, var, "the variable for {key} is {spelled}");
        }
        check_every_key(&parse(&every_key("BERTH_")));
        check_every_key(&parse(&every_key("REGISTRY_")));
        // Both set: BERTH_ wins, whatever the order they come in.
        let mut both = every_key("BERTH_");
        both.extend(EVERY_KEY.iter().map(|(_, var, _)| (format!("REGISTRY_{var}"), "nonsense".to_string())));
        both.reverse();
        check_every_key(&parse(&both));
    }

    #[test]
    fn plugin_names_in_variables() {
        let yaml = "plugins:\n  my.plug_in: {path: /a.wasm}\n  my-plug: {path: /b.wasm}\n";
        let l = load(
            yaml,
            &[
                ("BERTH_PLUGINS_MY_PLUG_IN_MEMORYMIB", "8"),
                ("BERTH_PLUGINS_MY_PLUG_MEMORYMIB", "16"),
                ("BERTH_PLUGINS_my-plug_DEADLINEMS", "20"),
                ("BERTH_PLUGINS_NEWONE_PATH", "/c.wasm"),
            ],
        )
        .unwrap();
        let e = &l.config.plugins.entries;
        assert_eq!(e.keys().collect::<Vec<_>>(), ["my-plug", "my.plug_in", "newone"]);
        assert_eq!(e["my.plug_in"].memory_mib, Some(8));
        assert_eq!((e["my-plug"].memory_mib, e["my-plug"].deadline_ms), (Some(16), Some(20)));
        assert_eq!(e["newone"].path, Path::new("/c.wasm"));
        let e = load("plugins:\n  a-b: {path: /a.wasm}\n  a.b: {path: /b.wasm}\n", &[("BERTH_PLUGINS_A_B_PATH", "/c")])
            .unwrap_err();
        assert_eq!(e.key, "BERTH_PLUGINS_A_B_PATH");
        assert!(e.message.contains("a-b, a.b"), "{e}");
    }

    #[test]
    fn what_is_not_configuration() {
        let l = load(
            "",
            &[
                ("BERTH_BIN", "/x/berth"),
                ("BERTH_CONFIG", "/x.yml"),
                ("BERTH_TEST_STORAGE", "s3"),
                ("BERTH_PLUGIN_DIR", "/p"),
                ("PATH", "/bin"),
                ("REGISTRY_REDIS_ADDR", "10.0.0.2:6379"),
                ("BERTH_HTTP_SECRET", "s"),
                // What Kubernetes defines for a service named `registry`.
                ("REGISTRY_PORT", "tcp://10.0.0.1:5000"),
                ("REGISTRY_PORT_5000_TCP_ADDR", "10.0.0.1"),
            ],
        )
        .unwrap();
        assert_eq!(
            l.unknown_keys,
            [
                "http.secret (from BERTH_HTTP_SECRET)",
                "port (from REGISTRY_PORT)",
                "port.5000.tcp.addr (from REGISTRY_PORT_5000_TCP_ADDR)",
                "redis.addr (from REGISTRY_REDIS_ADDR)",
            ]
        );
    }

    #[test]
    fn bad_values_name_key_and_variable() {
        let e = load("", &[("BERTH_STORAGE_DELETE_ENABLED", "maybe")]).unwrap_err();
        assert_eq!(e.key, "storage.delete.enabled");
        assert!(e.message.ends_with("(from BERTH_STORAGE_DELETE_ENABLED)"), "{e}");
        let e = load("", &[("BERTH_PLUGINS_DEFAULTS_DEADLINEMS", "soon")]).unwrap_err();
        assert_eq!(e.key, "plugins.defaults.deadlinems", "{e}");
        let e = load("", &[("BERTH_HTTP__ADDR", "x")]).unwrap_err();
        assert_eq!(e.key, "BERTH_HTTP__ADDR", "{e}");
        // A key the file spells the old way (deadline_ms) is replaced, not duplicated.
        let l = load("plugins:\n  defaults: {deadline_ms: 5}\n", &[("BERTH_PLUGINS_DEFAULTS_DEADLINEMS", "1000")]);
        assert_eq!(l.unwrap().config.plugins.defaults.deadline_ms, 1000);
    }
}
