//! Tag lists and the catalog, in the spec's lexical order, paginated with `n` and `last`.
//!
//! Both read the layout a page at a time through `StorageDriver::list_page`, so a page costs
//! what it holds: the catalog walks `repositories/` depth first from `last` and stops once the
//! page is full. The order is distribution's: names compare by path component (`a` < `a/b` <
//! `a-b`), which is what a walk over sorted directories produces.

use std::collections::VecDeque;

use futures_util::{stream, StreamExt, TryStreamExt};

use super::{paths, Registry, RegistryError, RepoName, Result, Tag};
use crate::storage::{blockers, settled, settled_unless, validate_path, ListPage};

/// A tag, where it points, and when it was pushed there.
#[derive(Debug, Clone)]
pub struct TagRecord {
    pub tag: Tag,
    pub digest: super::Digest,
    pub pushed: std::time::SystemTime,
}

/// One page of names; `more` says whether a next page may exist.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// Children asked of the driver per call on the walk: a page's worth, within bounds so a
/// small page still reads a useful batch and a large one never asks for a huge one.
const MIN_BATCH: usize = 16;
const MAX_BATCH: usize = 1000;

pub(super) fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A directory on the catalog walk: its children after `cursor` not visited yet.
struct Frame {
    dir: String,
    /// The repository name the directory stands for ("" for `repositories/` itself).
    name: String,
    cursor: Option<String>,
    queued: VecDeque<Child>,
    more: bool,
}

impl Frame {
    fn new(dir: String, name: String, cursor: Option<String>) -> Frame {
        Frame { dir, name, cursor, queued: VecDeque::new(), more: true }
    }
}

/// A child directory queued on the walk, probed ahead of the walk reaching it.
struct Child {
    name: String,
    probe: Option<Probe>,
}

/// What the walk needs of a directory: its first page of children, and whether it is a
/// repository.
struct Probe {
    first: ListPage,
    repository: bool,
    /// Probes of its children, where a flat listing showed all of each one's keys: the walk
    /// then descends without asking the driver again.
    below: std::collections::HashMap<String, Probe>,
}

impl Probe {
    /// A directory whose every key a flat listing showed (`keys`, relative to the directory,
    /// in any order, repeats allowed): its whole subtree, probed without a request.
    fn of_keys<'k>(keys: impl IntoIterator<Item = &'k str>) -> Probe {
        let mut children: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
        for key in keys {
            let (child, rest) = key.split_once('/').unwrap_or((key, ""));
            let rests = children.entry(child).or_default();
            // A repository's own directories (`_manifests`, …) are not descended into.
            if !rest.is_empty() && !child.starts_with('_') {
                rests.push(rest);
            }
        }
        let repository = children.contains_key("_manifests");
        let below = children
            .iter()
            .filter(|(child, _)| !child.starts_with('_'))
            .map(|(child, rests)| (child.to_string(), Probe::of_keys(rests.iter().copied())))
            .collect();
        let names = children.into_keys().map(str::to_string).collect();
        Probe { first: ListPage { names, more: false }, repository, below }
    }
}

/// Whether a flat listing that ended at `last` read past every key of child `name` (the keys
/// of a child are the run starting `name/`).
fn read_past(name: &str, last: Option<&str>) -> bool {
    let prefix = format!("{name}/");
    last.is_some_and(|k| k > prefix.as_str() && !k.starts_with(&prefix))
}

/// A key up to its first `_` component (`a/_manifests/tags/x/…` is `a/_manifests`): the walk
/// needs to know a repository's own directory exists, not what it holds.
fn up_to_own(key: &str) -> &str {
    let mut start = 0;
    for component in key.split('/') {
        let end = start + component.len();
        if component.starts_with('_') {
            return &key[..end];
        }
        start = end + 1;
    }
    key
}

/// Child directories probed at once: on an object store each probe is a listing request
/// (tens of milliseconds), and a page of `n` repositories needs `n` of them, so they overlap
/// rather than queue; enough to hide a service's latency without flooding it.
const PROBES_AT_ONCE: usize = 16;

/// Keys asked per flat listing (S3's most per request).
const FLAT_KEYS: usize = 1000;

/// Shorter names asked after per page (one request each) before falling back to the delimited
/// listing.
const MAX_BLOCKERS: usize = 4;

