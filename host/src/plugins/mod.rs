//! The WebAssembly plugin runtime: one wasmtime `Engine` per process (epoch interruption, the
//! pooling allocator), components compiled once and cached on disk, a `Store` per instance with
//! a memory cap and a WASI context that grants only the configured directories.
//!
//! One adapter per world lives next to this module: `storage` today; the auth, notification
//! and cleanup worlds have their bindings generated (`bindings`) and are recognised by
//! `berth plugin check`.

pub mod bindings;
pub mod storage;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::config::{Config, DirMode};

/// How often the epoch ticker advances the engine's epoch: the granularity of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Live instances across all plugins (each its own store); bounded by the pooling allocator.
const MAX_INSTANCES: u32 = 256;
/// The largest linear memory any plugin may be configured for (pooling slot size).
const MAX_MEMORY_BYTES: u64 = 1 << 30;

/// State of one plugin store: its WASI context (only the granted preopens), its resource
/// table, its limits, and the plugin's name for log lines.
pub struct State {
    pub(crate) plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl State {
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

/// The plugin kinds Berth knows, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    StorageDriver,
    AuthPolicy,
    NotificationSink,
    CleanupPolicy,
}

impl World {
    pub const ALL: [World; 4] =
        [World::StorageDriver, World::AuthPolicy, World::NotificationSink, World::CleanupPolicy];

    pub fn name(self) -> &'static str {
        match self {
            World::StorageDriver => "storage-driver-plugin",
            World::AuthPolicy => "auth-policy-plugin",
            World::NotificationSink => "notification-sink-plugin",
            World::CleanupPolicy => "cleanup-policy-plugin",
        }
    }

    /// The interface the world exports besides `lifecycle`.
    fn interface(self) -> &'static str {
        match self {
            World::StorageDriver => "storage-driver",
            World::AuthPolicy => "auth-policy",
            World::NotificationSink => "notification-sink",
            World::CleanupPolicy => "cleanup-policy",
        }
    }
}

/// A plugin as configured: everything needed to load and instantiate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub sha256: Option<String>,
    pub deadline: Duration,
    pub memory_bytes: usize,
    /// Instances serving calls in parallel.
    pub instances: usize,
    /// Re-hash uploads from what the plugin stored.
    pub verify_uploads: bool,
    pub dirs: Vec<DirGrant>,
    /// Socket addresses the plugin may connect to (empty: no network at all).
    pub network: Vec<std::net::SocketAddr>,
    pub config: Vec<(String, String)>,
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

impl PluginSpec {
    /// The spec of plugin `name` from a validated configuration.
    pub fn from_config(config: &Config, name: &str) -> Result<PluginSpec, String> {
        let p = config
            .plugins
            .entries
            .get(name)
            .ok_or_else(|| format!("plugin {name:?} is not configured under plugins"))?;
        let d = &config.plugins.defaults;
        Ok(PluginSpec {
            name: name.to_string(),
            path: p.path.clone(),
            sha256: p.sha256.clone(),
            deadline: Duration::from_millis(p.deadline_ms.unwrap_or(d.deadline_ms)),
            memory_bytes: (p.memory_mib.unwrap_or(d.memory_mib) as usize) << 20,
            instances: p.instances.unwrap_or(1) as usize,
            verify_uploads: p.verify_uploads,
            dirs: p
                .grants
                .dirs
                .iter()
                .map(|g| DirGrant { host: g.host.clone(), guest: g.guest.clone(), read_only: g.mode == DirMode::Ro })
                .collect(),
            network: p.grants.network.clone(),
            config: p.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cache_dir: d.cache_dir.clone().or_else(default_cache_dir),
        })
    }

    /// Epoch ticks for one call's deadline.
    pub fn deadline_ticks(&self) -> u64 {
        (self.deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
    }
}

/// `$XDG_CACHE_HOME/berth/components` (or `~/.cache/...`).
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("berth").join("components"))
}

