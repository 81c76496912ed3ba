//! A storage driver implemented by a WebAssembly component (`storage-driver-plugin` world).
//!
//! Paths are validated here before they reach the plugin. Large content never passes through
//! guest memory when the plugin supports it: a reader is the `input-stream` the plugin opened,
//! pumped by the host; a writer is the `output-stream` the plugin's `writer.body()` returned,
//! which the host writes into (`writer.write(chunk)` is the fallback). An open reader or writer
//! keeps its instance for its whole life. A trap, a deadline or a memory cap in the plugin
//! becomes a `StorageError::Backend` (a 500 with a request id) and a log line naming the plugin.
//!
//! The loaded plugin sits behind an `RwLock<Arc<_>>`: `reload` loads and initialises the new
//! version first and swaps only on success; calls in flight finish on the version they started
//! with.

use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use wasmtime::component::{Resource, ResourceAny};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, StreamError};

use super::{validate_path, ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};
use crate::plugins::bindings::storage::exports::berth::plugin::storage_driver as sd;
use crate::plugins::storage::{Failure, Held, Slot, StoragePlugin};
use crate::plugins::PluginSpec;

/// Bytes asked of a plugin's input stream per read (wasmtime-wasi caps file reads at 64 KiB).
const READ_CHUNK: usize = 256 << 10;
/// Largest chunk copied into the guest by the `write` fallback.
const WRITE_CHUNK: usize = 1 << 20;

pub struct ComponentDriver {
    current: RwLock<Arc<StoragePlugin>>,
}

impl From<Failure> for StorageError {
    fn from(f: Failure) -> Self {
        StorageError::Backend(f.0)
    }
}

impl ComponentDriver {
    /// Loads the plugin; fails if it does not compile, link or initialise.
    pub async fn load(spec: PluginSpec) -> std::result::Result<Self, String> {
        Ok(ComponentDriver { current: RwLock::new(StoragePlugin::load(spec).await?) })
    }

    /// The version serving new calls.
    pub fn plugin(&self) -> Arc<StoragePlugin> {
        self.current.read().unwrap().clone()
    }

    /// Loads `spec` (a new file, or another plugin) and switches to it if it initialises; the
    /// old version keeps serving otherwise. Returns a description of what now serves.
    pub async fn reload(&self, spec: PluginSpec) -> std::result::Result<String, String> {
        let new = StoragePlugin::load(spec).await?;
        let what = format!("{} (sha256 {})", new.name(), new.sha256);
        let old = std::mem::replace(&mut *self.current.write().unwrap(), new);
        tracing::info!(old = %old.name(), old_sha256 = %old.sha256, now = %what, "storage plugin reloaded");
        Ok(what)
    }
}

/// Maps a driver error the plugin returned; `path` is the path of the call.
fn plugin_error(plugin: &StoragePlugin, op: &str, path: &str, e: sd::StorageError) -> StorageError {
    match e {
        sd::StorageError::PathNotFound(_) => StorageError::NotFound(path.to_string()),
        sd::StorageError::InvalidPath(_) => StorageError::InvalidPath(path.to_string()),
        sd::StorageError::InvalidOffset(offset) => StorageError::InvalidOffset { path: path.to_string(), offset },
        other => {
            let why = match other {
                sd::StorageError::Unsupported => "unsupported operation".to_string(),
                sd::StorageError::Unavailable(m) => format!("unavailable: {m}"),
                sd::StorageError::Other(m) => m,
                _ => unreachable!(),
            };
            tracing::warn!(plugin = %plugin.name(), op, path, error = %why, "plugin returned an error");
            StorageError::Backend(format!("plugin {}: {op} {path}: {why}", plugin.name()))
        }
    }
}

fn stream_error(plugin: &StoragePlugin, op: &str, path: &str, e: impl std::fmt::Display) -> StorageError {
    tracing::error!(plugin = %plugin.name(), op, path, error = %e, "plugin stream failed");
    StorageError::Backend(format!("plugin {}: {op} {path}: {e}", plugin.name()))
}

