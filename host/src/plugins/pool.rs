//! The instance pool every plugin kind runs on: a compiled component, its pre-linked
//! `InstancePre`, and slots each holding one instance (its own `Store`, initialised once with
//! the plugin's config). Every guest call goes through `run`: it arms the deadline (epoch
//! interruption, with a host timer as a backstop), records the call's duration, and on a trap,
//! deadline or memory cap discards the instance, logs and counts the failure by its kind; the
//! slot re-instantiates on next use.
//!
//! A call whose future is dropped mid-way (its request was cancelled) leaves its instance
//! unusable; the next `hold` notices and replaces it.
//!
//! A call locks one slot for that call only; a stream or writer bound to an instance locks its
//! slot per operation, so a long upload never blocks other calls. `instances` slots are kept
//! warm. A plugin that declares itself stateless (`loader::INFO_SECTION`) may grow to
//! `max_instances` when every warm instance is busy, so one stuck call cannot make every other
//! request wait for its deadline; the price is up to `memorymib` per extra instance, kept until
//! the next reload. A stateful plugin is never run in more instances than configured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as SyncMutex, RwLock};
use std::time::Instant;

use futures_util::future::BoxFuture;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Mutex, MutexGuard};
use wasmtime::{Engine, Store};

use super::limits::HOST_TIMER_SLACK;
use super::sandbox::{new_store, MemoryCapReached};
use super::wit::latest::types::InitError;
use super::{loader, Failure, Kind, PluginError, PluginSpec, State};
use crate::metrics::{self, PluginFailureLabels, PluginLabels};

/// One instantiated, initialised plugin with its own store.
pub struct Instance<K: Kind> {
    pub store: Store<State>,
    pub bindings: K::Bindings,
    /// Unique per instantiation, so a stream or writer can tell its instance was replaced.
    pub id: u64,
}

/// Where one instance lives; `None` until first use and after a failure.
pub type Slot<K> = Arc<Mutex<Option<Instance<K>>>>;

/// A locked slot with a live instance.
pub struct Held<'a, K: Kind> {
    guard: MutexGuard<'a, Option<Instance<K>>>,
}

impl<K: Kind> Held<'_, K> {
    pub fn instance(&mut self) -> &mut Instance<K> {
        self.guard.as_mut().expect("a held slot has an instance")
    }

    /// False once the instance was discarded (a call on it failed).
    pub fn is_live(&self) -> bool {
        self.guard.is_some()
    }

    fn discard(&mut self) {
        *self.guard = None;
    }
}

/// One loaded version of a plugin of kind `K`.
pub struct Pool<K: Kind> {
    pub spec: PluginSpec,
    pub sha256: String,
    /// The `berth:plugin` version it was built against.
    pub version: semver::Version,
    /// It declared that its instances keep no state between calls.
    pub stateless: bool,
    /// Unique per load: a reload with the same file but another config is another version.
    pub generation: u64,
    engine: Engine,
    pre: K::Pre,
    slots: Vec<Slot<K>>,
    /// Slots kept warm (the first ones); the rest, if any, fill on demand.
    warm: usize,
    next: AtomicUsize,
    /// Call-duration histograms by operation, so a call does not build its labels.
    durations: RwLock<HashMap<&'static str, Histogram>>,
    /// Why the last instantiation failed, until one succeeds (for `/debug/health`).
    broken: SyncMutex<Option<PluginError>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl<K: Kind> Pool<K> {
    /// Loads, links, instantiates and initialises the plugin once to prove it works. Any
    /// failure refuses the plugin.
    pub async fn load(spec: PluginSpec) -> Result<Arc<Pool<K>>, Failure> {
        let refuse = |spec: &PluginSpec, error| Failure { plugin: spec.name.clone(), op: "load", error };
        let engine = super::engine().map_err(|e| refuse(&spec, e))?.clone();
        let (e2, s2) = (engine.clone(), spec.clone());
        let loaded = tokio::task::spawn_blocking(move || -> Result<_, PluginError> {
            let loaded = loader::load(&e2, &s2.path, s2.sha256.as_deref(), s2.cache_dir.as_deref())?;
            loader::expect_world(&loaded, &s2.path, K::WORLD)?;
            let pre = loader::link(&e2, &loaded, &s2.path, K::pre)?;
            Ok((loaded, pre))
        })
        .await
        .map_err(|e| refuse(&spec, PluginError::Engine { reason: format!("loader task failed: {e}") }))?;
        let (loaded, pre) = loaded.map_err(|e| refuse(&spec, e))?;
        let warm = spec.instances.max(1);
        let total = if loaded.stateless { spec.max_instances.max(warm) } else { warm };
        let pool = Arc::new(Pool {
            spec,
            sha256: loaded.sha256,
            version: loaded.version,
            stateless: loaded.stateless,
            generation: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            engine,
            pre,
            slots: (0..total).map(|_| Arc::new(Mutex::new(None))).collect(),
            warm,
            next: AtomicUsize::new(0),
            durations: RwLock::new(HashMap::new()),
            broken: SyncMutex::new(None),
        });
        let first = pool.instantiate().await?;
        *pool.slots[0].lock().await = Some(first);
        Ok(pool)
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Why instances cannot be made right now, if they cannot.
    pub fn broken(&self) -> Option<PluginError> {
        self.broken.lock().unwrap().clone()
    }

    /// A fresh instance: new store, instantiate from `InstancePre`, `init(config)`.
    pub async fn instantiate(&self) -> Result<Instance<K>, Failure> {
        let result = self.try_instantiate().await;
        *self.broken.lock().unwrap() = result.as_ref().err().map(|f| f.error.clone());
        result
    }

    async fn try_instantiate(&self) -> Result<Instance<K>, Failure> {
        let mut store = new_store(&self.engine, &self.spec).map_err(|e| self.fail("instantiate", e))?;
        let work = async {
            let bindings = K::instantiate(&self.pre, &mut store).await?;
            let init = K::init(&bindings, &mut store, &self.spec.config).await?;
            Ok::<_, wasmtime::Error>((bindings, init))
        };
        let outcome = tokio::time::timeout(self.spec.deadline + HOST_TIMER_SLACK, work).await;
        let error = match outcome {
            Ok(Ok((bindings, Ok(())))) => {
                return Ok(Instance { store, bindings, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) })
            }
            Ok(Ok((_, Err(InitError::InvalidConfig((key, message)))))) => {
                return Err(self.fail("init", PluginError::InitInvalidConfig { key, message }))
            }
            Ok(Ok((_, Err(InitError::Failed(message))))) => {
                return Err(self.fail("init", PluginError::InitFailed { message }))
            }
            Ok(Err(e)) => self.classify(&e, store.data().limiter.memory_denied),
            Err(_) => PluginError::Deadline { ms: self.spec.deadline.as_millis() },
        };
        Err(self.fail("instantiate", error))
    }

    /// Picks a slot: a free one with an instance if any, else a free empty one (a stateless
    /// plugin's pool grows there), else a warm one in turn, to wait for.
    pub fn pick(&self) -> Slot<K> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut empty = None;
        for k in 0..n {
            let s = &self.slots[(start + k) % n];
            if let Ok(g) = s.try_lock() {
                if g.is_some() {
                    return s.clone();
                }
                empty.get_or_insert_with(|| s.clone());
            }
        }
        empty.unwrap_or_else(|| self.slots[start % self.warm].clone())
    }

