//! Cleanup policies: retention rules run by `cleanup-policy` plugins, on a cadence in the server
//! and on demand (`berth cleanup`, `POST /admin/cleanup` on the debug listener).
//!
//! A run shows each policy's plugin one repository at a time (`snapshot`), validates its answer
//! (a tag the repository does not have, a trap or a timeout: nothing is deleted there, and the
//! repository's outcome says why), and deletes each planned tag only if it still points where
//! the snapshot saw it, so a tag pushed again meanwhile survives. Policies untag; garbage
//! collection frees the space.
//!
//! - `snapshot`: what the plugin is shown of a repository;
//! - `report`: what a run did, for the log, the CLI, the admin answer and `/debug/vars`;
//! - `schedule`: each policy on its cadence, the last run kept in storage.

mod report;
mod schedule;
mod snapshot;

use std::sync::Arc;
use std::time::Instant;

use globset::GlobMatcher;

use crate::config::{repository_glob, CleanupPolicy, Config};
use crate::plugins::cleanup::{PolicyPlugin, RetentionPolicy};
use crate::plugins::{CleanupKind, Failure, NotConfigured, PluginSpec, Swap};
use crate::registry::{Condition, Reference, Registry, RegistryError, RepoName, Tag};

pub use report::{last_report, RepoOutcome, Report, TagOutcome, TagResult};
pub use schedule::spawn_schedules;

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("no cleanup policy is named {0:?}")]
    UnknownPolicy(String),
    #[error("cleanup policy {policy}: {source}")]
    NotConfigured { policy: String, source: NotConfigured },
    #[error("cleanup policy {policy}: {source}")]
    Plugin { policy: String, source: Failure },
    #[error("the registry is read-only (storage.maintenance.readonly): nothing can be deleted; use a dry run")]
    ReadOnly,
    #[error("listing repositories: {0}")]
    Registry(#[from] RegistryError),
}

/// What one run covers.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Show what would be deleted; delete nothing.
    pub dry_run: bool,
    /// Only repositories this glob matches (as well as the policy's own).
    pub repositories: Option<GlobMatcher>,
    /// Only this policy (run even when it is not `enabled`); none: every enabled policy.
    pub policy: Option<String>,
}

impl Options {
    /// `--repo GLOB`, checked.
    pub fn only_repositories(mut self, glob: &str) -> Result<Self, globset::Error> {
        self.repositories = Some(repository_glob(glob)?);
        Ok(self)
    }
}

/// A configured policy, its globs compiled.
struct Policy {
    config: CleanupPolicy,
    globs: Vec<GlobMatcher>,
    spec: PluginSpec,
}

impl Policy {
    fn covers(&self, repo: &str, options: &Options) -> bool {
        self.globs.iter().any(|g| g.is_match(repo)) && options.repositories.as_ref().is_none_or(|g| g.is_match(repo))
    }

    /// The plugin, loaded for this run: policies run rarely, so each run picks up the plugin
    /// file as it is now (compiled components come from the cache).
    async fn load(&self) -> Result<PolicyPlugin, CleanupError> {
        let swap = Swap::<CleanupKind>::load(self.spec.clone())
            .await
            .map_err(|source| CleanupError::Plugin { policy: self.config.name.clone(), source })?;
        Ok(PolicyPlugin(Arc::new(swap)))
    }
}

/// The configured policies.
pub struct Cleanup {
    policies: Vec<Policy>,
    read_only: bool,
}

