//! Reading what the storage holds: every repository's tags, manifest revisions (parsed for
//! what they reference), layer links, referrers-index entries and uploads, and every blob. The
//! scan only reads; `mark` decides and `sweep` deletes.

use std::collections::HashMap;
use std::time::SystemTime;

use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::Value;

use super::paths as gc_paths;
use super::progress::Progress;
use crate::registry::{paths, Digest, Registry, RepoName, Tag};
use crate::storage::{StorageDriver, StorageError};

/// Requests in flight at once by default while scanning and sweeping (`berth garbage-collect`).
pub const CONCURRENCY: usize = 32;

type Result<T> = std::result::Result<T, StorageError>;

/// What a stored manifest references, read leniently from its JSON (any schema: OCI and Docker
/// images and indexes, schema 1, artifacts).
#[derive(Debug, Default, Clone)]
pub struct Refs {
    /// Config and layers (and schema 1 `blobSum`s): blobs.
    pub blobs: Vec<Digest>,
    /// An index's or manifest list's children: manifests.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    /// A Docker schema 1 manifest (Berth keeps the pushed copy beside it).
    pub schema1: bool,
}

impl Refs {
    pub fn parse(body: &[u8]) -> Option<Refs> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let digest = |d: &Value, key: &str| d.get(key).and_then(Value::as_str).and_then(|s| Digest::parse(s).ok());
        let mut r = Refs::default();
        r.blobs.extend(v.get("config").and_then(|c| digest(c, "digest")));
        for key in ["layers", "blobs"] {
            for l in v.get(key).and_then(Value::as_array).into_iter().flatten() {
                r.blobs.extend(digest(l, "digest"));
            }
        }
        for l in v.get("fsLayers").and_then(Value::as_array).into_iter().flatten() {
            r.blobs.extend(digest(l, "blobSum"));
        }
        for m in v.get("manifests").and_then(Value::as_array).into_iter().flatten() {
            r.children.extend(digest(m, "digest"));
        }
        r.subject = v.get("subject").and_then(|s| digest(s, "digest"));
        r.schema1 = v.get("schemaVersion").and_then(Value::as_u64) == Some(1);
        Some(r)
    }
}

/// A manifest revision of a repository.
#[derive(Debug)]
pub struct Revision {
    /// Its link was written after the cutoff (inside the grace period).
    pub fresh: bool,
    /// What it references; `None` when its content is missing or not JSON.
    pub refs: Option<Refs>,
}

/// A link file (layer link, referrers-index entry) and whether it is inside the grace period.
#[derive(Debug, Clone)]
pub struct Link {
    pub path: String,
    pub fresh: bool,
}

#[derive(Debug)]
pub struct RepoScan {
    pub name: RepoName,
    pub tags: Vec<(Tag, Option<Digest>)>,
    /// Tag-history entries (`tags/<tag>/index/<digest>`) by manifest: their directories.
    pub tag_history: HashMap<Digest, Vec<String>>,
    pub revisions: HashMap<Digest, Revision>,
    /// Manifests a tag points at that have no revision link, with what they reference.
    pub tag_only: HashMap<Digest, Option<Refs>>,
    pub layers: Vec<(Digest, Link)>,
    /// (subject, referrer, entry)
    pub referrers: Vec<(Digest, Digest, Link)>,
    pub uploads: usize,
}

/// A blob in `blobs/`.
#[derive(Debug, Clone, Copy)]
pub struct BlobInfo {
    pub size: u64,
    pub modified: SystemTime,
}

pub struct Scan {
    pub repos: Vec<RepoScan>,
    /// Every blob directory under `blobs/`.
    pub blobs: Vec<Digest>,
}