    /// Locks `slot`, instantiating if it is empty. With `id`, the slot must still hold that
    /// instance (a stream or writer bound to it).
    pub async fn hold<'a>(&self, slot: &'a Slot<K>, id: Option<u64>) -> Result<Held<'a, K>, Failure> {
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|i| i.store.data().in_call) {
            // The last call on it was abandoned mid-way (its request went away): the instance
            // cannot be entered again. Not a plugin failure, so not counted as one.
            tracing::debug!(plugin = %self.spec.name, "instance left mid-call by a cancelled request; replacing it");
            *guard = None;
        }
        let current = guard.as_ref().map(|i| i.id);
        match (id, current) {
            (Some(want), Some(have)) if want == have => {}
            (Some(_), _) => {
                return Err(Failure { plugin: self.spec.name.clone(), op: "resume", error: PluginError::Discarded })
            }
            (None, Some(_)) => {}
            (None, None) => *guard = Some(self.instantiate().await?),
        }
        Ok(Held { guard })
    }

    /// Runs one guest call on a held instance under the deadline: the one funnel every call
    /// into a plugin goes through. A failure discards the instance.
    pub async fn run<T, F>(&self, held: &mut Held<'_, K>, op: &'static str, f: F) -> Result<T, Failure>
    where
        F: for<'a> FnOnce(&'a mut Instance<K>) -> BoxFuture<'a, wasmtime::Result<T>>,
    {
        let inst = held.instance();
        let started = Instant::now();
        inst.store.data_mut().call_deadline = started + self.spec.deadline;
        inst.store.set_epoch_deadline(1);
        inst.store.data_mut().in_call = true;
        let result = tokio::time::timeout(self.spec.deadline + HOST_TIMER_SLACK, f(inst)).await;
        held.instance().store.data_mut().in_call = false;
        self.observe(op, started);
        let error = match result {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => self.classify(&e, held.instance().store.data().limiter.memory_denied),
            Err(_) => PluginError::Deadline { ms: self.spec.deadline.as_millis() },
        };
        held.discard();
        Err(self.fail(op, error))
    }

    /// One call on any instance.
    pub async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, Failure>
    where
        F: for<'a> FnOnce(&'a mut Instance<K>) -> BoxFuture<'a, wasmtime::Result<T>>,
    {
        let slot = self.pick();
        let mut held = self.hold(&slot, None).await?;
        self.run(&mut held, op, f).await
    }

    /// Logs and counts a failure that discards an instance (or refuses one).
    pub fn fail(&self, op: &'static str, error: PluginError) -> Failure {
        let labels = PluginFailureLabels { plugin: self.spec.name.clone(), op, reason: error.kind() };
        metrics::get().plugin_failures.get_or_create(&labels).inc();
        tracing::error!(plugin = %self.spec.name, op, reason = error.kind(), error = %error, "plugin call failed; instance discarded");
        Failure { plugin: self.spec.name.clone(), op, error }
    }

    /// What a failed guest call was, by the error's type: the epoch deadline, the memory cap
    /// (the limiter's flag or its error), another trap, or a host error.
    fn classify(&self, e: &wasmtime::Error, memory_denied: bool) -> PluginError {
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => PluginError::Deadline { ms: self.spec.deadline.as_millis() },
            _ if memory_denied || e.downcast_ref::<MemoryCapReached>().is_some() => {
                PluginError::MemoryCap { mib: self.spec.memory_bytes >> 20 }
            }
            Some(trap) => PluginError::Trap { reason: trap.to_string() },
            None => PluginError::Trap { reason: first_line(&e.root_cause().to_string()) },
        }
    }

    fn observe(&self, op: &'static str, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        if let Some(h) = self.durations.read().unwrap().get(op) {
            return h.observe(secs);
        }
        let labels = PluginLabels { plugin: self.spec.name.clone(), op };
        let h = metrics::get().plugin_duration.get_or_create(&labels).clone();
        h.observe(secs);
        self.durations.write().unwrap().insert(op, h);
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}
