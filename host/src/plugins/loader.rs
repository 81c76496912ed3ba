//! Loading a plugin file, the one path used by `serve`, reload, `berth plugin check` and
//! `berth config check`: read it, check the sha256 pin, compile it (or take the compiled
//! artifact from the on-disk cache), read which world and which `berth:plugin` version it
//! implements and what it declares about itself, and link it against the host.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::Engine;

use super::wit::{self, latest, WitVersion};
use super::{PluginError, State, World};

/// The custom section in which a plugin declares facts about itself (the SDK writes it):
/// `stateless` says its instances keep no state between calls, so the host may run it in as
/// many instances as it needs.
pub const INFO_SECTION: &str = "berth:plugin-info";

/// A compiled plugin and what it is.
pub struct Loaded {
    pub component: Component,
    pub sha256: String,
    pub world: World,
    /// The `berth:plugin` version it was built against.
    pub version: semver::Version,
    pub wit: WitVersion,
    /// Declared in `INFO_SECTION`: instances keep no state between calls.
    pub stateless: bool,
}

/// Reads, checks, compiles and inspects a plugin file.
pub fn load(engine: &Engine, path: &Path, pin: Option<&str>, cache_dir: Option<&Path>) -> Result<Loaded, PluginError> {
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| PluginError::FileMissing { path: shown.clone(), reason: e.to_string() })?;
    let not_component = |reason: String| PluginError::NotComponent { path: shown.clone(), reason };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not_component("not a WebAssembly file".into()));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(not_component(
            "a core WebAssembly module, not a component (build it with `--target wasm32-wasip2`)".into(),
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if let Some(pinned) = pin {
        let pinned = pinned.trim_start_matches("sha256:").to_ascii_lowercase();
        if pinned != sha256 {
            return Err(PluginError::PinMismatch { path: shown, actual: sha256, pinned });
        }
    }
    let component = compile(engine, &bytes, &sha256, cache_dir).map_err(not_component)?;
    let (world, version, wit) = identify(engine, &component, &shown)?;
    Ok(Loaded { component, sha256, world, version, wit, stateless: declares_stateless(&bytes) })
}

/// Refuses a loaded plugin that does not implement `want`.
pub fn expect_world(loaded: &Loaded, path: &Path, want: World) -> Result<(), PluginError> {
    if loaded.world == want {
        return Ok(());
    }
    Err(PluginError::WrongWorld { path: path.display().to_string(), found: loaded.world.name(), wanted: want.name() })
}

/// Links a loaded plugin against the host; `typed` turns the pre-linked component into its
/// world's bindings, which checks it has the world's exports with the right types.
pub fn link<T>(
    engine: &Engine,
    loaded: &Loaded,
    path: &Path,
    typed: impl FnOnce(InstancePre<State>) -> wasmtime::Result<T>,
) -> Result<T, PluginError> {
    let link = |e: wasmtime::Error| PluginError::Link {
        path: path.display().to_string(),
        world: loaded.world.name(),
        reason: format!("{e:#}"),
    };
    let pre = linker(engine).map_err(link)?.instantiate_pre(&loaded.component).map_err(link)?;
    typed(pre).map_err(link)
}

/// `berth plugin check` and `berth config check`: loads and links without instantiating;
/// with `want`, the file must implement that world. The compiled component goes into the
/// default cache, so checking a big (JavaScript, Python) component also makes the next start
/// that uses it skip the compile.
pub fn check(path: &Path, pin: Option<&str>, want: Option<World>) -> Result<Loaded, PluginError> {
    let engine = super::engine()?;
    let loaded = load(engine, path, pin, super::spec::default_cache_dir().as_deref())?;
    if let Some(want) = want {
        expect_world(&loaded, path, want)?;
    }
    link(engine, &loaded, path, |pre| loaded.world.check(pre))?;
    Ok(loaded)
}

/// A linker with all of WASI 0.2 (granting only what each store's `WasiCtx` allows) and
/// Berth's own `host` and `types` imports.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<State>> {
    let mut l = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut l)?;
    latest::host::add_to_linker::<State, HasSelf<State>>(&mut l, |s| s)?;
    latest::types::add_to_linker::<State, HasSelf<State>>(&mut l, |s| s)?;
    Ok(l)
}

/// Compiles a component, using (and filling) the on-disk cache of precompiled artifacts.
fn compile(engine: &Engine, bytes: &[u8], sha256: &str, cache_dir: Option<&Path>) -> Result<Component, String> {
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let engine_hash = h.finish();
    let dir = cache_dir.and_then(prepare_cache_dir);
    let cached: Option<PathBuf> = dir.as_ref().map(|d| d.join(format!("{sha256}-{engine_hash:016x}.cwasm")));
    if let Some(file) = &cached {
        if file.is_file() {
            // SAFETY: the file is in a directory only this user can write (checked by
            // `prepare_cache_dir`), written by `precompile_component` below and renamed into
            // place whole; its name binds it to the source's sha256 and to this engine's
            // configuration, and wasmtime checks the engine compatibility again.
            match unsafe { Component::deserialize_file(engine, file) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "ignoring unusable compiled-component cache entry")
                }
            }
        }
    }
    let artifact =
        super::function_cache::compiling(dir.as_deref(), engine_hash, sha256, || engine.precompile_component(bytes))
            .map_err(|e| format!("{e:#}"))?;
    if let Some(file) = &cached {
        let tmp = file.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
        let written = std::fs::write(&tmp, &artifact).and_then(|_| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %file.display(), error = %e, "cannot cache the compiled component");
        }
    }
    // SAFETY: `artifact` was produced just now by this engine's `precompile_component`.
    unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| format!("{e:#}"))
}

/// Creates the cache directory (mode 0700) and checks that only this user can write to it;
/// None (no caching) otherwise.
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

/// The world a component exports and the `berth:plugin` version it was built against. The
/// version is checked first: a plugin of a newer package may export a world this host has
/// never heard of, and "wrong version" is then the useful answer.
fn identify(
    engine: &Engine,
    component: &Component,
    path: &str,
) -> Result<(World, semver::Version, WitVersion), PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let ours: Vec<(&str, Option<&str>)> = exports.iter().filter_map(|e| wit::parse_export(e)).collect();
    let unknown = || PluginError::UnknownWorld {
        path: path.to_string(),
        exports: if exports.is_empty() {
            "it exports nothing".into()
        } else {
            format!("exports: {}", exports.join(", "))
        },
    };
    let Some((_, version)) = ours.iter().find(|(iface, _)| *iface == "lifecycle") else { return Err(unknown()) };
    let wrong_version =
        |found: String| PluginError::WitVersion { path: path.to_string(), found, supported: WitVersion::supported() };
    let raw = version.ok_or_else(|| wrong_version("(unversioned)".into()))?;
    let version = semver::Version::parse(raw).map_err(|_| wrong_version(raw.to_string()))?;
    let wit = WitVersion::of(&version).ok_or_else(|| wrong_version(version.to_string()))?;
    let world =
        World::ALL.into_iter().find(|w| ours.iter().any(|(iface, _)| *iface == w.interface())).ok_or_else(unknown)?;
    Ok((world, version, wit))
}

/// Whether the component's code declares `stateless` in `INFO_SECTION` (custom sections of
/// the core modules it embeds included).
fn declares_stateless(bytes: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(bytes).any(|payload| match payload {
        Ok(wasmparser::Payload::CustomSection(s)) if s.name() == INFO_SECTION => {
            String::from_utf8_lossy(s.data()).split(|c: char| c.is_whitespace() || c == ',').any(|w| w == "stateless")
        }
        _ => false,
    })
}
