//! The registry domain: blobs, uploads, manifests, tags, referrers and the catalog, over a
//! `StorageDriver`. Nothing here knows about HTTP.

pub mod digest;
pub mod error;
pub mod names;

mod cache;
pub mod deferred_sync;
mod listing;
mod manifests;
pub mod paths;
mod purge;
mod schema1;
mod uploads;
mod watch;

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::storage::{ByteStream, StorageDriver, StorageError};

pub use digest::{Algorithm, Digest};
pub use error::{RegistryError, Result};
pub use listing::{Page, RepoDir, TagRecord};
pub use manifests::{Condition, ManifestPut, Referrers, StoredManifest, MAX_MANIFEST_SIZE};
pub use names::{Reference, RepoName, Tag};
pub use purge::{spawn_purger, PurgeReport};
pub(crate) use uploads::rfc3339;
pub use uploads::UploadStatus;
pub use watch::WriteWatch;

/// A request or chunk body as the domain sees it: a stream of byte chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send>>;

pub struct Registry {
    driver: Arc<dyn StorageDriver>,
    uploads: Arc<uploads::Sessions>,
    cache: cache::ManifestCache,
    tag_locks: Vec<tokio::sync::Mutex<()>>,
    /// With `compatibility.schema1.enabled`, the key that signs schema 1 manifests stored
    /// without signatures; schema 1 pushes are refused without it.
    schema1: Option<schema1::Signer>,
    /// Told before a write links existing content (garbage collection's journal).
    watch: std::sync::OnceLock<Arc<dyn WriteWatch>>,
    /// Admission-policy plugins asked before a write lands (`admit`).
    admission: Option<Arc<crate::admission::Chain>>,
}

/// A blob ready to stream: its full size, and the bytes of the requested range.
pub struct BlobRead {
    pub size: u64,
    pub range: Option<(u64, u64)>,
    pub body: ByteStream,
}

impl Registry {
    pub fn new(driver: Arc<dyn StorageDriver>) -> Self {
        Registry {
            driver,
            uploads: Default::default(),
            cache: Default::default(),
            tag_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            schema1: None,
            watch: std::sync::OnceLock::new(),
            admission: None,
        }
    }

    /// Accepts Docker schema 1 manifests on push (they are refused by default).
    pub fn with_schema1(mut self, enabled: bool) -> Self {
        self.schema1 = None;
        if enabled {
            match schema1::Signer::generate() {
                Ok(s) => self.schema1 = Some(s),
                Err(_) => tracing::error!("no schema 1 signing key could be made: schema 1 pushes are refused"),
            }
        }
        self
    }

    /// Asks `chain` before every write lands.
    pub fn with_admission(mut self, chain: Option<Arc<crate::admission::Chain>>) -> Self {
        self.admission = chain;
        self
    }

    /// Whether a write to `repo` must pass admission (so nothing is built for one that need not).
    fn admission_for(&self, repo: &RepoName) -> Option<&crate::admission::Chain> {
        self.admission.as_deref().filter(|c| c.applies(repo.as_str()))
    }

    /// The one funnel for admission: every write operation calls it after validating and before
    /// writing, a tag write with the tag's lock held. `write` is built only when a chain applies.
    async fn admit(&self, repo: &RepoName, write: impl FnOnce() -> crate::admission::Write) -> Result<()> {
        match self.admission_for(repo) {
            None => Ok(()),
            Some(chain) => Ok(chain.admit(repo.as_str(), &write()).await?),
        }
    }

    /// An upload that declared its size up front (`Content-Length` of a monolithic `POST`):
    /// admitted before a byte is read.
    pub async fn admit_upload(&self, repo: &RepoName, size: u64, digest: Option<&Digest>) -> Result<()> {
        self.admit(repo, || {
            crate::admission::Write::UploadStart(crate::admission::UploadStart {
                repository: repo.to_string(),
                size,
                digest: digest.map(|d| d.to_string()),
            })
        })
        .await
    }

    pub fn driver(&self) -> &dyn StorageDriver {
        &*self.driver
    }

    /// The driver's backend was swapped (a storage plugin reload): drop cached manifests.
    pub fn storage_changed(&self) {
        self.cache.clear();
    }

