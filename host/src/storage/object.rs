//! Object store drivers on `object_store`: S3 and S3-compatible services, Azure Blob, Google
//! Cloud Storage, and an in-memory store for tests and throwaway registries. Keys are
//! distribution's: `<rootdirectory>/docker/registry/v2/...`, so a bucket distribution wrote is
//! served as it is.
//!
//! Writes go out as multipart uploads with parts in flight while the body still streams in, so
//! no blob is ever held whole in memory, and an object appears only when its upload completes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::signer::Signer;
use object_store::{
    ClientConfigKey, GetOptions, GetRange, MultipartUpload, ObjectStore, PutMode, PutPayload, UpdateVersion,
};

use super::page::{settled, FlatPage, ListPage, Selection};
use super::{rechunk, resume};
use super::{validate_path, ByteStream, Expect, FileInfo, FileWriter, Result, StorageDriver, StorageError, Version};
use crate::config;

/// Default multipart part size (distribution's S3 default).
const DEFAULT_PART_SIZE: usize = 10 << 20;
/// Parts uploading at once per writer: enough to fill a link, bounded memory (parts × size).
const PARTS_IN_FLIGHT: usize = 4;
/// S3's limit for a single-request copy.
const COPY_LIMIT: u64 = 5 << 30;
/// Lifetime of a redirect URL: long enough to start the download (distribution uses 20 min).
const REDIRECT_TTL: Duration = Duration::from_secs(20 * 60);
/// The timeout of a request that moves a whole object, or a part of one, within or into the
/// service: a server-side copy (up to [`COPY_LIMIT`]), completing a multipart upload, a part
/// sent over a slow link. The HTTP client's default, 30 s for every request, cut them: S3 may
/// take minutes to copy or complete a large object (it keeps the connection alive meanwhile),
/// and a completion retried after it went through fails. Every other request keeps the
/// default, so that a service that stops answering is noticed soon.
const LONG_REQUEST_TIMEOUT: &str = "15m";

/// The long client's timeout: [`LONG_REQUEST_TIMEOUT`], or the operator's timeout for every
/// request (`AWS_TIMEOUT`, `AZURE_TIMEOUT`, `GOOGLE_TIMEOUT`, as `object_store` reads them) when
/// that is longer, so that the long client never cuts what the short one would let run.
fn long_timeout(configured: Option<String>) -> String {
    let long = humantime::parse_duration(LONG_REQUEST_TIMEOUT).expect("LONG_REQUEST_TIMEOUT is a duration");
    match configured {
        Some(c) if humantime::parse_duration(&c).is_ok_and(|d| d > long) => c,
        _ => LONG_REQUEST_TIMEOUT.to_string(),
    }
}

pub struct ObjectStoreDriver {
    name: &'static str,
    store: Arc<dyn ObjectStore>,
    /// The same service with [`long_timeout`]: copies and multipart uploads.
    long: Arc<dyn ObjectStore>,
    /// Signs redirect URLs; `None` when redirects are off or the store cannot sign.
    signer: Option<Arc<dyn Signer>>,
    /// `rootdirectory` as a key prefix, without slashes at its ends.
    root: String,
    part_size: usize,
    /// Largest object the service copies in one request (S3's `CopyObject`: 5 GiB); a bigger
    /// one is moved by streaming it through a new multipart upload.
    copy_limit: u64,
    /// The service's own paged listing, for ordered pages of a directory.
    pager: Option<Pager>,
}

/// A service's paged, delimited listing (`ListObjectsV2` and its kin).
#[derive(Clone)]
struct Pager {
    store: Arc<dyn PaginatedListStore>,
    /// Whether it starts at a key (S3 and GCS `start-after`); Azure pages only from the start.
    offsets: bool,
}

/// Keys asked of the service per request (S3's maximum).
const SERVICE_PAGE: usize = 1000;

/// The in-memory driver: an `object_store` `InMemory` behind the same adapter.
pub struct InMemoryDriver;