fn last(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

async fn list(driver: &dyn StorageDriver, dir: &str) -> Result<Vec<String>> {
    match driver.list(dir).await {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// `<dir>/<algorithm>/<hex>` entries as digests, with each entry's path.
pub async fn list_digests(driver: &dyn StorageDriver, dir: &str) -> Result<Vec<(Digest, String)>> {
    let mut out = Vec::new();
    for alg_dir in list(driver, dir).await? {
        let alg = last(&alg_dir).to_string();
        for entry in list(driver, &alg_dir).await? {
            if let Ok(d) = Digest::parse(&format!("{alg}:{}", last(&entry))) {
                out.push((d, entry));
            }
        }
    }
    Ok(out)
}

/// A link's freshness; `None` when the link file is gone (an empty directory left behind).
async fn link(driver: &dyn StorageDriver, path: String, cutoff: SystemTime) -> Result<Option<Link>> {
    match driver.stat(&path).await {
        Ok(i) => Ok(Some(Link { path, fresh: i.modified > cutoff })),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn read_refs(driver: &dyn StorageDriver, d: &Digest) -> Result<Option<Refs>> {
    match driver.get_content(&paths::blob_data(d)).await {
        Ok(b) => Ok(Refs::parse(&b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn read_link(driver: &dyn StorageDriver, path: &str) -> Result<Option<Digest>> {
    match driver.get_content(path).await {
        Ok(b) => Ok(std::str::from_utf8(&b).ok().and_then(|s| Digest::parse(s.trim()).ok())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn scan_repo(driver: &dyn StorageDriver, name: RepoName, cutoff: SystemTime, n: usize) -> Result<RepoScan> {
    let repo = paths::repo(&name);
    // Tags and where they point.
    let tag_names: Vec<Tag> =
        list(driver, &paths::tags(&name)).await?.iter().filter_map(|p| Tag::parse(last(p)).ok()).collect();
    let read: Vec<((Tag, Option<Digest>), Vec<(Digest, String)>)> = stream::iter(tag_names)
        .map(|t| {
            let (path, index) = (paths::tag_current_link(&name, &t), format!("{}/index", paths::tag(&name, &t)));
            async move {
                let current = read_link(driver, &path).await?;
                Ok::<_, StorageError>(((t, current), list_digests(driver, &index).await?))
            }
        })
        .buffer_unordered(n)
        .try_collect()
        .await?;
    let mut tag_history: HashMap<Digest, Vec<String>> = HashMap::new();
    let mut tags = Vec::new();
    for (t, history) in read {
        tags.push(t);
        for (d, dir) in history {
            tag_history.entry(d).or_default().push(dir);
        }
    }
    // Revisions, each parsed.
    let revs = list_digests(driver, &format!("{repo}/_manifests/revisions")).await?;
    let revisions: HashMap<Digest, Revision> = stream::iter(revs)
        .map(|(d, dir)| async move {
            let Some(l) = link(driver, format!("{dir}/link"), cutoff).await? else { return Ok(None) };
            let refs = read_refs(driver, &d).await?;
            Ok::<_, StorageError>(Some((d, Revision { fresh: l.fresh, refs })))
        })
        .buffer_unordered(n)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;
    let mut tag_only = HashMap::new();
    for (_, d) in &tags {
        if let Some(d) = d {
            if !revisions.contains_key(d) && !tag_only.contains_key(d) {
                tag_only.insert(d.clone(), read_refs(driver, d).await?);
            }
        }
    }
    let layer_dirs = list_digests(driver, &format!("{repo}/_layers")).await?;
    let layers: Vec<(Digest, Link)> = stream::iter(layer_dirs)
        .map(|(d, dir)| async move {
            Ok::<_, StorageError>(link(driver, format!("{dir}/link"), cutoff).await?.map(|l| (d, l)))
        })
        .buffer_unordered(n)
        .try_filter_map(|x| async move { Ok(x) })
        .try_collect()
        .await?;
    let mut referrers = Vec::new();
    for (subject, dir) in list_digests(driver, &format!("{repo}/_berth/referrers")).await? {
        for (referrer, entry) in list_digests(driver, &dir).await? {
            if let Some(l) = link(driver, format!("{entry}/link"), cutoff).await? {
                referrers.push((subject.clone(), referrer, l));
            }
        }
    }
    let uploads = list(driver, &format!("{repo}/_uploads")).await?.len();
    Ok(RepoScan { name, tags, tag_history, revisions, tag_only, layers, referrers, uploads })
}

/// Reads every repository and lists every blob.
pub async fn scan<'a>(
    reg: &'a Registry,
    cutoff: SystemTime,
    n: usize,
    tick: &'a (dyn Fn() -> futures_util::future::BoxFuture<'a, bool> + Send + Sync),
    progress: &'a dyn Progress,
) -> std::result::Result<Scan, super::GcError> {
    let driver = reg.driver();
    let dirs = reg.repository_dirs().await?;
    let names: Vec<RepoName> = dirs
        .iter()
        .filter(|d| d.has("_manifests") || d.has("_layers"))
        .filter_map(|d| RepoName::parse(&d.name).ok())
        .collect();
    progress.phase("mark: repositories", names.len() as u64);
    let repos: Vec<RepoScan> = stream::iter(names)
        .map(|name| async move {
            let r = scan_repo(driver, name, cutoff, n).await;
            progress.inc(1);
            tick().await;
            r
        })
        .buffer_unordered(n.div_ceil(8))
        .try_collect()
        .await?;
    progress.phase("mark: blobs", 0);
    let mut prefixes = Vec::new();
    for alg_dir in list(driver, &gc_paths::blobs()).await? {
        for p in list(driver, &alg_dir).await? {
            prefixes.push((last(&alg_dir).to_string(), p));
        }
    }
    let lists: Vec<Vec<Digest>> = stream::iter(prefixes)
        .map(|(alg, p)| async move {
            let entries = list(driver, &p).await?;
            Ok::<_, StorageError>(
                entries.iter().filter_map(|e| Digest::parse(&format!("{alg}:{}", last(e))).ok()).collect(),
            )
        })
        .buffer_unordered(n)
        .try_collect()
        .await?;
    Ok(Scan { repos, blobs: lists.into_iter().flatten().collect() })
}

/// Size and modification time of a blob's data, `None` if it is gone.
pub async fn blob_info(driver: &dyn StorageDriver, d: &Digest) -> Result<Option<BlobInfo>> {
    match driver.stat(&paths::blob_data(d)).await {
        Ok(i) => Ok(Some(BlobInfo { size: i.size, modified: i.modified })),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::Refs;

    #[test]
    fn refs_of_every_kind() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}"}},"layers":[{{"digest":"{}"}}],"subject":{{"digest":"{}"}}}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        let r = Refs::parse(image.as_bytes()).unwrap();
        assert_eq!(r.blobs.len(), 2);
        assert_eq!(r.subject.unwrap().to_string(), d('c'));
        let index = format!(r#"{{"manifests":[{{"digest":"{}"}},{{"digest":"bad"}}]}}"#, d('d'));
        assert_eq!(Refs::parse(index.as_bytes()).unwrap().children.len(), 1);
        let s1 = format!(r#"{{"schemaVersion":1,"fsLayers":[{{"blobSum":"{}"}}]}}"#, d('e'));
        assert_eq!(Refs::parse(s1.as_bytes()).unwrap().blobs.len(), 1);
        assert!(Refs::parse(b"not json").is_none());
    }
}
