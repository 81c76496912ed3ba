//! Adapter for the `storage-driver-plugin` world: a compiled component, its `InstancePre`, and
//! `instances` warm slots, each holding one instance (its own `Store`, initialised once with the
//! plugin's config). A call locks one slot for the duration of that call only; an open reader or
//! writer is bound to the instance that opened it and locks its slot per operation, so a writer
//! held across a slow upload never blocks the other calls. Every call runs under the plugin's
//! deadline (epoch interruption, with a host timer as a backstop); an instance whose call
//! failed (trap, deadline, memory cap) is discarded and the slot re-instantiates on next use.
//! `crate::storage::component` turns this into a `StorageDriver`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, MutexGuard};
use wasmtime::{Engine, Store};

use super::bindings::storage::berth::plugin::types::InitError;
use super::bindings::storage::{StorageDriverPlugin, StorageDriverPluginPre};
use super::{describe_error, new_store, LoadError, PluginSpec, State, World};

/// Host-side slack on top of the epoch deadline before the host timer gives up on a call.
const HOST_TIMER_SLACK: Duration = Duration::from_millis(500);

/// A call that failed in a way that makes the instance unusable; already logged.
#[derive(Debug, Clone)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One instantiated, initialised plugin with its own store.
pub struct Instance {
    pub store: Store<State>,
    pub bindings: StorageDriverPlugin,
    /// Unique per instantiation, so a reader or writer can tell its instance was replaced.
    pub id: u64,
}

/// Where one instance lives; `None` after a failure until the next call re-instantiates.
pub type Slot = Arc<Mutex<Option<Instance>>>;

/// A locked slot with a live instance.
pub struct Held<'a> {
    guard: MutexGuard<'a, Option<Instance>>,
}

impl Held<'_> {
    pub fn instance(&mut self) -> &mut Instance {
        self.guard.as_mut().expect("a held slot has an instance")
    }

    /// False once the instance was discarded (a call on it failed).
    pub fn is_live(&self) -> bool {
        self.guard.is_some()
    }

    /// Discards the instance (after a failed call).
    pub fn discard(&mut self) {
        *self.guard = None;
    }
}

/// One loaded version of a storage plugin.
pub struct StoragePlugin {
    pub spec: PluginSpec,
    pub sha256: String,
    engine: Engine,
    pre: StorageDriverPluginPre<State>,
    slots: Vec<Slot>,
    next: AtomicUsize,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl StoragePlugin {
    /// Compiles (or loads from the cache), links, instantiates and initialises the plugin once
    /// to prove it works. Any failure refuses the plugin.
    pub async fn load(spec: PluginSpec) -> Result<Arc<StoragePlugin>, String> {
        let engine = super::engine()?.clone();
        let (e2, s2) = (engine.clone(), spec.clone());
        let (sha256, pre) = tokio::task::spawn_blocking(move || -> Result<_, LoadError> {
            let shown = s2.path.display().to_string();
            let compiled = super::compile(&e2, &s2.path, s2.sha256.as_deref(), s2.cache_dir.as_deref())?;
            let world = super::detect_world(&e2, &compiled.component, &shown)?;
            if world != World::StorageDriver {
                return Err(LoadError::WrongWorld {
                    path: shown,
                    found: world.name(),
                    wanted: World::StorageDriver.name(),
                });
            }
            let link = |error: wasmtime::Error| LoadError::Link {
                path: shown.clone(),
                world: world.name(),
                error: format!("{error:#}"),
            };
            let pre = super::linker(&e2).map_err(link)?.instantiate_pre(&compiled.component).map_err(link)?;
            let pre = StorageDriverPluginPre::new(pre).map_err(link)?;
            Ok((compiled.sha256, pre))
        })
        .await
        .map_err(|e| format!("plugin {}: loader task failed: {e}", spec.name))?
        .map_err(|e| format!("plugin {}: {e}", spec.name))?;
        let slots = (0..spec.instances.max(1)).map(|_| Arc::new(Mutex::new(None))).collect();
        let plugin = Arc::new(StoragePlugin { spec, sha256, engine, pre, slots, next: AtomicUsize::new(0) });
        // Instantiate and initialise the first slot now: a plugin that cannot start is refused.
        let first = plugin.instantiate().await.map_err(|f| f.0)?;
        *plugin.slots[0].lock().await = Some(first);
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// A fresh instance: new store, instantiate from `InstancePre`, `init(config)`.
    pub async fn instantiate(&self) -> Result<Instance, Failure> {
        let mut store = new_store(&self.engine, &self.spec).map_err(|e| self.fail("instantiate", format!("{e:#}")))?;
        let work = async {
            let bindings = self.pre.instantiate_async(&mut store).await?;
            let init = bindings.berth_plugin_lifecycle().call_init(&mut store, &self.spec.config).await?;
            Ok::<_, wasmtime::Error>((bindings, init))
        };
        match tokio::time::timeout(self.spec.deadline + HOST_TIMER_SLACK, work).await {
            Ok(Ok((bindings, Ok(())))) => Ok(Instance { store, bindings, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) }),
            Ok(Ok((_, Err(e)))) => {
                let why = match e {
                    InitError::InvalidConfig((key, problem)) => {
                        format!("init refused the configuration: config.{key}: {problem}")
                    }
                    InitError::Failed(m) => format!("init failed: {m}"),
                };
                Err(self.fail("init", why))
            }
            Ok(Err(e)) => Err(self.fail("instantiate", describe_error(&e, &self.spec))),
            Err(_) => {
                Err(self.fail("instantiate", format!("deadline of {} ms exceeded", self.spec.deadline.as_millis())))
            }
        }
    }

    /// Picks a slot: a free one if any, else the next in turn.
    pub fn pick(&self) -> Slot {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let s = &self.slots[(start + k) % n];
            if s.try_lock().is_ok() {
                return s.clone();
            }
        }
        self.slots[start % n].clone()
    }