impl InMemoryDriver {
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> ObjectStoreDriver {
        let store = Arc::new(InMemory::new());
        ObjectStoreDriver::new("inmemory", store.clone(), store, None, None, 5 << 20)
    }
}

/// Retries of one storage request: a few, within a bound a client waiting on the registry can
/// live with (`object_store`'s default keeps trying for three minutes).
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
        backoff: object_store::BackoffConfig::default(),
    }
}

fn backend(what: &str) -> impl FnOnce(object_store::Error) -> StorageError + '_ {
    move |e| StorageError::Backend(format!("{what}: {e}"))
}

impl ObjectStoreDriver {
    fn new(
        name: &'static str,
        store: Arc<dyn ObjectStore>,
        long: Arc<dyn ObjectStore>,
        signer: Option<Arc<dyn Signer>>,
        root: Option<&str>,
        part_size: usize,
    ) -> Self {
        let root = root.unwrap_or("").trim_matches('/').to_string();
        ObjectStoreDriver { name, store, long, signer, root, part_size, copy_limit: COPY_LIMIT, pager: None }
    }

    /// S3 or an S3-compatible service (`regionendpoint`), distribution's keys.
    pub fn s3(c: &config::S3, redirect: bool) -> Result<Self> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&c.bucket)
            .with_region(c.region.clone().unwrap_or_else(|| "us-east-1".into()))
            // The registry checks every digest itself; signing payload hashes would hash each
            // byte a second time for nothing.
            .with_unsigned_payload(true);
        if c.checksums {
            // S3 checks every part's SHA-256 as it arrives, and keeps the object's checksum.
            b = b.with_checksum_algorithm(object_store::aws::Checksum::SHA256);
        }
        if let (Some(key), Some(secret)) = (&c.accesskey, &c.secretkey) {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        }
        if let Some(t) = &c.sessiontoken {
            b = b.with_token(t);
        }
        if let Some(e) = &c.regionendpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(!c.forcepathstyle.unwrap_or(true));
        }
        let b = b.with_retry(retry());
        let timeout = AmazonS3ConfigKey::Client(ClientConfigKey::Timeout);
        let long = b.clone().with_config(timeout, long_timeout(b.get_config_value(&timeout)));
        let long = Arc::new(long.build().map_err(backend("storage.s3"))?);
        let s3 = Arc::new(b.build().map_err(backend("storage.s3"))?);
        let signer = redirect.then(|| s3.clone() as Arc<dyn Signer>);
        let part = c.chunksize.map_or(DEFAULT_PART_SIZE, |n| n as usize);
        let pager = Pager { store: s3.clone(), offsets: true };
        Ok(Self::new("s3", s3, long, signer, c.rootdirectory.as_deref(), part).with_pager(pager))
    }

    /// Azure Blob Storage; `serviceurl` points it at Azurite or a sovereign cloud.
    pub fn azure(c: &config::Azure, redirect: bool) -> Result<Self> {
        let mut b = MicrosoftAzureBuilder::from_env().with_account(&c.accountname).with_container_name(&c.container);
        if let Some(k) = &c.accountkey {
            b = b.with_access_key(k);
        }
        let endpoint = match (&c.serviceurl, &c.realm) {
            (Some(url), _) => Some(url.clone()),
            (None, Some(realm)) => Some(format!("https://{}.blob.{realm}", c.accountname)),
            (None, None) => None,
        };
        if let Some(e) = endpoint {
            b = b.with_allow_http(e.starts_with("http://")).with_endpoint(e);
        }
        let b = b.with_retry(retry());
        let timeout = AzureConfigKey::Client(ClientConfigKey::Timeout);
        let long = b.clone().with_config(timeout, long_timeout(b.get_config_value(&timeout)));
        let long = Arc::new(long.build().map_err(backend("storage.azure"))?);
        let az = Arc::new(b.build().map_err(backend("storage.azure"))?);
        let signer = redirect.then(|| az.clone() as Arc<dyn Signer>);
        let pager = Pager { store: az.clone(), offsets: false };
        Ok(Self::new("azure", az, long, signer, c.rootdirectory.as_deref(), DEFAULT_PART_SIZE).with_pager(pager))
    }

    /// Google Cloud Storage; without `keyfile`, application default credentials.
    pub fn gcs(c: &config::Gcs, redirect: bool) -> Result<Self> {
        let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&c.bucket);
        if let Some(k) = &c.keyfile {
            b = b.with_service_account_path(k.to_string_lossy());
        }
        let b = b.with_retry(retry());
        let timeout = GoogleConfigKey::Client(ClientConfigKey::Timeout);
        let long = b.clone().with_config(timeout, long_timeout(b.get_config_value(&timeout)));
        let long = Arc::new(long.build().map_err(backend("storage.gcs"))?);
        let gcs = Arc::new(b.build().map_err(backend("storage.gcs"))?);
        let signer = redirect.then(|| gcs.clone() as Arc<dyn Signer>);
        let part = c.chunksize.map_or(DEFAULT_PART_SIZE, |n| n as usize);
        let pager = Pager { store: gcs.clone(), offsets: true };
        Ok(Self::new("gcs", gcs, long, signer, c.rootdirectory.as_deref(), part).with_pager(pager))
    }

    fn with_pager(mut self, pager: Pager) -> Self {
        self.pager = Some(pager);
        self
    }

    /// A page of a directory from the service's delimited listing, starting at the key after
    /// `start_after` where the service can (never the whole bucket for one page). Pages come
    /// in key order, where `u/` sorts after `u-x/`; a name is returned only once nothing
    /// unseen can sort before it (`settled`), reading on if need be.
    async fn service_page(&self, pager: &Pager, path: &str, after: Option<&str>, limit: usize) -> Result<ListPage> {
        let prefix = format!("{}/", self.key(path)?.as_ref());
        let mut sel = Selection::new(after, limit);
        let mut token: Option<String> = None;
        let mut first = true;
        let mut any = false;
        loop {
            let opts = PaginatedListOptions {
                offset: if first && pager.offsets { after.map(|a| format!("{prefix}{a}")) } else { None },
                delimiter: Some("/".into()),
                max_keys: Some(if pager.offsets { limit.saturating_add(1).min(SERVICE_PAGE) } else { SERVICE_PAGE }),
                page_token: token.take(),
                ..Default::default()
            };
            first = false;
            let got = pager.store.list_paginated(Some(&prefix), opts).await.map_err(self.map_err(path))?;
            let rel = |p: &ObjPath| p.as_ref().strip_prefix(prefix.as_str()).map(str::to_string);
            let dirs = got.result.common_prefixes.iter().filter_map(rel);
            let files = got.result.objects.iter().filter_map(|o| rel(&o.location));
            let mut last_key: Option<String> = None;
            for (name, key) in dirs.map(|d| (d.clone(), format!("{d}/"))).chain(files.map(|f| (f.clone(), f))) {
                any = true;
                sel.offer(&name);
                if last_key.as_ref().is_none_or(|k| key > *k) {
                    last_key = Some(key);
                }
            }
            let Some(next) = got.page_token else {
                if !any && after.is_none() {
                    return Err(StorageError::NotFound(path.to_string()));
                }
                return Ok(sel.finish());
            };
            token = Some(next);
            if sel.is_full() {
                let mut page = sel.finish();
                let ok = settled(&page.names, after, last_key.as_deref());
                if ok > 0 {
                    page.names.truncate(ok);
                    page.more = true;
                    return Ok(page);
                }
                // Read on: rebuild the selection from what was kept.
                sel = Selection::new(after, limit);
                for n in &page.names {
                    sel.offer(n);
                }
            }
        }
    }

    fn key(&self, path: &str) -> Result<ObjPath> {
        validate_path(path)?;
        Ok(if self.root.is_empty() {
            ObjPath::from(&path[1..])
        } else {
            ObjPath::from(format!("{}/{}", self.root, &path[1..]))
        })
    }

    /// The driver path of a key listed under the root.
    fn path_of(&self, key: &ObjPath) -> String {
        let k = key.as_ref();
        let rel =
            if self.root.is_empty() { k } else { k.strip_prefix(&self.root).unwrap_or(k).trim_start_matches('/') };
        format!("/{rel}")
    }

    fn map_err<'a>(&self, path: &'a str) -> impl FnOnce(object_store::Error) -> StorageError + 'a {
        let name = self.name;
        move |e| match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound(path.to_string()),
            other => StorageError::Backend(format!("{name}: {path}: {other}")),
        }
    }

    /// Every object at or below `path`, which is how a "directory" exists in an object store.
    async fn objects_under(&self, path: &str) -> Result<Vec<ObjPath>> {
        let prefix = self.key(path)?;
        self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.map_err(self.map_err(path))
    }

    async fn any_under(&self, path: &str) -> Result<bool> {
        let prefix = self.key(path)?;
        let mut s = self.store.list(Some(&prefix));
        match s.next().await {
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(self.map_err(path)(e)),
            None => Ok(false),
        }
    }
}

