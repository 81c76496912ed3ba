//! Resolved manifests kept in memory, so the hot manifest `GET`/`HEAD` costs no storage call.
//!
//! Coherent for changes made through this process: every manifest or tag change in a repository
//! bumps a generation and drops that repository's entries, and a read that started before a
//! change never inserts its (possibly stale) answer. Changes made by another process on the same
//! storage (`berth cleanup` and `berth garbage-collect` beside the server, a second Berth, or
//! distribution) show within [`MAX_AGE`]: an entry older than that is read again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::manifests::StoredManifest;
use super::RepoName;

/// Manifests larger than this are served from storage every time.
const MAX_ENTRY: usize = 256 << 10;
/// Total bytes cached before the cache starts over.
const MAX_TOTAL: usize = 16 << 20;
/// How long another process's change to a tag can go unseen. A hot tag costs one storage read
/// per this interval, which no benchmark can tell from none.
pub(super) const MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct ManifestCache {
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    repos: HashMap<RepoName, HashMap<String, (Arc<StoredManifest>, Instant)>>,
    bytes: usize,
}

impl ManifestCache {
    /// Call before reading storage; pass the value to `insert`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, repo: &RepoName, reference: &str) -> Option<Arc<StoredManifest>> {
        let inner = self.inner.read().unwrap();
        let (m, at) = inner.repos.get(repo)?.get(reference)?;
        (at.elapsed() < MAX_AGE).then(|| m.clone())
    }

    pub fn insert(&self, generation: u64, repo: &RepoName, reference: &str, m: Arc<StoredManifest>) {
        if m.content.len() > MAX_ENTRY {
            return;
        }
        let mut inner = self.inner.write().unwrap();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if inner.bytes + m.content.len() > MAX_TOTAL {
            inner.repos.clear();
            inner.bytes = 0;
        }
        inner.bytes += m.content.len();
        if let Some((old, _)) =
            inner.repos.entry(repo.clone()).or_default().insert(reference.to_string(), (m, Instant::now()))
        {
            inner.bytes -= old.content.len();
        }
    }

    /// Forget everything (the storage backend changed under the registry).
    pub fn clear(&self) {
        let mut inner = self.inner.write().unwrap();
        self.generation.fetch_add(1, Ordering::AcqRel);
        inner.repos.clear();
        inner.bytes = 0;
    }

    /// Forget a repository's manifests; call after (and before) changing them.
    pub fn invalidate(&self, repo: &RepoName) {
        let mut inner = self.inner.write().unwrap();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(entries) = inner.repos.remove(repo) {
            inner.bytes -= entries.values().map(|(m, _)| m.content.len()).sum::<usize>();
        }
    }
}
