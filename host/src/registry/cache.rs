//! Resolved manifests kept in memory, so the hot manifest `GET`/`HEAD` costs no storage call.
//!
//! Coherent for changes made through this process: every manifest or tag change in a repository
//! bumps a generation and drops that repository's entries, and a read that started before a
//! change never inserts its (possibly stale) answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::manifests::StoredManifest;
use super::RepoName;

/// Manifests larger than this are served from storage every time.
const MAX_ENTRY: usize = 256 << 10;
/// Total bytes cached before the cache starts over.
const MAX_TOTAL: usize = 16 << 20;

#[derive(Default)]
pub(super) struct ManifestCache {
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    repos: HashMap<RepoName, HashMap<String, Arc<StoredManifest>>>,
    bytes: usize,
}

impl ManifestCache {
    /// Call before reading storage; pass the value to `insert`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, repo: &RepoName, reference: &str) -> Option<Arc<StoredManifest>> {
        self.inner.read().unwrap().repos.get(repo)?.get(reference).cloned()
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
        inner.repos.entry(repo.clone()).or_default().insert(reference.to_string(), m);
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
            inner.bytes -= entries.values().map(|m| m.content.len()).sum::<usize>();
        }
    }
}