#[async_trait]
impl StorageDriver for ObjectStoreDriver {
    fn name(&self) -> &'static str {
        self.name
    }

    fn atomic_writers(&self) -> bool {
        true
    }

    async fn redirect_url(&self, path: &str) -> Result<Option<String>> {
        let k = self.key(path)?;
        let Some(signer) = &self.signer else { return Ok(None) };
        let url = signer.signed_url(http::Method::GET, &k, REDIRECT_TTL).await.map_err(self.map_err(path))?;
        Ok(Some(url.to_string()))
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        let got = self.store.get(&self.key(path)?).await.map_err(self.map_err(path))?;
        got.bytes().await.map_err(self.map_err(path))
    }

    /// A single PUT: object stores make it atomic and durable before it is acknowledged.
    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        self.store.put(&self.key(path)?, PutPayload::from(content)).await.map_err(self.map_err(path))?;
        Ok(())
    }

    /// S3 (`If-None-Match`/`If-Match`, which AWS has honoured since 2024; `object_store`'s
    /// default), Azure and GCS (their own preconditions) and the in-memory store all have them.
    fn conditional_writes(&self) -> bool {
        true
    }

    async fn get_versioned(&self, path: &str) -> Result<(Bytes, Version)> {
        let got = self.store.get(&self.key(path)?).await.map_err(self.map_err(path))?;
        let version = Version {
            e_tag: got
                .meta
                .e_tag
                .clone()
                .ok_or_else(|| StorageError::Backend(format!("{}: {path}: the service sent no ETag", self.name)))?,
            generation: got.meta.version.clone(),
        };
        Ok((got.bytes().await.map_err(self.map_err(path))?, version))
    }

    async fn put_if(&self, path: &str, content: Bytes, expect: Expect) -> Result<()> {
        let mode = match expect {
            Expect::Absent => PutMode::Create,
            Expect::Version(v) => PutMode::Update(UpdateVersion { e_tag: Some(v.e_tag), version: v.generation }),
        };
        match self.store.put_opts(&self.key(path)?, PutPayload::from(content), mode.into()).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                Err(StorageError::Conflict { path: path.to_string() })
            }
            Err(object_store::Error::NotImplemented) => Err(StorageError::Unsupported { driver: self.name }),
            Err(e) => Err(self.map_err(path)(e)),
        }
    }

    /// A whole object is one GET; from an offset, a HEAD first checks the offset (a range past
    /// the end is an error on the service, not an empty read).
    async fn reader(&self, path: &str, offset: u64) -> Result<ByteStream> {
        let k = self.key(path)?;
        let mut opts = GetOptions::default();
        if offset > 0 {
            let size = self.store.head(&k).await.map_err(self.map_err(path))?.size;
            if offset > size {
                return Err(StorageError::InvalidOffset { path: path.to_string(), offset });
            }
            if offset == size {
                return Ok(Box::pin(futures_util::stream::empty()));
            }
            opts.range = Some(GetRange::Offset(offset));
        }
        let got = self.store.get_opts(&k, opts).await.map_err(self.map_err(path))?;
        let (start, end) = (got.range.start, got.range.end);
        let if_match = got.meta.e_tag.clone();
        let (name, owned) = (self.name, Arc::<str>::from(path));
        let chunks = move |got: object_store::GetResult, owned: Arc<str>| -> ByteStream {
            rechunk::rechunk(Box::pin(
                got.into_stream().map(move |r| r.map_err(|e| StorageError::Backend(format!("{name}: {owned}: {e}")))),
            ))
        };
        let first = chunks(got, owned.clone());
        let store = self.store.clone();
        // The rest of the same object, from the first byte not handed out (`storage::resume`).
        let reopen: resume::Reopen = Box::new(move |at| {
            let (store, k, owned) = (store.clone(), k.clone(), owned.clone());
            let opts = GetOptions {
                range: Some(GetRange::Bounded(at..end)),
                if_match: if_match.clone(),
                ..Default::default()
            };
            Box::pin(async move {
                let got = store
                    .get_opts(&k, opts)
                    .await
                    .map_err(|e| StorageError::Backend(format!("{name}: {owned}: going on from byte {at}: {e}")))?;
                Ok(chunks(got, owned))
            })
        });
        Ok(resume::resuming(first, start, end, reopen))
    }

    /// Object stores cannot append: an appending writer re-streams the existing object into a
    /// new upload ahead of the new bytes, and the old object stays whole until `commit`.
    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let k = self.key(path)?;
        let mut w = Box::new(ObjectWriter {
            store: self.long.clone(),
            key: k,
            path: path.to_string(),
            name: self.name,
            part_size: self.part_size,
            pending: Vec::new(),
            pending_len: 0,
            size: 0,
            upload: None,
            in_flight: VecDeque::new(),
        });
        if append {
            match self.reader(path, 0).await {
                Ok(mut existing) => {
                    while let Some(chunk) = existing.next().await {
                        w.write(chunk?).await?;
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(w)
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        match self.stat_file(path).await {
            Err(StorageError::NotFound(_)) => {
                if self.any_under(path).await? {
                    Ok(FileInfo { path: path.to_string(), size: 0, modified: std::time::UNIX_EPOCH, is_dir: true })
                } else {
                    Err(StorageError::NotFound(path.to_string()))
                }
            }
            other => other,
        }
    }

    async fn stat_file(&self, path: &str) -> Result<FileInfo> {
        let m = self.store.head(&self.key(path)?).await.map_err(self.map_err(path))?;
        Ok(FileInfo { path: path.to_string(), size: m.size, modified: m.last_modified.into(), is_dir: false })
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let k = self.key(path)?;
        let res = self.store.list_with_delimiter(Some(&k)).await.map_err(self.map_err(path))?;
        let out: Vec<String> = res
            .common_prefixes
            .iter()
            .chain(res.objects.iter().map(|o| &o.location))
            .map(|p| self.path_of(p))
            .collect();
        if out.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        Ok(out)
    }

    async fn list_page(&self, path: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        match &self.pager {
            Some(pager) => self.service_page(pager, path, start_after, limit).await,
            None => {
                let mut sel = Selection::new(start_after, limit);
                for entry in self.list(path).await? {
                    sel.offer(entry.rsplit('/').next().unwrap_or(&entry));
                }
                Ok(sel.finish())
            }
        }
    }

    /// A server-side copy and a delete: the bytes never come back through the registry, except
    /// for objects past the service's copy limit (a chunked push of a layer over 5 GiB), which
    /// are streamed into a new upload.
    async fn list_flat(&self, path: &str, start_after: &str, limit: usize) -> Result<Option<FlatPage>> {
        let Some(pager) = self.pager.as_ref().filter(|p| p.offsets) else { return Ok(None) };
        let prefix = format!("{}/", self.key(path)?.as_ref());
        let opts = PaginatedListOptions {
            // From the directory's first key, no `start-after` at all (it costs some services a filter).
            offset: (!start_after.is_empty()).then(|| format!("{prefix}{start_after}")),
            max_keys: Some(limit.clamp(1, SERVICE_PAGE)),
            ..Default::default()
        };
        let got = pager.store.list_paginated(Some(&prefix), opts).await.map_err(self.map_err(path))?;
        let keys = got
            .result
            .objects
            .iter()
            .filter_map(|o| o.location.as_ref().strip_prefix(prefix.as_str()).map(str::to_string))
            .collect();
        Ok(Some(FlatPage { keys, more: got.page_token.is_some() }))
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (a, b) = (self.key(from)?, self.key(to)?);
        let size = self.store.head(&a).await.map_err(self.map_err(from))?.size;
        if size > self.copy_limit {
            let mut w = self.writer(to, false).await?;
            let mut body = self.reader(from, 0).await?;
            while let Some(chunk) = body.next().await {
                if let Err(e) = async { w.write(chunk?).await }.await {
                    let _ = w.cancel().await;
                    return Err(e);
                }
            }
            w.commit().await?;
        } else {
            self.long.copy(&a, &b).await.map_err(self.map_err(from))?;
        }
        self.store.delete(&a).await.map_err(self.map_err(from))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let k = self.key(path)?;
        match self.store.head(&k).await {
            Ok(_) => return self.store.delete(&k).await.map_err(self.map_err(path)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.map_err(path)(e)),
        }
        let under = self.objects_under(path).await?;
        if under.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        let locations = futures_util::stream::iter(under.into_iter().map(Ok)).boxed();
        self.store.delete_stream(locations).try_collect::<Vec<_>>().await.map_err(self.map_err(path))?;
        Ok(())
    }
}

/// Streams an object out as a multipart upload: bytes gather into parts of `part_size`, up to
/// `PARTS_IN_FLIGHT` upload while more arrive. An object smaller than one part is one PUT.
struct ObjectWriter {
    store: Arc<dyn ObjectStore>,
    key: ObjPath,
    path: String,
    name: &'static str,
    part_size: usize,
    pending: Vec<Bytes>,
    pending_len: usize,
    size: u64,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
}

impl ObjectWriter {
    fn fail(&self, e: impl std::fmt::Display) -> StorageError {
        StorageError::Backend(format!("{}: {}: {e}", self.name, self.path))
    }

    /// Sends what is pending as the next part, waiting first if too many are in flight.
    async fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            self.upload = Some(self.store.put_multipart(&self.key).await.map_err(|e| self.fail(e))?);
        }
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_oldest().await?;
        }
        let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_len = 0;
        let part = self.upload.as_mut().expect("started above").put_part(payload);
        self.in_flight.push_back(tokio::spawn(part));
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<()> {
        let Some(h) = self.in_flight.pop_front() else { return Ok(()) };
        match h.await {
            Ok(r) => r.map_err(|e| self.fail(e)),
            Err(e) => Err(self.fail(e)),
        }
    }

    async fn abort(&mut self) {
        for h in self.in_flight.drain(..) {
            h.abort();
        }
        if let Some(mut u) = self.upload.take() {
            if let Err(e) = u.abort().await {
                tracing::warn!(driver = self.name, path = self.path, error = %e, "could not abort a multipart upload");
            }
        }
    }
}