/// How long a plugin's redirect URL should stay valid: long enough to start a download.
const REDIRECT_TTL_SECS: u32 = 1200;

#[async_trait]
impl StorageDriver for ComponentDriver {
    fn name(&self) -> &'static str {
        "plugin"
    }

    fn verify_uploads(&self) -> bool {
        self.plugin().spec.verify_uploads
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        validate_path(path)?;
        let p = self.plugin();
        let arg = path.to_string();
        let r = p
            .call("get-content", |i| {
                Box::pin(
                    async move { i.bindings.berth_plugin_storage_driver().call_get_content(&mut i.store, &arg).await },
                )
            })
            .await?;
        r.map(Bytes::from).map_err(|e| plugin_error(&p, "get-content", path, e))
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        validate_path(path)?;
        let p = self.plugin();
        let arg = path.to_string();
        let r = p
            .call("put-content", |i| {
                Box::pin(async move {
                    i.bindings.berth_plugin_storage_driver().call_put_content(&mut i.store, &arg, &content).await
                })
            })
            .await?;
        r.map_err(|e| plugin_error(&p, "put-content", path, e))
    }

    async fn reader(&self, path: &str, offset: u64) -> Result<ByteStream> {
        validate_path(path)?;
        let p = self.plugin();
        let slot = p.pick();
        let mut held = p.hold(&slot, None).await?;
        let arg = path.to_string();
        let opened = p
            .run(&mut held, "open-reader", |i| {
                Box::pin(async move {
                    i.bindings.berth_plugin_storage_driver().call_open_reader(&mut i.store, &arg, offset).await
                })
            })
            .await?;
        match opened {
            Ok(stream) => {
                let id = held.instance().id;
                drop(held);
                Ok(pump_reader(Reader { p, slot, id, stream: Some(stream), path: path.to_string() }))
            }
            Err(sd::StorageError::Unsupported) => {
                // A backend that cannot hand out streams (an in-memory one): whole content.
                drop(held);
                let data = self.get_content(path).await?;
                if offset > data.len() as u64 {
                    return Err(StorageError::InvalidOffset { path: path.to_string(), offset });
                }
                let rest = data.slice(offset as usize..);
                Ok(Box::pin(futures_util::stream::iter((!rest.is_empty()).then_some(Ok(rest)))))
            }
            Err(e) => Err(plugin_error(&p, "open-reader", path, e)),
        }
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        validate_path(path)?;
        let p = self.plugin();
        let slot = p.pick();
        let mut held = p.hold(&slot, None).await?;
        let arg = path.to_string();
        let opened = p
            .run(&mut held, "open-writer", |i| {
                Box::pin(async move {
                    i.bindings.berth_plugin_storage_driver().call_open_writer(&mut i.store, &arg, append).await
                })
            })
            .await?;
        let handle = opened.map_err(|e| plugin_error(&p, "open-writer", path, e))?;
        let size = p
            .run(&mut held, "writer.size", |i| {
                Box::pin(async move {
                    i.bindings.berth_plugin_storage_driver().writer().call_size(&mut i.store, handle).await
                })
            })
            .await?;
        let body = p
            .run(&mut held, "writer.body", |i| {
                Box::pin(async move {
                    i.bindings.berth_plugin_storage_driver().writer().call_body(&mut i.store, handle).await
                })
            })
            .await?;
        let body = match body {
            Ok(stream) => Some(stream),
            Err(sd::StorageError::Unsupported) => None,
            Err(e) => {
                let err = plugin_error(&p, "writer.body", path, e);
                let _ = finish(&p, &mut held, handle, false).await;
                return Err(err);
            }
        };
        let id = held.instance().id;
        drop(held);
        Ok(Box::new(PluginWriter { plugin: p, slot, id, handle: Some(handle), body, size, path: path.to_string() }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        validate_path(path)?;
        let p = self.plugin();
        let arg = path.to_string();
        let r = p
            .call("stat", |i| {
                Box::pin(async move { i.bindings.berth_plugin_storage_driver().call_stat(&mut i.store, &arg).await })
            })
            .await?;
        let info = r.map_err(|e| plugin_error(&p, "stat", path, e))?;
        Ok(FileInfo {
            path: path.to_string(),
            size: info.size,
            modified: UNIX_EPOCH + Duration::from_millis(info.modified_millis),
            is_dir: info.is_dir,
        })
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        validate_path(path)?;
        let p = self.plugin();
        let arg = path.to_string();
        let r = p
            .call("list", |i| {
                Box::pin(async move { i.bindings.berth_plugin_storage_driver().call_list(&mut i.store, &arg).await })
            })
            .await?;
        let mut entries = r.map_err(|e| plugin_error(&p, "list", path, e))?;
        // Only direct children, well formed: a plugin cannot make the registry look elsewhere.
        let before = entries.len();
        entries.retain(|e| {
            e.strip_prefix(path).and_then(|r| r.strip_prefix('/')).is_some_and(|name| !name.contains('/'))
                && validate_path(e).is_ok()
        });
        if entries.len() != before {
            tracing::warn!(plugin = %p.name(), path, dropped = before - entries.len(), "plugin listed paths that are not children; ignored");
        }
        Ok(entries)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        validate_path(from)?;
        validate_path(to)?;
        let p = self.plugin();
        let (a, b) = (from.to_string(), to.to_string());
        let r = p
            .call("rename", |i| {
                Box::pin(
                    async move { i.bindings.berth_plugin_storage_driver().call_rename(&mut i.store, &a, &b).await },
                )
            })
            .await?;
        r.map_err(|e| plugin_error(&p, "rename", from, e))
    }

    async fn redirect_url(&self, path: &str) -> Result<Option<String>> {
        validate_path(path)?;
        let p = self.plugin();
        let arg = path.to_string();
        let r = p
            .call("redirect-url", |i| {
                Box::pin(async move {
                    i.bindings.berth_plugin_storage_driver().call_redirect_url(&mut i.store, &arg, REDIRECT_TTL_SECS).await
                })
            })
            .await?;
        match r {
            Ok(url) => Ok(url),
            Err(sd::StorageError::Unsupported) => Ok(None),
            Err(e) => Err(plugin_error(&p, "redirect-url", path, e)),
        }
    }

    async fn delete(&self, path: &str) -> Result<()> {
        validate_path(path)?;
        let p = self.plugin();
        let arg = path.to_string();
        let r = p
            .call("delete", |i| {
                Box::pin(async move { i.bindings.berth_plugin_storage_driver().call_delete(&mut i.store, &arg).await })
            })
            .await?;
        r.map_err(|e| plugin_error(&p, "delete", path, e))
    }
}

/// An open reader: the plugin's input stream, in the table of the instance that opened it.
struct Reader {
    p: Arc<StoragePlugin>,
    slot: Slot,
    id: u64,
    stream: Option<Resource<DynInputStream>>,
    path: String,
}

impl Drop for Reader {
    /// A reader dropped early (client gone): release the stream in its instance.
    fn drop(&mut self) {
        if let (Some(stream), Ok(rt)) = (self.stream.take(), tokio::runtime::Handle::try_current()) {
            let (slot, id) = (self.slot.clone(), self.id);
            rt.spawn(async move {
                let mut g = slot.lock().await;
                if let Some(i) = g.as_mut().filter(|i| i.id == id) {
                    let _ = i.store.data_mut().table().delete(stream);
                }
            });
        }
    }
}

/// Streams what the plugin's input stream yields, locking the instance per chunk only.
fn pump_reader(r: Reader) -> ByteStream {
    Box::pin(futures_util::stream::unfold(r, |mut r| async move {
        let stream = r.stream.as_ref()?;
        let stream = Resource::<DynInputStream>::new_borrow(stream.rep());
        let (p, deadline) = (r.p.clone(), r.p.spec.deadline);
        let slot = r.slot.clone();
        let mut held = match p.hold(&slot, Some(r.id)).await {
            Ok(h) => h,
            Err(f) => {
                r.stream = None;
                return Some((Err(f.into()), r));
            }
        };
        let mut empty = 0;
        loop {
            let inst = held.instance();
            let s = match inst.store.data_mut().table().get_mut(&stream) {
                Ok(s) => s,
                Err(e) => {
                    r.stream = None;
                    return Some((Err(stream_error(&p, "read", &r.path, e)), r));
                }
            };
            let err = match tokio::time::timeout(deadline, s.blocking_read(READ_CHUNK)).await {
                Ok(Ok(b)) if b.is_empty() => {
                    empty += 1;
                    if empty < 1000 {
                        continue;
                    }
                    stream_error(&p, "read", &r.path, "stream makes no progress")
                }
                Ok(Ok(b)) => return Some((Ok(b), r)),
                Ok(Err(StreamError::Closed)) => {
                    if let Some(own) = r.stream.take() {
                        let _ = held.instance().store.data_mut().table().delete(own);
                    }
                    return None;
                }
                Ok(Err(e)) => stream_error(&p, "read", &r.path, e),
                Err(_) => stream_error(&p, "read", &r.path, "deadline exceeded"),
            };
            return Some((Err(err), r));
        }
    }))
}

/// Commits or cancels the guest writer, then drops its handle.
async fn finish(
    p: &StoragePlugin,
    held: &mut Held<'_>,
    handle: ResourceAny,
    commit: bool,
) -> std::result::Result<std::result::Result<(), sd::StorageError>, Failure> {
    let op = if commit { "writer.commit" } else { "writer.cancel" };
    let r = p
        .run(held, op, |i| {
            Box::pin(async move {
                let w = i.bindings.berth_plugin_storage_driver().writer();
                if commit {
                    w.call_commit(&mut i.store, handle).await
                } else {
                    w.call_cancel(&mut i.store, handle).await
                }
            })
        })
        .await?;
    p.run(held, "writer.drop", |i| Box::pin(async move { handle.resource_drop_async(&mut i.store).await })).await?;
    Ok(r)
}

struct PluginWriter {
    plugin: Arc<StoragePlugin>,
    slot: Slot,
    /// The instance the writer lives in.
    id: u64,
    /// None once committed or cancelled.
    handle: Option<ResourceAny>,
    body: Option<Resource<DynOutputStream>>,
    size: u64,
    path: String,
}

impl Drop for PluginWriter {
    /// A writer dropped without commit or cancel (request gone): cancel it in its instance.
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (p, slot, id, body) = (self.plugin.clone(), self.slot.clone(), self.id, self.body.take());
        rt.spawn(async move {
            if let Ok(mut held) = p.hold(&slot, Some(id)).await {
                if let Some(b) = body {
                    let _ = held.instance().store.data_mut().table().delete(b);
                }
                let _ = finish(&p, &mut held, handle, false).await;
            }
        });
    }
}