/// The walk's stack to resume after `last`: each ancestor directory of `last`, resuming after
/// the component `last` goes on with, then `last`'s own directory (the names below it come
/// next). A component that cannot be a path ends it: nothing can be below it.
fn resume_after(root: &str, last: Option<&str>) -> Vec<Frame> {
    let Some(last) = last else { return vec![Frame::new(root.to_string(), String::new(), None)] };
    let comps: Vec<&str> = last.split('/').collect();
    let mut frames = vec![Frame::new(root.to_string(), String::new(), Some(comps[0].to_string()))];
    for i in 1..=comps.len() {
        if validate_path(&format!("/{}", comps[i - 1])).is_err() {
            break;
        }
        let name = comps[..i].join("/");
        frames.push(Frame::new(format!("{root}/{name}"), name, comps.get(i).map(|c| c.to_string())));
    }
    frames
}

impl Registry {
    pub(super) async fn all_tags(&self, repo: &RepoName) -> Result<Vec<Tag>> {
        match self.driver.list(&paths::tags(repo)).await {
            Ok(entries) => Ok(entries.iter().filter_map(|e| Tag::parse(last_component(e)).ok()).collect()),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every tag of a repository with the digest it points at and when it was last pushed
    /// there (its link's modification time, which every driver keeps), for retention policies.
    pub async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>> {
        let mut out = Vec::new();
        let mut tags = self.all_tags(repo).await?;
        tags.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        for tag in tags {
            let link = paths::tag_current_link(repo, &tag);
            let pushed = match self.driver.stat_file(&link).await {
                Ok(info) => info.modified,
                Err(e) if e.is_not_found() => continue, // deleted since the listing
                Err(e) => return Err(e.into()),
            };
            if let Some(digest) = self.resolve_tag(repo, &tag).await? {
                out.push(TagRecord { tag, digest, pushed });
            }
        }
        Ok(out)
    }

    /// Tags after `last`, at most `n` (all without `n`), read in order from the tags directory.
    pub async fn list_tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        match self.driver.stat(&paths::repo(repo)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Err(RegistryError::NameUnknown(repo.to_string())),
            Err(e) => return Err(e.into()),
        }
        let limit = n.unwrap_or(usize::MAX);
        let dir = paths::tags(repo);
        let mut items = Vec::new();
        let mut cursor = last.map(str::to_string);
        while items.len() < limit {
            let page = match self.driver.list_page(&dir, cursor.as_deref(), limit - items.len()).await {
                Ok(p) => p,
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e.into()),
            };
            let Some(end) = page.names.last().cloned() else { break };
            cursor = Some(end);
            items.extend(page.names.into_iter().filter(|t| Tag::parse(t).is_ok()));
            if !page.more {
                return Ok(Page { items, more: false });
            }
        }
        let more = items.len() >= limit && limit > 0;
        Ok(Page { items, more })
    }

    /// At most `n` repositories after `last`: a depth-first walk of `repositories/` in sorted
    /// order from `last`, stopping once the page is full. A repository is a directory holding
    /// `_manifests`; `_`-prefixed directories are the repository's own and not descended into.
    pub async fn catalog(&self, n: usize, last: Option<&str>) -> Result<Page> {
        let mut items = Vec::new();
        if n == 0 {
            return Ok(Page { items, more: false });
        }
        let mut stack = resume_after(&paths::repositories(), last);
        while let Some(top) = stack.last_mut() {
            if items.len() >= n {
                return Ok(Page { items, more: true });
            }
            let want = (n - items.len()).clamp(MIN_BATCH, MAX_BATCH);
            if top.queued.is_empty() && top.more {
                let (page, probes) = match self.flat_page(&top.dir, top.cursor.as_deref(), want).await? {
                    Some(found) => found,
                    None => {
                        let page = self.page_of(&top.dir, top.cursor.as_deref(), want).await?;
                        let none = page.names.iter().map(|_| None).collect();
                        (page, none)
                    }
                };
                top.more = page.more;
                top.queued = page.names.into_iter().zip(probes).map(|(name, probe)| Child { name, probe }).collect();
                // Probe ahead only as many children as the page can still take.
                self.probe_ahead(&top.dir, &mut top.queued, n - items.len(), want).await?;
            }
            let Some(child) = top.queued.pop_front() else {
                stack.pop();
                continue;
            };
            top.cursor = Some(child.name.clone());
            if child.name.starts_with('_') {
                continue;
            }
            let dir = format!("{}/{}", top.dir, child.name);
            let name = if top.name.is_empty() { child.name } else { format!("{}/{}", top.name, child.name) };
            let probe = match child.probe {
                Some(p) => p,
                None => self.probe(&dir, want).await?,
            };
            if probe.repository {
                items.push(name.clone());
            }
            let Probe { first, mut below, .. } = probe;
            let mut queued: VecDeque<Child> =
                first.names.into_iter().map(|name| Child { probe: below.remove(&name), name }).collect();
            if items.len() < n {
                self.probe_ahead(&dir, &mut queued, n - items.len(), want).await?;
            }
            stack.push(Frame { dir, name, cursor: None, more: first.more, queued });
        }
        Ok(Page { items, more: false })
    }