impl Cleanup {
    /// The `cleanup` section with each policy's plugin spec; a policy naming a plugin that is
    /// not configured is an error here, before anything runs.
    pub fn from_config(config: &Config) -> Result<Cleanup, CleanupError> {
        let mut policies = Vec::new();
        for p in &config.cleanup.policies {
            let spec = PluginSpec::from_config(config, &p.plugin)
                .map_err(|source| CleanupError::NotConfigured { policy: p.name.clone(), source })?;
            // The section's validation already refused a glob that does not compile.
            let globs = p.repositories.iter().filter_map(|g| repository_glob(g).ok()).collect();
            policies.push(Policy { config: p.clone(), globs, spec });
        }
        Ok(Cleanup { policies, read_only: config.storage.maintenance.readonly.enabled })
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Loads every policy's plugin once, so a missing file or a wrong world stops the server
    /// at start rather than at the first scheduled run.
    pub async fn check(&self) -> Result<(), CleanupError> {
        for p in &self.policies {
            p.load().await?;
        }
        Ok(())
    }

    fn selected<'a>(&'a self, options: &Options) -> Result<Vec<&'a Policy>, CleanupError> {
        match &options.policy {
            Some(name) => match self.policies.iter().find(|p| &p.config.name == name) {
                Some(p) => Ok(vec![p]),
                None => Err(CleanupError::UnknownPolicy(name.clone())),
            },
            None => Ok(self.policies.iter().filter(|p| p.config.enabled).collect()),
        }
    }

    /// Runs the selected policies over every repository they cover.
    pub async fn run(&self, registry: &Registry, options: &Options) -> Result<Report, CleanupError> {
        if self.read_only && !options.dry_run {
            return Err(CleanupError::ReadOnly);
        }
        let started = Instant::now();
        let policies = self.selected(options)?;
        let mut report = Report::new(options.dry_run, policies.iter().map(|p| p.config.name.clone()).collect());
        let mut plugins = Vec::new();
        for p in &policies {
            plugins.push(p.load().await?);
        }
        let mut last: Option<String> = None;
        loop {
            let page = registry.catalog(1000, last.as_deref()).await?;
            for name in &page.items {
                let Ok(repo) = RepoName::parse(name) else { continue };
                for (p, plugin) in policies.iter().zip(&plugins) {
                    if p.covers(name, options) {
                        report.push(apply(registry, p, plugin, &repo, options.dry_run).await);
                    }
                }
            }
            match page.items.last() {
                Some(l) if page.more => last = Some(l.clone()),
                _ => break,
            }
        }
        report.finish(started.elapsed());
        report.record();
        Ok(report)
    }
}

/// What a garbage collection with `--delete-untagged` frees after `report`'s run: for a dry run,
/// as if its chosen tags were gone. One dry mark over the whole registry (untagged manifests
/// keep their blobs without `--delete-untagged`, so that is the collection cleanup needs).
pub async fn gc_would_free(registry: &Registry, report: &Report) -> Result<u64, crate::gc::GcError> {
    let mut gone = Vec::new();
    if report.dry_run {
        for o in &report.outcomes {
            for t in o.tags.iter().filter(|t| t.result == TagResult::WouldDelete) {
                if let (Ok(repo), Ok(tag)) = (RepoName::parse(&o.repository), Tag::parse(&t.tag)) {
                    gone.push((repo, tag));
                }
            }
        }
    }
    crate::gc::estimate_freed(registry, &gone, true).await
}

/// One policy over one repository: snapshot, plan, validate, delete.
async fn apply(registry: &Registry, p: &Policy, plugin: &PolicyPlugin, repo: &RepoName, dry_run: bool) -> RepoOutcome {
    let mut outcome = RepoOutcome::new(&p.config.name, repo.as_str());
    let tags = match snapshot::tags(registry, repo).await {
        Ok(t) => t,
        Err(e) => return outcome.failed(format!("reading the tags: {e}")),
    };
    let settings: Vec<(String, String)> = p.config.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let plan = match plugin.plan(repo.as_str(), &tags, &settings).await {
        Ok(plan) => plan,
        Err(e) => return outcome.failed(e.to_string()),
    };
    for d in plan {
        // `plan` returns only tags it was shown.
        let Some(info) = tags.iter().find(|t| t.name == d.tag) else { continue };
        let result = if dry_run {
            TagResult::WouldDelete
        } else {
            delete_if_unmoved(registry, repo, &info.name, &info.digest).await
        };
        let failed = matches!(result, TagResult::Failed(_));
        outcome.tags.push(TagOutcome {
            tag: info.name.clone(),
            digest: info.digest.clone(),
            size: info.size,
            reason: d.reason,
            result,
        });
        if failed {
            break;
        }
    }
    outcome
}

/// Deletes `tag` only while it still points at `digest` (the registry's conditional delete).
async fn delete_if_unmoved(registry: &Registry, repo: &RepoName, tag: &str, digest: &str) -> TagResult {
    let Ok(t) = Tag::parse(tag) else { return TagResult::Failed(format!("{tag:?} is not a tag")) };
    match registry.delete_manifest(repo, &Reference::Tag(t), &Condition::Matches(vec![digest.to_string()])).await {
        Ok(()) => TagResult::Deleted,
        Err(RegistryError::PreconditionFailed(_)) => TagResult::Skipped("pushed again since the policy saw it".into()),
        Err(RegistryError::ManifestUnknown(_)) => TagResult::Skipped("already gone".into()),
        Err(e) => TagResult::Failed(e.to_string()),
    }
}