impl PluginWriter {
    async fn end(mut self: Box<Self>, commit: bool) -> Result<()> {
        let p = self.plugin.clone();
        let slot = self.slot.clone();
        let handle = self
            .handle
            .take()
            .ok_or_else(|| StorageError::Backend(format!("plugin {}: writer already finished", p.name())))?;
        let mut held = p.hold(&slot, Some(self.id)).await?;
        // Drop the host's end of the body stream first, so the guest sees all of it.
        if let Some(b) = self.body.take() {
            if let Err(e) = held.instance().store.data_mut().table().delete(b) {
                held.discard();
                return Err(stream_error(&p, "writer.body", &self.path, e));
            }
        }
        let r = finish(&p, &mut held, handle, commit).await?;
        r.map_err(|e| plugin_error(&p, if commit { "writer.commit" } else { "writer.cancel" }, &self.path, e))
    }
}

#[async_trait]
impl FileWriter for PluginWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        let p = self.plugin.clone();
        let handle = self
            .handle
            .ok_or_else(|| StorageError::Backend(format!("plugin {}: writer already finished", p.name())))?;
        let mut held = p.hold(&self.slot, Some(self.id)).await?;
        if let Some(body) = &self.body {
            let body = Resource::<DynOutputStream>::new_borrow(body.rep());
            let r = match held.instance().store.data_mut().table().get_mut(&body) {
                Err(e) => Err(stream_error(&p, "write", &self.path, e)),
                Ok(s) => match tokio::time::timeout(p.spec.deadline, s.blocking_write_and_flush(data)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(stream_error(&p, "write", &self.path, e)),
                    Err(_) => Err(stream_error(&p, "write", &self.path, "deadline exceeded")),
                },
            };
            r?;
        } else {
            let mut rest = data;
            while !rest.is_empty() {
                let chunk = rest.split_to(rest.len().min(WRITE_CHUNK));
                let r = p
                    .run(&mut held, "writer.write", |i| {
                        Box::pin(async move {
                            i.bindings
                                .berth_plugin_storage_driver()
                                .writer()
                                .call_write(&mut i.store, handle, &chunk)
                                .await
                        })
                    })
                    .await?;
                r.map_err(|e| plugin_error(&p, "writer.write", &self.path, e))?;
            }
        }
        self.size += n;
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.end(true).await
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        self.end(false).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::plugins::DirGrant;

    fn built(file: &str) -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release").join(file);
        if p.is_file() {
            Some(p)
        } else {
            assert!(
                std::env::var_os("BERTH_REQUIRE_PLUGINS").is_none(),
                "{} is not built, and BERTH_REQUIRE_PLUGINS is set",
                p.display()
            );
            eprintln!(
                "SKIPPED: {} is not built (cd plugins && cargo build --target wasm32-wasip2 --release)",
                p.display()
            );
            None
        }
    }

    fn spec(path: PathBuf, root: Option<&Path>, instances: usize) -> PluginSpec {
        PluginSpec {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            path,
            sha256: None,
            deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            instances,
            verify_uploads: true,
            dirs: root
                .map(|r| DirGrant { host: r.to_path_buf(), guest: "/data".into(), read_only: false })
                .into_iter()
                .collect(),
            network: Vec::new(),
            config: root.map(|_| ("root".to_string(), "/data".to_string())).into_iter().collect(),
            cache_dir: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_storage_fs_component() {
        let Some(wasm) = built("berth_storage_fs.wasm") else { return };
        let dir = tempfile::tempdir().unwrap();
        let d = ComponentDriver::load(spec(wasm, Some(dir.path()), 2)).await.unwrap();
        crate::storage::suite::run_all(&d).await;
        // It wrote distribution's layout into its preopened directory, nowhere else.
        d.put_content("/docker/registry/v2/x", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("docker/registry/v2/x")).unwrap(), b"1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_storage_memory_component() {
        let Some(wasm) = built("berth_storage_memory.wasm") else { return };
        let d = ComponentDriver::load(spec(wasm, None, 1)).await.unwrap();
        crate::storage::suite::run_all(&d).await;
    }

    /// `BERTH_SUITE_WASM=/path/to/a/memory-style/plugin.wasm` runs the suite against any component.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_extra_component() {
        let Some(wasm) = std::env::var_os("BERTH_SUITE_WASM").map(PathBuf::from) else { return };
        let d = ComponentDriver::load(spec(wasm, None, 1)).await.unwrap();
        crate::storage::suite::run_all(&d).await;
    }
}
