//! `storage`: the driver (filesystem, in-memory, object stores or a plugin), deletes, redirects
//! and maintenance (read-only mode, upload purging).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{duration, resolve, ConfigError, Section};

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

impl Storage {
    pub fn driver(&self) -> Driver {
        if let Some(p) = &self.plugin {
            return Driver::Plugin(p.name.clone());
        }
        if let Some(s3) = &self.s3 {
            return Driver::S3(s3.clone());
        }
        if let Some(a) = &self.azure {
            return Driver::Azure(a.clone());
        }
        if let Some(g) = &self.gcs {
            return Driver::Gcs(g.clone());
        }
        match (&self.filesystem, &self.inmemory) {
            (_, Some(_)) => Driver::InMemory,
            (Some(fs), None) => Driver::Filesystem(fs.rootdirectory.clone()),
            // Not written anywhere, so under the working directory.
            (None, None) => Driver::Filesystem(Filesystem::default().rootdirectory),
        }
    }
}

impl Section for Storage {
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(fs) = &mut self.filesystem {
            resolve(base, &mut fs.rootdirectory);
        }
        if let Some(k) = self.gcs.as_mut().and_then(|g| g.keyfile.as_mut()) {
            resolve(base, k);
        }
    }

    fn problems(&self, out: &mut Vec<ConfigError>) {
        let drivers = [
            self.filesystem.is_some(),
            self.inmemory.is_some(),
            self.plugin.is_some(),
            self.s3.is_some(),
            self.azure.is_some(),
            self.gcs.is_some(),
        ];
        if drivers.iter().filter(|d| **d).count() > 1 {
            out.push(ConfigError::new(
                "storage",
                "configure exactly one storage driver (filesystem, inmemory, s3, azure, gcs or plugin)",
            ));
        }
        let need = |out: &mut Vec<ConfigError>, key: &str, v: &str| {
            if v.trim().is_empty() {
                out.push(ConfigError::new(key, "is required"));
            }
        };
        let chunk = |out: &mut Vec<ConfigError>, key: &str, v: Option<u64>| {
            if let Some(n) = v.filter(|n| !(5 << 20..=5 << 30).contains(n)) {
                out.push(ConfigError::new(
                    key,
                    format!("{n} is outside 5 MiB..5 GiB, the sizes object stores take for a part"),
                ));
            }
        };
        if let Some(s3) = &self.s3 {
            need(out, "storage.s3.bucket", &s3.bucket);
            chunk(out, "storage.s3.chunksize", s3.chunksize);
            if s3.accesskey.is_some() != s3.secretkey.is_some() {
                out.push(ConfigError::new(
                    "storage.s3.secretkey",
                    "accesskey and secretkey go together (omit both to use the environment or instance role)",
                ));
            }
            if let Some(e) = &s3.regionendpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    out.push(ConfigError::new(
                        "storage.s3.regionendpoint",
                        format!("{e:?} is not an http:// or https:// URL"),
                    ));
                }
            }
        }
        if let Some(a) = &self.azure {
            need(out, "storage.azure.accountname", &a.accountname);
            need(out, "storage.azure.container", &a.container);
        }
        if let Some(g) = &self.gcs {
            need(out, "storage.gcs.bucket", &g.bucket);
            chunk(out, "storage.gcs.chunksize", g.chunksize);
        }
        let purge = &self.maintenance.uploadpurging;
        if purge.enabled && (purge.age.is_zero() || purge.interval.is_zero()) {
            out.push(ConfigError::new("storage.maintenance.uploadpurging", "age and interval must be more than zero"));
        }
        if let Some(fs) = &self.filesystem {
            if fs.rootdirectory.as_os_str().is_empty() {
                out.push(ConfigError::new("storage.filesystem.rootdirectory", "must not be empty"));
            }
        }
    }
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
    /// The first bytes of every upload written through the page cache, so a pull right after
    /// the push finds them there; the rest of a larger blob goes to the device directly.
    pub warmbytes: u64,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem { rootdirectory: PathBuf::from("./data"), warmbytes: crate::storage::DEFAULT_WARM_BYTES }
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReadOnly {
    pub enabled: bool,
}

/// Removal of upload sessions abandoned for longer than `age`, checked every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UploadPurging {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub age: Duration,
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Log what would be removed, remove nothing.
    pub dryrun: bool,
}

impl Default for UploadPurging {
    fn default() -> Self {
        UploadPurging {
            enabled: true,
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dryrun: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;
    use crate::config::Config;

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, []).unwrap().config;
        assert_eq!(c.driver(), Driver::Filesystem("./data".into()));
        assert!(c.storage.delete.enabled);
        assert!(!c.storage.maintenance.readonly.enabled);
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
        let e = load("storage:\n  delete:\n    enabled: maybe\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.delete.enabled", "{e}");
        let e = load("storage:\n  filesystem: {}\n  inmemory: {}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage");
        let e = load("storage:\n  plugin: {name: nope}\n", &[]).unwrap_err();
        assert_eq!(e.key, "storage.plugin.name", "{e}");
    }
}
