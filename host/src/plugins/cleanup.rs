//! Adapter for `cleanup-policy-plugin`: a retention policy run by a plugin. It is the whole of
//! what a plugin kind needs on the new runtime: a native trait, and its implementation over
//! `Pool<CleanupKind>` (loading, deadlines, memory caps, discarding, metrics and reload are
//! the pool's). Garbage collection and cleanup runs (issue 10) call it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::wit::latest::cleanup::exports::berth::plugin::cleanup_policy as wit;
use super::{CleanupKind, Failure, Swap};

/// One tag of a repository, as a policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub created: SystemTime,
}

/// A tag the policy wants deleted, and why (shown in dry runs and audit logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub tag: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Plugin(#[from] Failure),
    #[error("policy {policy} refused {repository}: {message}")]
    Refused { policy: String, repository: String, message: String },
    #[error("policy {policy} named tag {tag:?}, which {repository} does not have")]
    UnknownTag { policy: String, repository: String, tag: String },
}

/// Decides which tags of a repository to delete, given the policy's `settings`.
#[async_trait]
pub trait RetentionPolicy: Send + Sync {
    async fn plan(
        &self,
        repository: &str,
        tags: &[TagInfo],
        settings: &[(String, String)],
    ) -> Result<Vec<Deletion>, PolicyError>;
}

/// A `cleanup-policy-plugin` as a `RetentionPolicy`.
pub struct PolicyPlugin(pub Arc<Swap<CleanupKind>>);

#[async_trait]
impl RetentionPolicy for PolicyPlugin {
    async fn plan(
        &self,
        repository: &str,
        tags: &[TagInfo],
        settings: &[(String, String)],
    ) -> Result<Vec<Deletion>, PolicyError> {
        let p = self.0.current();
        let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let snapshot = wit::Snapshot {
            repository: repository.to_string(),
            now_millis: millis(SystemTime::now()),
            tags: tags
                .iter()
                .map(|t| wit::TagInfo {
                    name: t.name.clone(),
                    digest: t.digest.clone(),
                    media_type: t.media_type.clone(),
                    size: t.size,
                    created_millis: millis(t.created),
                })
                .collect(),
            settings: settings.to_vec(),
        };
        let planned = p
            .call("plan", |i| {
                Box::pin(
                    async move { i.bindings.berth_plugin_cleanup_policy().call_plan(&mut i.store, &snapshot).await },
                )
            })
            .await?
            .map_err(|message| PolicyError::Refused {
                policy: p.name().to_string(),
                repository: repository.to_string(),
                message,
            })?;
        // A policy can only delete tags it was shown, each once.
        let mut out: Vec<Deletion> = Vec::with_capacity(planned.len());
        for d in planned {
            if !tags.iter().any(|t| t.name == d.tag) {
                return Err(PolicyError::UnknownTag {
                    policy: p.name().to_string(),
                    repository: repository.to_string(),
                    tag: d.tag,
                });
            }
            if !out.iter().any(|o| o.tag == d.tag) {
                out.push(Deletion { tag: d.tag, reason: d.reason });
            }
        }
        Ok(out)
    }
}