/// The process-wide engine: epoch interruption on, pooling allocator if the system allows it
/// (falling back to on-demand allocation), and a ticker thread advancing the epoch.
pub fn engine() -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let engine = build_engine(true).or_else(|e| {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                build_engine(false)
            })?;
            let ticker = engine.weak();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => return,
                    }
                })
                .map_err(|e| format!("cannot start the epoch ticker: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn build_engine(pooling: bool) -> Result<Engine, String> {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    cfg.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 4)
            .total_memories(MAX_INSTANCES)
            .total_tables(MAX_INSTANCES * 4)
            .total_stacks(MAX_INSTANCES)
            .max_memory_size(MAX_MEMORY_BYTES as usize);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&cfg).map_err(|e| format!("cannot create the WebAssembly engine: {e:#}"))
}

/// A linker with all of WASI p2 (granting only what each store's `WasiCtx` allows) and Berth's
/// own `host` and `types` imports.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut l = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut l)?;
    bindings::storage::berth::plugin::host::add_to_linker::<State, HasSelf<State>>(&mut l, |s| s)?;
    bindings::storage::berth::plugin::types::add_to_linker::<State, HasSelf<State>>(&mut l, |s| s)?;
    Ok(l)
}

/// A new store for `spec`: WASI with only its preopens and granted addresses, stderr into the
/// host's, a memory cap.
pub fn new_store(engine: &Engine, spec: &PluginSpec) -> wasmtime::Result<Store<State>> {
    let mut b = WasiCtxBuilder::new();
    b.inherit_stderr().allow_blocking_current_thread(true);
    for d in &spec.dirs {
        let perms = if d.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        b.preopened_dir(&d.host, &d.guest, perms)
            .map_err(|e| wasmtime::format_err!("grant {} -> {}: {e:#}", d.host.display(), d.guest))?;
    }
    // No network unless granted: TCP is off, and with grants only the granted addresses are
    // reachable (plus the implicit ephemeral bind that a connect needs).
    if !spec.network.is_empty() {
        let allowed: Arc<[std::net::SocketAddr]> = spec.network.clone().into();
        b.allow_tcp(true).socket_addr_check(move |addr, how| {
            let ok = match how {
                SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                SocketAddrUse::TcpConnect => allowed.contains(&addr),
                _ => false,
            };
            Box::pin(async move { ok })
        });
    }
    let limits = StoreLimitsBuilder::new()
        .memory_size(spec.memory_bytes)
        .instances(64)
        .memories(16)
        .tables(64)
        .table_elements(1 << 20)
        .trap_on_grow_failure(true)
        .build();
    let state = State { plugin: Arc::from(spec.name.as_str()), wasi: b.build(), table: ResourceTable::new(), limits };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(spec.deadline_ticks());
    Ok(store)
}

/// A compiled component and the sha256 of the file it came from.
pub struct Compiled {
    pub component: Component,
    pub sha256: String,
}

/// Why a file is not a loadable plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is not a WebAssembly file")]
    NotWasm(String),
    #[error("{0} is a core WebAssembly module, not a component (build it with `--target wasm32-wasip2`)")]
    CoreModule(String),
    #[error("{0} is not a valid WebAssembly component: {1}")]
    Invalid(String, String),
    #[error("{path}: sha256 is {actual}, the configuration pins {pinned}")]
    Pin { path: String, actual: String, pinned: String },
    #[error("{path} is a component but not a Berth plugin: it exports no known world ({exports})")]
    UnknownWorld { path: String, exports: String },
    #[error("{path} implements {found}, not {wanted}")]
    WrongWorld { path: String, found: &'static str, wanted: &'static str },
    #[error("{path} ({world}) does not link against Berth's host: {error}")]
    Link { path: String, world: &'static str, error: String },
    #[error("{0}")]
    Engine(String),
}