#[async_trait]
impl FileWriter for ObjectWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.size += data.len() as u64;
        self.pending_len += data.len();
        self.pending.push(data);
        if self.pending_len >= self.part_size {
            if let Err(e) = self.send_part().await {
                self.abort().await;
                return Err(e);
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if self.upload.is_none() {
            let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
            self.store.put(&self.key, payload).await.map_err(|e| self.fail(e))?;
            return Ok(());
        }
        let result = async {
            if self.pending_len > 0 {
                self.send_part().await?;
            }
            while !self.in_flight.is_empty() {
                self.wait_oldest().await?;
            }
            let mut u = self.upload.take().expect("checked above");
            u.complete().await.map_err(|e| self.fail(e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.abort().await;
        }
        result
    }

    async fn cancel(mut self: Box<Self>) -> Result<()> {
        self.abort().await;
        Ok(())
    }
}

impl Drop for ObjectWriter {
    /// A writer dropped without `commit` or `cancel` (a failed request) must not leave parts
    /// billed in the bucket: abort its upload in the background.
    fn drop(&mut self) {
        if let Some(mut u) = self.upload.take() {
            for h in self.in_flight.drain(..) {
                h.abort();
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = u.abort().await;
                });
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A service the test script started (`tests/objectstores.py`), or `None` to skip; with
    /// BERTH_REQUIRE_SERVICES set a missing service fails the test instead.
    fn service(var: &str) -> Option<String> {
        let v = std::env::var(var).ok();
        if v.is_none() {
            assert!(std::env::var_os("BERTH_REQUIRE_SERVICES").is_none(), "{var} is not set");
            eprintln!("{var} not set: skipped");
        }
        v
    }

    fn unique_root() -> String {
        format!("/suite-{:016x}", rand::random::<u64>())
    }

    #[test]
    fn the_long_timeout_is_never_shorter_than_the_operators() {
        assert_eq!(long_timeout(None), "15m");
        assert_eq!(long_timeout(Some("30s".into())), "15m");
        assert_eq!(long_timeout(Some("not a duration".into())), "15m");
        // As the builder reports what AWS_TIMEOUT set.
        let key = AmazonS3ConfigKey::Client(ClientConfigKey::Timeout);
        let b = AmazonS3Builder::new().with_config(key, "1h");
        assert_eq!(long_timeout(b.get_config_value(&key)), "1h");
    }

    /// A driver on the S3 service (moto) under a root of its own, redirects on; the driver
    /// suite runs on it (`storage::suite::drivers::s3`).
    pub(crate) fn s3_test_driver() -> Option<ObjectStoreDriver> {
        let endpoint = service("BERTH_TEST_S3_ENDPOINT")?;
        let c = config::S3 {
            accesskey: Some("berth-test-key".into()),
            secretkey: Some("berth-test-secret".into()),
            bucket: "berth-tests".into(),
            regionendpoint: Some(endpoint),
            rootdirectory: Some(unique_root()),
            chunksize: Some(5 << 20),
            ..Default::default()
        };
        Some(ObjectStoreDriver::s3(&c, true).unwrap())
    }

    /// A driver on Azurite under a root of its own, redirects off.
    pub(crate) fn azure_test_driver() -> Option<ObjectStoreDriver> {
        let url = service("BERTH_TEST_AZURE_URL")?;
        let c = config::Azure {
            accountname: "devstoreaccount1".into(),
            accountkey: Some(
                "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
            ),
            container: "berth-tests".into(),
            serviceurl: Some(url),
            rootdirectory: Some(unique_root()),
            ..Default::default()
        };
        Some(ObjectStoreDriver::azure(&c, false).unwrap())
    }

    #[tokio::test]
    async fn s3_presigns_redirects() {
        let Some(d) = s3_test_driver() else { return };
        let url = d.redirect_url("/any/path").await.unwrap().unwrap();
        assert!(url.contains("X-Amz-Signature="), "{url}");
    }

    #[tokio::test]
    async fn azure_redirects_off() {
        let Some(d) = azure_test_driver() else { return };
        assert_eq!(d.redirect_url("/any/path").await.unwrap(), None, "redirects are off");
    }

    /// GCS has no emulator that speaks the XML API `object_store` uses, so this checks what can
    /// be checked offline: the keyfile is read, and redirects are V4-signed URLs for the key
    /// under the root directory.
    #[tokio::test]
    async fn gcs_signs_redirects_for_keys_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let pem = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
            .output()
            .expect("openssl (tests/setup.sh installs it)");
        assert!(pem.status.success());
        let key = serde_json::json!({
            "type": "service_account",
            "client_email": "berth@test.iam.gserviceaccount.com",
            "private_key_id": "k1",
            "private_key": String::from_utf8(pem.stdout).unwrap(),
        });
        let keyfile = dir.path().join("gcs.json");
        std::fs::write(&keyfile, key.to_string()).unwrap();
        let c = config::Gcs {
            bucket: "registry".into(),
            keyfile: Some(keyfile),
            rootdirectory: Some("/r".into()),
            chunksize: None,
        };
        let d = ObjectStoreDriver::gcs(&c, true).unwrap();
        let url = d.redirect_url("/docker/registry/v2/blobs/sha256/ab/abc/data").await.unwrap().unwrap();
        assert!(
            url.starts_with("https://storage.googleapis.com/registry/r/docker/registry/v2/blobs/sha256/ab/abc/data?"),
            "{url}"
        );
        assert!(url.contains("X-Goog-Signature=") && url.contains("X-Goog-Expires=1200"), "{url}");
        assert_eq!(ObjectStoreDriver::gcs(&c, false).unwrap().redirect_url("/a/b").await.unwrap(), None);
        assert!(d.redirect_url("/../x").await.is_err());
    }

    /// Past the copy limit, a rename streams the object instead of asking for a copy.
    #[tokio::test]
    async fn rename_streams_objects_past_the_copy_limit() {
        let mut d = InMemoryDriver::new();
        d.copy_limit = 1 << 20;
        let data: Vec<u8> = (0..7_000_000u32).map(|i| (i % 241) as u8).collect();
        d.put_content("/u/data", Bytes::from(data.clone())).await.unwrap();
        d.rename("/u/data", "/b/data").await.unwrap();
        assert_eq!(&d.get_content("/b/data").await.unwrap()[..], &data[..]);
        assert!(d.stat("/u/data").await.unwrap_err().is_not_found());
        assert!(d.rename("/u/data", "/c/data").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn keys_under_the_root_directory() {
        let store = Arc::new(InMemory::new());
        let d = ObjectStoreDriver::new("t", store.clone(), store, None, Some("/reg/"), 5 << 20);
        assert_eq!(d.key("/docker/registry/v2/x").unwrap().as_ref(), "reg/docker/registry/v2/x");
        d.put_content("/docker/a", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(d.list("/docker").await.unwrap(), ["/docker/a"]);
        assert!(d.key("/../x").is_err());
    }

    /// Multipart path: parts of the configured size, in flight while writing, and an abandoned
    /// writer leaves no object behind.
    #[tokio::test]
    async fn multipart_writes_and_cancel() {
        let d = InMemoryDriver::new();
        let data: Vec<u8> = (0..13_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut w = d.writer("/m/data", false).await.unwrap();
        for c in data.chunks(1 << 20) {
            w.write(Bytes::copy_from_slice(c)).await.unwrap();
        }
        assert!(d.stat("/m/data").await.unwrap_err().is_not_found(), "visible before commit");
        w.commit().await.unwrap();
        assert_eq!(&d.get_content("/m/data").await.unwrap()[..], &data[..]);
        let mut w = d.writer("/m/other", false).await.unwrap();
        w.write(Bytes::from(vec![1u8; 6 << 20])).await.unwrap();
        w.cancel().await.unwrap();
        assert!(d.stat("/m/other").await.unwrap_err().is_not_found());
    }
}