    /// A page of a directory; a missing one (or a file) is an empty page.
    async fn page_of(&self, dir: &str, after: Option<&str>, limit: usize) -> Result<ListPage> {
        match self.driver.list_page(dir, after, limit).await {
            Ok(p) => Ok(p),
            Err(e) if e.is_not_found() => Ok(ListPage::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Probes the first `count` queued children that are not the repository's own (`_`): from
    /// flat listings where the driver offers them, the rest [`PROBES_AT_ONCE`] at a time.
    async fn probe_ahead(&self, parent: &str, queued: &mut VecDeque<Child>, count: usize, want: usize) -> Result<()> {
        let mut picked: Vec<usize> = queued
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.name.starts_with('_'))
            .take(count)
            .filter(|(_, c)| c.probe.is_none())
            .map(|(i, _)| i)
            .collect();
        let names: Vec<String> = picked.iter().map(|&i| queued[i].name.clone()).collect();
        let flat = self.flat_probes(parent, &names).await?;
        let mut rest = Vec::new();
        for (i, probe) in picked.drain(..).zip(flat) {
            match probe {
                Some(p) => queued[i].probe = Some(p),
                None => rest.push(i),
            }
        }
        let picked = rest;
        let dirs: Vec<String> = picked.iter().map(|&i| format!("{parent}/{}", queued[i].name)).collect();
        // Futures collected first: a lazy `map` inside the stream trips the `Send` check of the
        // handler's future (a higher-ranked lifetime the compiler cannot prove).
        let pending: Vec<_> = dirs.iter().map(|d| Box::pin(self.probe(d, want))).collect();
        let probes: Vec<Probe> = stream::iter(pending).buffered(PROBES_AT_ONCE).try_collect().await?;
        for (i, p) in picked.into_iter().zip(probes) {
            queued[i].probe = Some(p);
        }
        Ok(())
    }

    /// A page of `dir`'s children after `after` and their probes from one flat listing, where the
    /// driver offers it: the names the listing settles (`page::settled`: key order puts `u-x/`
    /// before `u/`), each probed if the listing read past all its keys. `None`: no flat listing,
    /// or it settled no name (a large child filled it); the caller lists the directory instead.
    async fn flat_page(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<(ListPage, Vec<Option<Probe>>)>> {
        let Some(page) = self.driver.list_flat(dir, after.unwrap_or(""), FLAT_KEYS).await? else { return Ok(None) };
        let mut children: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
        for key in &page.keys {
            let (child, rest) = key.split_once('/').unwrap_or((key.as_str(), ""));
            if after.is_some_and(|a| child <= a) {
                continue;
            }
            let keys = children.entry(child).or_default();
            if !rest.is_empty() {
                keys.push(rest);
            }
        }
        let names: Vec<String> = children.keys().map(|c| c.to_string()).collect();
        let last = page.keys.last().map(String::as_str);
        let mut certain = if page.more { settled(&names, after, last) } else { names.len() };
        if let (true, Some(last)) = (page.more && certain < names.len().min(limit), last) {
            // Names like `repo-1` wait on a `repo` that would sort after the listing's keys
            // (`repo/` > `repo-1/`): ask for each such name whether it exists.
            let blocking = blockers(&names, names.len().min(limit), after, last);
            let mut absent = std::collections::BTreeSet::new();
            for u in blocking.iter().take(MAX_BLOCKERS) {
                // Children are path components (no `~`): the first key after `u.~` is `u/…` if
                // `u` exists.
                let Some(first) = self.driver.list_flat(dir, &format!("{u}.~"), 1).await? else { break };
                if first.keys.first().is_some_and(|k| k.starts_with(&format!("{u}/"))) {
                    break;
                }
                absent.insert(u.as_str());
            }
            certain = settled_unless(&names, after, Some(last), |u| absent.contains(u));
        }
        if certain == 0 {
            return Ok(None);
        }
        let take = certain.min(limit);
        let more = page.more || names.len() > take;
        let mut probes = Vec::with_capacity(take);
        for (name, keys) in children.into_iter().take(take) {
            let done = !page.more || read_past(name, last);
            probes.push(done.then(|| Probe::of_keys(keys)));
        }
        let mut names = names;
        names.truncate(take);
        Ok(Some((ListPage { names, more }, probes)))
    }

    /// Probes children of `parent` from the driver's flat listing (object stores): a child is
    /// settled once a listing has read past all its keys, so one request settles every small
    /// repository it covers. Stops when a request settles fewer than two (a large repository's
    /// keys would take many requests; probing it alone takes one); `None` is left to probe.
    async fn flat_probes(&self, parent: &str, names: &[String]) -> Result<Vec<Option<Probe>>> {
        let mut out: Vec<Option<Probe>> = names.iter().map(|_| None).collect();
        // A child's keys are the run starting `<child>/`; every run starts after the smallest name.
        let Some(mut after) = names.iter().min().cloned() else { return Ok(out) };
        let index: std::collections::HashMap<&str, usize> =
            names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        // Each child's keys below it; a repository's own (`_manifests/…`) only once per entry,
        // so a large repository's tags are not kept.
        let mut keys: Vec<Vec<String>> = names.iter().map(|_| Vec::new()).collect();
        loop {
            let Some(page) = self.driver.list_flat(parent, &after, FLAT_KEYS).await? else { return Ok(out) };
            for key in &page.keys {
                let Some((child, rest)) = key.split_once('/') else { continue };
                if let Some(&i) = index.get(child) {
                    let keep = up_to_own(rest);
                    if keys[i].last().is_none_or(|k| k != keep) {
                        keys[i].push(keep.to_string());
                    }
                }
            }
            let last = page.keys.last();
            let mut settled = 0;
            for (i, name) in names.iter().enumerate() {
                if out[i].is_none() && (!page.more || read_past(name, last.map(String::as_str))) {
                    out[i] = Some(Probe::of_keys(keys[i].iter().map(String::as_str)));
                    keys[i] = Vec::new();
                    settled += 1;
                }
            }
            match last {
                Some(k) if page.more && settled >= 2 && out.iter().any(Option::is_none) => after = k.clone(),
                _ => return Ok(out),
            }
        }
    }

    /// A directory's first page, and whether it holds `_manifests` (asked separately only
    /// when names sorting before it filled that page).
    async fn probe(&self, dir: &str, want: usize) -> Result<Probe> {
        let first = self.page_of(dir, None, want).await?;
        if first.names.iter().any(|c| c == "_manifests") {
            return Ok(Probe { first, repository: true, below: Default::default() });
        }
        if !(first.more && first.names.last().is_some_and(|l| l.as_str() < "_manifests")) {
            return Ok(Probe { first, repository: false, below: Default::default() });
        }
        let repository = match self.driver.stat(&format!("{dir}/_manifests")).await {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e.into()),
        };
        Ok(Probe { first, repository, below: Default::default() })
    }

    /// Walks `repositories/`: every directory with a name, and its `_`-prefixed children
    /// (`_manifests`, `_layers`, `_uploads`), which are not descended into.
    pub async fn repository_dirs(&self) -> Result<Vec<RepoDir>> {
        let mut out = Vec::new();
        let mut stack = vec![(paths::repositories(), String::new())];
        while let Some((dir, name)) = stack.pop() {
            let entries = match self.driver.list(&dir).await {
                Ok(e) => e,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let mut special = Vec::new();
            for entry in entries {
                let child = last_component(&entry);
                if child.starts_with('_') {
                    special.push(child.to_string());
                } else {
                    let child_name = if name.is_empty() { child.to_string() } else { format!("{name}/{child}") };
                    stack.push((entry.clone(), child_name));
                }
            }
            if !name.is_empty() {
                out.push(RepoDir { name, special });
            }
        }
        Ok(out)
    }
}

/// A directory under `repositories/`, by repository name.
pub struct RepoDir {
    pub name: String,
    special: Vec<String>,
}

impl RepoDir {
    pub fn has(&self, child: &str) -> bool {
        self.special.iter().any(|c| c == child)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{FilesystemDriver, StorageDriver};

    /// Names in distribution's order: by path component.
    const NAMES: &[&str] = &["a", "a/0x", "a/b", "a/b/c", "a-b", "a.b", "a0", "b/c", "b-c/d", "z"];

    async fn registry_with(names: &[&str]) -> (tempfile::TempDir, Registry) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("docker/registry/v2/repositories");
        for n in names {
            std::fs::create_dir_all(root.join(n).join("_manifests/tags")).unwrap();
            std::fs::create_dir_all(root.join(n).join("_layers")).unwrap();
        }
        std::fs::create_dir_all(root.join("b/_uploads")).unwrap(); // `b` holds no manifests
        let d: Arc<dyn StorageDriver> = Arc::new(FilesystemDriver::open(tmp.path()).unwrap());
        (tmp, Registry::new(d))
    }

    #[test]
    fn a_key_ends_at_its_first_own_directory() {
        assert_eq!(up_to_own("a/_manifests/tags/x/current/link"), "a/_manifests");
        assert_eq!(up_to_own("_layers/sha256/x/link"), "_layers");
        assert_eq!(up_to_own("a/b/c"), "a/b/c");
        assert_eq!(up_to_own(""), "");
    }

    #[test]
    fn a_subtree_is_probed_from_its_keys() {
        let p = Probe::of_keys([
            "_manifests/tags/t/current/link",
            "worker/_manifests/tags/x/current/link",
            "worker/_layers/sha256/y/link",
            "api/deep/_manifests/revisions/z/link",
            "file",
            "worker/_manifests/tags/x/current/link",
        ]);
        assert!(p.repository);
        assert_eq!(
            p.first,
            ListPage { names: vec!["_manifests".into(), "api".into(), "file".into(), "worker".into()], more: false }
        );
        assert_eq!(p.below.len(), 3, "the repository's own directory is not descended into");
        let worker = &p.below["worker"];
        assert!(worker.repository);
        assert_eq!(worker.first.names, ["_layers", "_manifests"]);
        let api = &p.below["api"];
        assert!(!api.repository);
        assert!(api.below["deep"].repository);
        assert!(p.below["file"].first.names.is_empty() && !p.below["file"].repository);
    }

    #[tokio::test]
    async fn catalog_in_component_order() {
        let (_t, r) = registry_with(NAMES).await;
        assert_eq!(
            r.catalog(100, None).await.unwrap(),
            Page { items: NAMES.iter().map(|s| s.to_string()).collect(), more: false }
        );
    }

    #[tokio::test]
    async fn catalog_pages_resume_after_any_name() {
        let (_t, r) = registry_with(NAMES).await;
        for size in 1..=4 {
            let mut got: Vec<String> = Vec::new();
            loop {
                let p = r.catalog(size, got.last().map(String::as_str)).await.unwrap();
                assert!(p.items.len() <= size);
                got.extend(p.items);
                if !p.more {
                    break;
                }
            }
            assert_eq!(got, NAMES, "pages of {size}");
        }
        // After a name that is not there, or not a name at all.
        assert_eq!(r.catalog(2, Some("a/a")).await.unwrap().items, ["a/b", "a/b/c"]);
        assert_eq!(r.catalog(2, Some("a-a")).await.unwrap().items, ["a-b", "a.b"]);
        assert_eq!(r.catalog(2, Some("b/../x")).await.unwrap().items, ["b/c", "b-c/d"]);
        assert_eq!(r.catalog(0, None).await.unwrap(), Page { items: vec![], more: false });
    }
}