/// Reads, checks and compiles a component, using (and filling) the on-disk cache of
/// precompiled artifacts when `cache_dir` is given.
pub fn compile(
    engine: &Engine,
    path: &Path,
    pin: Option<&str>,
    cache_dir: Option<&Path>,
) -> Result<Compiled, LoadError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| LoadError::Read(shown.clone(), e))?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm(shown));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule(shown));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if let Some(pinned) = pin {
        let pinned = pinned.trim_start_matches("sha256:").to_ascii_lowercase();
        if pinned != sha256 {
            return Err(LoadError::Pin { path: shown, actual: sha256, pinned });
        }
    }
    let cached = cache_dir.and_then(|dir| {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        prepare_cache_dir(dir).map(|d| d.join(format!("{sha256}-{:016x}.cwasm", h.finish())))
    });
    if let Some(file) = &cached {
        if file.is_file() {
            // SAFETY: the file is in a directory only this user can write (checked by
            // `prepare_cache_dir`), written by `precompile_component` below and renamed into
            // place whole; its name binds it to the source's sha256 and to this engine's
            // configuration, and wasmtime checks the engine compatibility again.
            match unsafe { Component::deserialize_file(engine, file) } {
                Ok(component) => return Ok(Compiled { component, sha256 }),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unusable compiled-component cache entry")
                }
            }
        }
    }
    let artifact =
        engine.precompile_component(&bytes).map_err(|e| LoadError::Invalid(shown.clone(), format!("{e:#}")))?;
    if let Some(file) = &cached {
        let tmp = file.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
        let written = std::fs::write(&tmp, &artifact).and_then(|_| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %file.display(), error = %e, "cannot cache the compiled component");
        }
    }
    // SAFETY: `artifact` was produced just now by this engine's `precompile_component`.
    let component = unsafe { Component::deserialize(engine, &artifact) }
        .map_err(|e| LoadError::Invalid(shown, format!("{e:#}")))?;
    Ok(Compiled { component, sha256 })
}

/// Creates the cache directory (mode 0700) and checks that only this user can write to it;
/// returns None (no caching) otherwise.
fn prepare_cache_dir(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create the component cache; compiling every start");
        return None;
    }
    let meta = std::fs::symlink_metadata(dir).ok()?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o022 != 0 {
        tracing::warn!(dir = %dir.display(), "component cache is not a private directory of this user; not using it");
        return None;
    }
    Some(dir.to_path_buf())
}

/// Which known world a component exports.
pub fn detect_world(engine: &Engine, component: &Component, path: &str) -> Result<World, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let has = |iface: &str| {
        exports.iter().any(|e| e.strip_prefix("berth:plugin/").and_then(|r| r.split('@').next()) == Some(iface))
    };
    for w in World::ALL {
        if has(w.interface()) && has("lifecycle") {
            return Ok(w);
        }
    }
    Err(LoadError::UnknownWorld {
        path: path.to_string(),
        exports: if exports.is_empty() {
            "it exports nothing".into()
        } else {
            format!("exports: {}", exports.join(", "))
        },
    })
}

/// Checks that a component of world `world` links against the host and has the exports the
/// world requires, with the right types.
pub fn check_links(engine: &Engine, component: &Component, world: World, path: &str) -> Result<(), LoadError> {
    let link = |error: wasmtime::Error| LoadError::Link {
        path: path.to_string(),
        world: world.name(),
        error: format!("{error:#}"),
    };
    let pre = linker(engine).map_err(link)?.instantiate_pre(component).map_err(link)?;
    match world {
        World::StorageDriver => bindings::storage::StorageDriverPluginPre::new(pre).map(drop),
        World::AuthPolicy => bindings::auth::AuthPolicyPluginPre::new(pre).map(drop),
        World::NotificationSink => bindings::notification::NotificationSinkPluginPre::new(pre).map(drop),
        World::CleanupPolicy => bindings::cleanup::CleanupPolicyPluginPre::new(pre).map(drop),
    }
    .map_err(link)
}

/// `berth plugin check FILE`: which world the file implements, and whether it links.
pub fn check_file(path: &Path) -> Result<World, LoadError> {
    let engine = engine().map_err(LoadError::Engine)?;
    let shown = path.display().to_string();
    let compiled = compile(engine, path, None, None)?;
    let world = detect_world(engine, &compiled.component, &shown)?;
    check_links(engine, &compiled.component, world, &shown)?;
    Ok(world)
}

/// A one-line description of a failed plugin call (trap, deadline, memory cap).
pub fn describe_error(e: &wasmtime::Error, spec: &PluginSpec) -> String {
    let root = first_line(&e.root_cause().to_string());
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!("deadline of {} ms exceeded", spec.deadline.as_millis()),
        _ if format!("{e:?}").contains("growing memory") => {
            format!("memory cap of {} MiB reached ({root})", spec.memory_bytes >> 20)
        }
        Some(trap) => format!("trapped: {trap}"),
        None => root,
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}
