//! One reload path for every plugin kind. A plugin in use sits in a `Swap` (the serving
//! version behind a lock); the server keeps every one in a `PluginSet`, each with the role it
//! fills (the storage driver; auth, sinks and policies to come), which names the plugin in a
//! configuration. A reload reads the configuration again, loads and initialises every new
//! version first, and swaps them in only when all of them loaded: a version that fails keeps
//! the old ones serving. Calls in flight finish on the version they started with.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{Failure, Kind, PluginError, PluginSpec, Pool, World};
use crate::config::Config;

/// The serving version of one plugin, swappable.
pub struct Swap<K: Kind> {
    current: RwLock<Arc<Pool<K>>>,
}

impl<K: Kind> Swap<K> {
    pub async fn load(spec: PluginSpec) -> Result<Swap<K>, Failure> {
        Ok(Swap { current: RwLock::new(Pool::load(spec).await?) })
    }

    /// The version serving new calls.
    pub fn current(&self) -> Arc<Pool<K>> {
        self.current.read().unwrap().clone()
    }

    fn install(&self, new: Arc<Pool<K>>) -> String {
        let what = format!("{} (sha256 {})", new.name(), new.sha256);
        let old = std::mem::replace(&mut *self.current.write().unwrap(), new);
        tracing::info!(world = K::WORLD.name(), old = %old.name(), old_sha256 = %old.sha256, now = %what, "plugin reloaded");
        what
    }

    /// Loads `spec` and swaps it in if it initialises; describes what now serves.
    pub async fn reload(&self, spec: PluginSpec) -> Result<String, Failure> {
        let new = Pool::load(spec).await?;
        Ok(self.install(new))
    }
}

/// A new version, loaded and initialised, waiting to be swapped in.
pub type Staged = Box<dyn FnOnce() -> String + Send>;

/// What the reload path and the debug server see of any loaded plugin.
#[async_trait]
pub trait Reloadable: Send + Sync {
    fn world(&self) -> World;
    fn name(&self) -> String;
    /// Facts for `/debug/vars`.
    fn report(&self) -> Value;
    /// Why the serving version cannot make instances right now, if it cannot.
    fn broken(&self) -> Option<PluginError>;
    /// Loads and initialises `spec` without swapping it in yet.
    async fn stage(self: Arc<Self>, spec: PluginSpec) -> Result<Staged, Failure>;
}

#[async_trait]
impl<K: Kind> Reloadable for Swap<K> {
    fn world(&self) -> World {
        K::WORLD
    }

    fn name(&self) -> String {
        self.current().name().to_string()
    }

    fn report(&self) -> Value {
        let p = self.current();
        json!({
            "world": K::WORLD.name(),
            "version": p.version.to_string(),
            "sha256": p.sha256,
            "path": p.spec.path,
            "stateless": p.stateless,
            "instances": p.spec.instances,
        })
    }

    fn broken(&self) -> Option<PluginError> {
        self.current().broken()
    }

    async fn stage(self: Arc<Self>, spec: PluginSpec) -> Result<Staged, Failure> {
        let new = Pool::<K>::load(spec).await?;
        Ok(Box::new(move || self.install(new)))
    }
}

/// Which plugin fills a role in a given configuration (None: the role is not a plugin there).
pub type RoleFn = fn(&Config) -> Option<String>;

/// Why a reload was refused; the running plugins keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the {role} plugin is no longer in the configuration; switching to a native driver needs a restart")]
    RoleGone { role: &'static str },
    #[error("plugin {0:?} is not configured under plugins")]
    NotConfigured(String),
    #[error(transparent)]
    Load(#[from] Failure),
}

/// Every plugin the server runs, with its role.
#[derive(Default, Clone)]
pub struct PluginSet {
    plugins: Vec<(&'static str, Which, Arc<dyn Reloadable>)>,
}

/// Which plugin fills a role in a configuration: a `RoleFn`, or a closure for roles filled by
/// several plugins (each admission plugin).
type Which = Arc<dyn Fn(&Config) -> Option<String> + Send + Sync>;

impl PluginSet {
    /// Adds the plugin serving `role` (e.g. "storage"), which `which` names in a
    /// configuration.
    pub fn add(&mut self, role: &'static str, which: RoleFn, plugin: Arc<dyn Reloadable>) {
        self.plugins.push((role, Arc::new(which), plugin));
    }

    /// Adds a plugin whose role `which` decides with more than a configuration (its name).
    pub fn add_with(
        &mut self,
        role: &'static str,
        which: impl Fn(&Config) -> Option<String> + Send + Sync + 'static,
        plugin: Arc<dyn Reloadable>,
    ) {
        self.plugins.push((role, Arc::new(which), plugin));
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Name → facts, for `/debug/vars`.
    pub fn report(&self) -> Map<String, Value> {
        self.plugins.iter().map(|(_, _, p)| (p.name(), p.report())).collect()
    }

    /// Name → `ok` or the kind and message of why it cannot make instances, for
    /// `/debug/health`; false if any is broken.
    pub fn health(&self) -> (bool, Map<String, Value>) {
        let mut healthy = true;
        let report = self
            .plugins
            .iter()
            .map(|(_, _, p)| {
                let state = match p.broken() {
                    None => json!("ok"),
                    Some(e) => {
                        healthy = false;
                        json!({"error": e.kind(), "message": e.to_string()})
                    }
                };
                (p.name(), state)
            })
            .collect();
        (healthy, report)
    }

    /// Loads every plugin `config` names for the roles in this set, then swaps them all in;
    /// returns the worlds swapped and a description of what now serves.
    pub async fn reload(&self, config: &Config) -> Result<(Vec<World>, String), ReloadError> {
        let mut staged = Vec::new();
        for (role, which, plugin) in &self.plugins {
            let name = which(config).ok_or(ReloadError::RoleGone { role })?;
            let spec = PluginSpec::from_config(config, &name).map_err(|e| ReloadError::NotConfigured(e.0))?;
            staged.push((*role, plugin.world(), plugin.clone().stage(spec).await?));
        }
        let mut worlds = Vec::new();
        let mut serving = Vec::new();
        for (role, world, swap) in staged {
            worlds.push(world);
            serving.push(format!("{role} plugin {}", swap()));
        }
        Ok((worlds, serving.join(", ")))
    }
}