    /// Whether the blob is linked into the repository (as a layer or as a manifest).
    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (layer_link, revision_link) = (paths::layer_link(repo, digest), paths::revision_link(repo, digest));
        let (layer, revision) = tokio::join!(self.driver.stat_file(&layer_link), self.driver.stat_file(&revision_link));
        for r in [layer, revision] {
            match r {
                Ok(_) => return Ok(true),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Size of a blob the repository can serve.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if !self.blob_linked(repo, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        match self.driver.stat_file(&paths::blob_data(digest)).await {
            Ok(info) => Ok(info.size),
            Err(e) if e.is_not_found() => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a client may fetch the blob directly (a pre-signed object store URL), if the driver
    /// offers one; checked against the repository first, as a read is. A driver without
    /// redirects is asked nothing more: the read that follows checks the blob once.
    pub async fn blob_redirect(&self, repo: &RepoName, digest: &Digest) -> Result<Option<String>> {
        let Some(url) = self.driver.redirect_url(&paths::blob_data(digest)).await? else { return Ok(None) };
        self.stat_blob(repo, digest).await?;
        Ok(Some(url))
    }

    /// Streams a blob, or the inclusive byte range `range` of it.
    pub async fn read_blob(&self, repo: &RepoName, digest: &Digest, range: Option<RangeSpec>) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let range = match range {
            None => None,
            Some(spec) => Some(spec.resolve(size)?),
        };
        let offset = range.map_or(0, |(start, _)| start);
        let stream = self.driver.reader(&paths::blob_data(digest), offset).await.map_err(|e| match e {
            StorageError::NotFound(_) => RegistryError::BlobUnknown(digest.clone()),
            e => e.into(),
        })?;
        let body = match range {
            Some((start, end)) => take_bytes(stream, end - start + 1),
            None => stream,
        };
        Ok(BlobRead { size, range, body })
    }

    /// Unlinks a blob from the repository; the data stays until garbage collection.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let link = paths::layer_link(repo, digest);
        match self.driver.delete(&link).await {
            Ok(()) => Ok(self.sync(&[link]).await?),
            Err(e) if e.is_not_found() => Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Links an existing blob into `repo`. With `from`, the blob must be linked there; without,
    /// any blob the registry holds can be mounted (OCI 1.1 automatic content discovery).
    /// Returns false when the blob cannot be mounted, and the caller falls back to an upload.
    pub async fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: Option<&RepoName>) -> Result<bool> {
        if self.announce(std::slice::from_ref(digest)).await.is_err() {
            return Ok(false);
        }
        if let Some(from) = from {
            if !self.blob_linked(from, digest).await? {
                return Ok(false);
            }
        }
        match self.driver.stat_file(&paths::blob_data(digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.link_layer(repo, digest).await?;
        self.sync(&[paths::layer_link(repo, digest)]).await?;
        Ok(true)
    }

    async fn link_layer(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let link = paths::layer_link(repo, digest);
        self.driver.put_volatile(&link, Bytes::from(digest.to_string())).await?;
        Ok(())
    }

    /// Serialises changes to one tag within this process (conditional writes need it).
    async fn lock_tag(&self, repo: &RepoName, tag: &Tag) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (repo, tag).hash(&mut h);
        self.tag_locks[(h.finish() % self.tag_locks.len() as u64) as usize].lock().await
    }
}

/// A byte range as a client asked for it (`bytes=a-b`, `bytes=a-`, `bytes=-n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    FromTo(u64, u64),
    From(u64),
    Last(u64),
}

impl RangeSpec {
    /// Parses a single-range `Range` header value.
    pub fn parse(header: &str) -> Option<RangeSpec> {
        let spec = header.trim().strip_prefix("bytes=")?;
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let num = |s: &str| s.trim().parse::<u64>().ok();
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (false, false) => Some(RangeSpec::FromTo(num(a)?, num(b)?)),
            (false, true) => Some(RangeSpec::From(num(a)?)),
            (true, false) => Some(RangeSpec::Last(num(b)?)),
            (true, true) => None,
        }
    }

    /// The inclusive `(start, end)` within a blob of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<(u64, u64)> {
        let unsatisfiable =
            || RegistryError::RangeNotSatisfiable { message: format!("{self:?} of {size} bytes"), size };
        let (start, end) = match self {
            RangeSpec::FromTo(a, b) if a <= b => (a, b.min(size.saturating_sub(1))),
            RangeSpec::FromTo(..) => return Err(unsatisfiable()),
            RangeSpec::From(a) => (a, size.saturating_sub(1)),
            RangeSpec::Last(0) => return Err(unsatisfiable()),
            RangeSpec::Last(n) => (size.saturating_sub(n), size.saturating_sub(1)),
        };
        if size == 0 || start >= size {
            return Err(unsatisfiable());
        }
        Ok((start, end))
    }
}

/// Cuts a stream off after `limit` bytes.
fn take_bytes(stream: ByteStream, limit: u64) -> ByteStream {
    Box::pin(stream.scan(limit, |left, item| {
        let out = match item {
            Ok(_) if *left == 0 => None,
            Ok(mut b) => {
                if b.len() as u64 > *left {
                    b.truncate(*left as usize);
                }
                *left -= b.len() as u64;
                Some(Ok(b))
            }
            Err(e) => Some(Err(e)),
        };
        std::future::ready(out)
    }))
}

#[cfg(test)]
mod tests;
