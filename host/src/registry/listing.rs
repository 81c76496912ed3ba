//! Tag lists and the catalog, sorted lexically and paginated with `n` and `last`.

use super::{paths, Registry, RegistryError, RepoName, Result, Tag};

/// One page of names; `more` says whether a next page exists.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// Sorted names after `last`, at most `n` of them.
fn paginate(mut all: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    all.sort();
    all.dedup();
    let start = last.map_or(0, |l| all.partition_point(|x| x.as_str() <= l));
    let rest = &all[start..];
    let take = n.unwrap_or(rest.len()).min(rest.len());
    Page { items: rest[..take].to_vec(), more: take < rest.len() }
}

pub(super) fn last_component(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Registry {
    pub(super) async fn all_tags(&self, repo: &RepoName) -> Result<Vec<Tag>> {
        match self.driver.list(&paths::tags(repo)).await {
            Ok(entries) => Ok(entries.iter().filter_map(|e| Tag::parse(last_component(e)).ok()).collect()),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        match self.driver.stat(&paths::repo(repo)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Err(RegistryError::NameUnknown(repo.to_string())),
            Err(e) => return Err(e.into()),
        }
        let tags = self.all_tags(repo).await?.into_iter().map(|t| t.as_str().to_string()).collect();
        Ok(paginate(tags, n, last))
    }

    /// Every repository with manifests, found by walking `repositories/` as distribution does.
    pub async fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let repos = self.repository_dirs().await?.into_iter().filter(|r| r.has("_manifests")).map(|r| r.name);
        Ok(paginate(repos.collect(), n, last))
    }

    /// Walks `repositories/`: every directory with a name, and its `_`-prefixed children
    /// (`_manifests`, `_layers`, `_uploads`), which are not descended into.
    pub(super) async fn repository_dirs(&self) -> Result<Vec<RepoDir>> {
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
pub(super) struct RepoDir {
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
    use super::*;

    #[test]
    fn pages() {
        let all: Vec<String> = ["c", "a", "b", "d"].map(String::from).to_vec();
        assert_eq!(paginate(all.clone(), Some(2), None), Page { items: vec!["a".into(), "b".into()], more: true });
        assert_eq!(
            paginate(all.clone(), Some(2), Some("b")),
            Page { items: vec!["c".into(), "d".into()], more: false }
        );
        assert_eq!(paginate(all.clone(), None, Some("bb")).items, ["c", "d"]);
        assert_eq!(paginate(all, Some(0), None), Page { items: vec![], more: true });
    }
}