    /// Locks `slot`, instantiating if it is empty. With `id`, the slot must still hold that
    /// instance (a reader or writer bound to it).
    pub async fn hold<'a>(&self, slot: &'a Slot, id: Option<u64>) -> Result<Held<'a>, Failure> {
        let mut guard = slot.lock().await;
        let current = guard.as_ref().map(|i| i.id);
        match (id, current) {
            (Some(want), Some(have)) if want == have => {}
            (Some(_), _) => {
                return Err(Failure(format!(
                    "plugin {}: the instance of this stream was discarded after a failure",
                    self.name()
                )))
            }
            (None, Some(_)) => {}
            (None, None) => *guard = Some(self.instantiate().await?),
        }
        Ok(Held { guard })
    }

    /// Runs one guest call on a held instance under the deadline; a failure discards it.
    pub async fn run<T, F>(&self, held: &mut Held<'_>, op: &'static str, f: F) -> Result<T, Failure>
    where
        F: for<'a> FnOnce(&'a mut Instance) -> BoxFuture<'a, wasmtime::Result<T>>,
    {
        let inst = held.instance();
        inst.store.set_epoch_deadline(self.spec.deadline_ticks());
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.spec.deadline + HOST_TIMER_SLACK, f(inst)).await;
        let labels = crate::metrics::PluginLabels { plugin: self.spec.name.clone(), op };
        crate::metrics::get().plugin_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        let out = match result {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => self.fail(op, describe_error(&e, &self.spec)),
            Err(_) => self.fail(op, format!("deadline of {} ms exceeded (host timer)", self.spec.deadline.as_millis())),
        };
        held.discard();
        Err(out)
    }

    /// One call on any instance.
    pub async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, Failure>
    where
        F: for<'a> FnOnce(&'a mut Instance) -> BoxFuture<'a, wasmtime::Result<T>>,
    {
        let slot = self.pick();
        let mut held = self.hold(&slot, None).await?;
        self.run(&mut held, op, f).await
    }

    /// Logs a failure that discards an instance, naming the plugin.
    pub fn fail(&self, op: &'static str, why: String) -> Failure {
        let labels = crate::metrics::PluginLabels { plugin: self.spec.name.clone(), op };
        crate::metrics::get().plugin_failures.get_or_create(&labels).inc();
        tracing::error!(plugin = %self.spec.name, op, error = %why, "plugin call failed; instance discarded");
        Failure(format!("plugin {}: {op}: {why}", self.spec.name))
    }
}
