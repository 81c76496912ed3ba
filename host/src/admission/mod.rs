//! The admission chain: before a write lands (a manifest or tag `PUT`, a tag or manifest
//! `DELETE`, an upload that declares its size), every `admission-policy` plugin configured for
//! the repository is asked whether it may; all must allow. A deny is `RegistryError::Denied`
//! (`403 DENIED` with the plugin's message) and nothing is written.
//!
//! Where it hooks in: `Registry::admit`, the one funnel the registry's write operations call,
//! after validating a request and before writing anything. For a tag, `admit` runs while the
//! registry holds that tag's lock and the tag is written under the same lock, so what a policy
//! is shown as the tag's current target is still true when the write lands (two pushes to one
//! protected tag: the second sees the first's result, so exactly one wins). The lock is
//! per process; across replicas sharing the storage, the tag's write is a compare-and-swap on
//! the link the policy was shown, and a lost swap asks the policy again
//! (`Registry::put_manifest`).
//!
//! Who asks, and the request, reach the registry (which knows nothing of HTTP) through a task
//! local the API layer sets for the request (`scope`).

pub mod bench;

use std::sync::Arc;

use crate::config::Config;
use crate::plugins::admission::PolicyPlugin;
use crate::plugins::wit::latest::types::RequestInfo;
use crate::plugins::{AdmissionKind, Failure, PluginSpec, Swap};

pub use crate::plugins::admission::{
    Entry, Identity, Manifest, ManifestDelete, ManifestPut, UploadStart, Verdict, Write,
};

/// Who is writing, and the request, as the plugins see them.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub identity: Option<Identity>,
    pub request: RequestInfo,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// Runs `f` (a request's handling) with `ctx` as the caller its writes are admitted for.
pub fn scope<F: std::future::Future>(ctx: RequestContext, f: F) -> impl std::future::Future<Output = F::Output> {
    // Not an `async fn`: one that awaited `f` would hold `f` twice (its argument and the
    // awaited future), doubling every request's future.
    CONTEXT.scope(ctx, f)
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("{plugin}: {message}")]
    Policy { plugin: String, message: String },
    /// The plugin failed (trap, deadline, memory cap) and is not configured to fail open.
    #[error("admission policy {plugin} failed ({reason}); the write is refused")]
    Failed { plugin: String, reason: &'static str },
}

/// One plugin in a chain.
struct Member {
    plugin: PolicyPlugin,
    fail_open: bool,
}

/// The configured chains, loaded.
pub struct Chain {
    chains: Vec<(globset::GlobMatcher, Vec<Arc<Member>>)>,
}

impl Chain {
    /// Loads every admission plugin `config` names (each once, however many chains name it);
    /// `loaded` is called with each for the server's plugin set (reload, health). None when no
    /// chain is configured.
    pub async fn load(
        config: &Config,
        mut loaded: impl FnMut(&str, Arc<Swap<AdmissionKind>>),
    ) -> Result<Option<Chain>, Failure> {
        let a = &config.admission;
        if a.chains.is_empty() {
            return Ok(None);
        }
        let mut members: Vec<(String, Arc<Member>)> = Vec::new();
        for name in a.plugin_names() {
            let spec = PluginSpec::from_config(config, &name).map_err(|e| Failure {
                plugin: name.clone(),
                op: "load",
                error: crate::plugins::PluginError::Engine { reason: e.to_string() },
            })?;
            let swap = Arc::new(Swap::<AdmissionKind>::load(spec).await?);
            loaded(&name, swap.clone());
            let fail_open = a.failopen.contains(&name);
            tracing::info!(plugin = %name, fail_open, "admission plugin loaded");
            members.push((name, Arc::new(Member { plugin: PolicyPlugin(swap), fail_open })));
        }
        let find = |n: &String| members.iter().find(|(m, _)| m == n).map(|(_, m)| m.clone()).expect("loaded above");
        let chains = a
            .chains
            .iter()
            .filter_map(|c| {
                // Validated with the configuration (`config::admission`).
                let glob = crate::config::repository_glob(&c.repository).ok()?;
                Some((glob, c.plugins.iter().map(find).collect()))
            })
            .collect();
        Ok(Some(Chain { chains }))
    }

    /// The plugins a write to `repository` must pass, in order, each once.
    fn members(&self, repository: &str) -> Vec<Arc<Member>> {
        let mut out: Vec<Arc<Member>> = Vec::new();
        for (glob, members) in &self.chains {
            if glob.is_match(repository) {
                for m in members {
                    if !out.iter().any(|o| Arc::ptr_eq(o, m)) {
                        out.push(m.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether any plugin applies to `repository` (so a write elsewhere builds nothing).
    pub fn applies(&self, repository: &str) -> bool {
        self.chains.iter().any(|(glob, _)| glob.is_match(repository))
    }

    /// Asks every plugin for `repository` in turn; the first deny ends it.
    pub async fn admit(&self, repository: &str, write: &Write) -> Result<(), Denied> {
        let ctx = CONTEXT.try_with(Clone::clone).unwrap_or_else(|_| RequestContext {
            identity: None,
            request: RequestInfo { id: String::new(), method: String::new(), addr: String::new(), user_agent: None },
        });
        for m in self.members(repository) {
            match m.plugin.check(write.clone(), ctx.identity.clone(), ctx.request.clone()).await {
                Ok(Verdict::Allow) => {}
                Ok(Verdict::Deny(message)) => {
                    let plugin = m.plugin.name();
                    tracing::info!(%plugin, %repository, %message, "write denied by admission policy");
                    return Err(Denied::Policy { plugin, message });
                }
                // The pool logged and counted the failure.
                Err(f) if m.fail_open => {
                    tracing::warn!(plugin = %f.plugin, %repository, "admission plugin failed; failopen lets the write through");
                }
                Err(f) => return Err(Denied::Failed { plugin: f.plugin, reason: f.error.kind() }),
            }
        }
        Ok(())
    }
}
