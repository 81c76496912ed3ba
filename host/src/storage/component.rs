//! A storage driver implemented by a WebAssembly component (`storage-driver-plugin` world).
//!
//! Paths are validated here before they reach the plugin. Large content never passes through
//! guest memory when the plugin supports it. Best, for a driver over a granted directory, the
//! plugin hands over descriptors of the object's file (`open-file`, `writer.file`) and the host
//! reads and writes the file itself, exactly as the native filesystem driver does (direct
//! writes, its own fsync). Next, the host pumps the `input-stream` / `output-stream` the
//! plugin opened. Last, bytes are copied in and out (`writer.write`, `get-content`). A
//! writer's file or stream is taken out of its instance's table and written from a thread of
//! the host's, so an upload holds no instance lock per chunk. A trap, a deadline or a memory cap
//! in the plugin becomes a `StorageError::Backend` (a 500 with a request id) and a log line
//! naming the plugin.
//!
//! A plugin is not trusted to store what it was given. With `verify_uploads` (the default)
//! every committed writer is checked: a file the host wrote must be what `open-file` opens,
//! unchanged since the host synced it; anything else is read back through the plugin and
//! compared, by a keyed hash the plugin never sees (`check`), with what the host sent. So the
//! registry can trust the digest it computed while streaming, as it does for native drivers.
//!
//! The loaded plugin sits behind an `RwLock<Arc<_>>`: `reload` loads and initialises the new
//! version first and swaps only on success; calls in flight finish on the version they started
//! with.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use wasmtime::component::{Resource, ResourceAny};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, StreamError};
use wasmtime_wasi::OpenMode;

use super::sink::{prefetch, Sink};
use super::{validate_path, ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};
use crate::plugins::bindings::storage::exports::berth::plugin::storage_driver as sd;
use crate::plugins::storage::{Failure, Held, Slot, StoragePlugin};
use crate::plugins::PluginSpec;

/// Bytes asked of a plugin's input stream per read (wasmtime-wasi caps file reads at 64 KiB).
const READ_CHUNK: usize = 256 << 10;
/// Largest chunk copied into the guest by the `write` fallback.
const WRITE_CHUNK: usize = 1 << 20;
/// Body chunks queued for a writer's pump thread: enough to keep the file busy while the
/// request task receives and hashes, few enough that a slow backend holds little memory.
const PUMP_QUEUE: usize = 8;
/// Entries asked of the plugin per `list` page.
const LIST_PAGE: u32 = 1000;
/// Bounds on one listing, so a plugin whose pages never end cannot hold a request (or the
/// host's memory) forever.
const MAX_LIST_ENTRIES: usize = 1 << 20;
const MAX_LIST_PAGES: usize = 1 << 14;

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

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        validate_path(path)?;
        get_content(&self.plugin(), path).await
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
        open_reader(self.plugin(), path, offset).await
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
        let mut check = p.spec.verify_uploads.then(check::Hasher::new);
        let body = match open_body(&p, &mut held, handle, size, path, &mut check).await {
            Ok(body) => body,
            Err(e) => {
                // The instance may be gone with the failure; then so is the writer.
                if held.is_live() {
                    let _ = finish(&p, &mut held, handle, false).await;
                }
                return Err(e);
            }
        };
        let id = held.instance().id;
        drop(held);
        Ok(Box::new(PluginWriter {
            plugin: p,
            slot,
            id,
            handle: Some(handle),
            body,
            check,
            start: size,
            size,
            path: path.to_string(),
        }))
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

    /// Reads the plugin's pages until it says there are no more, refusing a listing that does
    /// not end: a token seen before, a page larger than asked for, or more pages or entries
    /// than `MAX_LIST_PAGES` / `MAX_LIST_ENTRIES`.
    async fn list(&self, path: &str) -> Result<Vec<String>> {
        validate_path(path)?;
        let p = self.plugin();
        let broken = |why: String| {
            tracing::error!(plugin = %p.name(), path, error = %why, "plugin listing refused");
            StorageError::Backend(format!("plugin {}: list {path}: {why}", p.name()))
        };
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let (arg, after) = (path.to_string(), token.clone());
            let r = p
                .call("list", |i| {
                    Box::pin(async move {
                        i.bindings
                            .berth_plugin_storage_driver()
                            .call_list(&mut i.store, &arg, after.as_deref(), LIST_PAGE)
                            .await
                    })
                })
                .await?;
            let page = r.map_err(|e| plugin_error(&p, "list", path, e))?;
            if page.entries.len() > LIST_PAGE as usize {
                return Err(broken(format!("a page of {} entries, {LIST_PAGE} asked for", page.entries.len())));
            }
            entries.extend(page.entries);
            if entries.len() > MAX_LIST_ENTRIES {
                return Err(broken(format!("more than {MAX_LIST_ENTRIES} entries")));
            }
            match page.next {
                None => return Ok(children_only(&p, path, entries)),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(broken(format!("the continuation token {next:?} came back twice")))
                }
                Some(next) => token = Some(next),
            }
        }
        Err(broken(format!("more than {MAX_LIST_PAGES} pages")))
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
                    i.bindings
                        .berth_plugin_storage_driver()
                        .call_redirect_url(&mut i.store, &arg, REDIRECT_TTL_SECS)
                        .await
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

/// A listing's well-formed direct children of `path`, each once: a plugin cannot make the
/// registry look elsewhere.
fn children_only(p: &StoragePlugin, path: &str, mut entries: Vec<String>) -> Vec<String> {
    let before = entries.len();
    entries.retain(|e| {
        e.strip_prefix(path).and_then(|r| r.strip_prefix('/')).is_some_and(|name| !name.contains('/'))
            && validate_path(e).is_ok()
    });
    if entries.len() != before {
        tracing::warn!(plugin = %p.name(), path, dropped = before - entries.len(), "plugin listed paths that are not children; ignored");
    }
    entries.sort_unstable();
    entries.dedup();
    entries
}

async fn get_content(p: &StoragePlugin, path: &str) -> Result<Bytes> {
    let arg = path.to_string();
    let r = p
        .call("get-content", |i| {
            Box::pin(async move { i.bindings.berth_plugin_storage_driver().call_get_content(&mut i.store, &arg).await })
        })
        .await?;
    r.map(Bytes::from).map_err(|e| plugin_error(p, "get-content", path, e))
}

/// The object at `path` from `offset`, through version `p` of the plugin: its stream, or its
/// whole content when it has no stream to hand out.
async fn open_reader(p: Arc<StoragePlugin>, path: &str, offset: u64) -> Result<ByteStream> {
    if let Some(file) = open_file(&p, path).await? {
        return read_file(file, path, offset);
    }
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
            let data = get_content(&p, path).await?;
            if offset > data.len() as u64 {
                return Err(StorageError::InvalidOffset { path: path.to_string(), offset });
            }
            let rest = data.slice(offset as usize..);
            Ok(Box::pin(futures_util::stream::iter((!rest.is_empty()).then_some(Ok(rest)))))
        }
        Err(e) => Err(plugin_error(&p, "open-reader", path, e)),
    }
}

/// The plugin's file for `path`, opened for reading (`open-file`), or None if it has no files
/// to hand out.
async fn open_file(p: &StoragePlugin, path: &str) -> Result<Option<Arc<std::fs::File>>> {
    let slot = p.pick();
    let mut held = p.hold(&slot, None).await?;
    let arg = path.to_string();
    let r = p
        .run(&mut held, "open-file", |i| {
            Box::pin(async move { i.bindings.berth_plugin_storage_driver().call_open_file(&mut i.store, &arg).await })
        })
        .await?;
    match r {
        Ok(d) => {
            let d = take_resource(p, &mut held, d, "open-file", path)?;
            drop(held);
            regular_file(d, OpenMode::READ).map(Some).map_err(|why| stream_error(p, "open-file", path, why))
        }
        Err(sd::StorageError::Unsupported) => Ok(None),
        Err(e) => Err(plugin_error(p, "open-file", path, e)),
    }
}

/// Streams a plugin's file from `offset` from a blocking thread of its own, as the native
/// filesystem driver streams its files: no plugin code and no instance lock per chunk.
fn read_file(file: Arc<std::fs::File>, path: &str, offset: u64) -> Result<ByteStream> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata().map_err(|e| StorageError::io(path, e))?.len();
    if offset > len {
        return Err(StorageError::InvalidOffset { path: path.to_string(), offset });
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(2);
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut f: &std::fs::File = &file;
        if let Err(e) = f.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(StorageError::io(&path, e)));
            return;
        }
        loop {
            // `read_to_end` into reserved capacity fills the buffer without zeroing it first.
            let mut buf = Vec::with_capacity(READ_CHUNK);
            match f.take(READ_CHUNK as u64).read_to_end(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(StorageError::io(&path, e)));
                    return;
                }
            }
            let short = buf.len() < READ_CHUNK;
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() || short {
                return;
            }
        }
    });
    Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
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

/// How the host writes a new writer's body: into the file the plugin hands over, else into its
/// output stream, else by `writer.write` calls. A file or stream is taken out of the instance's
/// table (the guest gave up its handle), so writing it needs no lock on the instance.
async fn open_body(
    p: &StoragePlugin,
    held: &mut Held<'_>,
    handle: ResourceAny,
    at: u64,
    path: &str,
    check: &mut Option<check::Hasher>,
) -> Result<Body> {
    let file = p
        .run(held, "writer.file", |i| {
            Box::pin(
                async move { i.bindings.berth_plugin_storage_driver().writer().call_file(&mut i.store, handle).await },
            )
        })
        .await?;
    match file {
        Ok(d) => {
            let d = take_resource(p, held, d, "writer.file", path)?;
            let file = regular_file(d, OpenMode::WRITE).map_err(|why| stream_error(p, "writer.file", path, why))?;
            let sink = direct_sink(&file, at).map_err(|e| stream_error(p, "writer.file", path, e))?;
            // Checked by the file's identity after commit, not by hashing (`verify_same_file`).
            *check = None;
            return Ok(Body::Pump(Pump::start(Target::File(sink), None, Some(file))));
        }
        Err(sd::StorageError::Unsupported) => {}
        Err(e) => return Err(plugin_error(p, "writer.file", path, e)),
    }
    let body = p
        .run(held, "writer.body", |i| {
            Box::pin(
                async move { i.bindings.berth_plugin_storage_driver().writer().call_body(&mut i.store, handle).await },
            )
        })
        .await?;
    match body {
        Ok(s) => {
            let s = take_resource(p, held, s, "writer.body", path)?;
            Ok(Body::Pump(Pump::start(Target::Stream(s), check.take(), None)))
        }
        Err(sd::StorageError::Unsupported) => Ok(Body::Calls),
        Err(e) => Err(plugin_error(p, "writer.body", path, e)),
    }
}

/// Takes a resource the plugin handed over (a file descriptor, a stream) out of its instance's
/// table: the host owns it from here, and using it needs no lock on the instance.
fn take_resource<T: 'static>(
    p: &StoragePlugin,
    held: &mut Held<'_>,
    r: Resource<T>,
    op: &str,
    path: &str,
) -> Result<T> {
    held.instance().store.data_mut().table().delete(r).map_err(|e| stream_error(p, op, path, e))
}

/// The OS file behind a descriptor a plugin handed over, if it is a regular file open for
/// `mode` (the plugin has no files but those in its granted directories).
fn regular_file(d: Descriptor, mode: OpenMode) -> std::result::Result<Arc<std::fs::File>, String> {
    let Descriptor::File(f) = d else { return Err("the descriptor is a directory".into()) };
    let writing = mode.contains(OpenMode::WRITE);
    if !f.open_mode.contains(mode) || (writing && f.perms.write_not_permitted()) {
        return Err(format!("the file is not open for {}", if writing { "writing" } else { "reading" }));
    }
    match f.file.metadata() {
        Ok(m) if m.file_type().is_file() => Ok(f.file),
        Ok(_) => Err("the descriptor is not a regular file".into()),
        Err(e) => Err(format!("the descriptor cannot be inspected: {e}")),
    }
}

/// The native driver's upload sink on a plugin's file, positioned at `at`: aligned blocks go
/// straight to the device, so an upload costs no page-cache copy (or memory) on the host.
fn direct_sink(file: &std::fs::File, at: u64) -> std::io::Result<Sink> {
    use std::io::{Seek, SeekFrom};
    // A descriptor of our own (the plugin's copy was handed over): its offset and its direct
    // flag are ours to set.
    let mut own = file.try_clone()?;
    own.seek(SeekFrom::Start(at))?;
    Ok(Sink::new(own, at))
}

/// Where a pump thread writes.
enum Target {
    /// A plugin's file, through the native driver's sink.
    File(Sink),
    /// A plugin's output stream.
    Stream(DynOutputStream),
}

impl Target {
    fn write(&mut self, rt: &tokio::runtime::Handle, chunk: Bytes) -> std::result::Result<(), String> {
        match self {
            Target::File(sink) => sink.write(&chunk).map_err(|e| e.to_string()),
            // A file stream writes in place here (the store allows blocking the current
            // thread); any other kind of stream is driven by the runtime.
            Target::Stream(s) => rt.block_on(s.blocking_write_and_flush(chunk)).map_err(|e| e.to_string()),
        }
    }

    /// Writes out what is staged (a file's unaligned tail); a stream is dropped, which
    /// flushes it.
    fn close(self) -> std::result::Result<(), String> {
        match self {
            Target::File(sink) => sink.abandon().map_err(|e| e.to_string()),
            Target::Stream(_) => Ok(()),
        }
    }
}

/// How a writer's bytes reach the plugin.
enum Body {
    /// Into the file `writer.file` or the stream `writer.body` handed over, by a pump thread.
    Pump(Pump),
    /// By `writer.write` calls (the plugin has neither).
    Calls,
    /// The pump failed; every later write fails the same way.
    Failed(String),
}

/// A file or stream the host owns and a blocking thread that writes it: chunks go through a
/// bounded queue, so the request task receives and hashes the next chunk while the previous
/// one is written, and the instance stays free for other calls. For a stream, the thread also
/// feeds the writer's `check::Hasher`, off the request task.
struct Pump {
    tx: mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<std::result::Result<Option<check::Hasher>, String>>,
    /// The file written, for `Target::File`.
    file: Option<Arc<std::fs::File>>,
}

impl Pump {
    fn start(mut target: Target, mut check: Option<check::Hasher>, file: Option<Arc<std::fs::File>>) -> Pump {
        let (tx, mut rx) = mpsc::channel::<Bytes>(PUMP_QUEUE);
        let rt = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                if let Some(c) = check.as_mut() {
                    c.update(&chunk);
                }
                target.write(&rt, chunk)?;
            }
            target.close()?;
            Ok(check)
        });
        Pump { tx, task, file }
    }

    /// Queues a chunk; `Err(None)` if the thread has stopped (its error comes from `finish`).
    async fn send(&self, chunk: Bytes, deadline: Duration) -> std::result::Result<(), Option<String>> {
        match tokio::time::timeout(deadline, self.tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(format!("deadline of {} ms exceeded", deadline.as_millis()))),
        }
    }

    /// Waits until everything queued is written and the file or stream is released.
    async fn finish(self, deadline: Duration) -> std::result::Result<Option<check::Hasher>, String> {
        drop(self.tx);
        match tokio::time::timeout(deadline, self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("pump thread failed: {e}")),
            Err(_) => Err(format!("deadline of {} ms exceeded", deadline.as_millis())),
        }
    }
}

/// A file the host wrote, as it was once written and synced: which file it is, and the state
/// that any later write or truncation would change. The kernel gives a change after a
/// `stat` a fresh timestamp, so nothing can touch the file unnoticed.
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    dev: u64,
    ino: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileState {
    fn of(m: &std::fs::Metadata) -> FileState {
        use std::os::unix::fs::MetadataExt;
        FileState {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }
}

struct PluginWriter {
    plugin: Arc<StoragePlugin>,
    slot: Slot,
    /// The instance the writer lives in.
    id: u64,
    /// None once committed or cancelled.
    handle: Option<ResourceAny>,
    body: Body,
    /// Keyed hash of what this writer sent through `Body::Calls` (a pump keeps its own).
    check: Option<check::Hasher>,
    /// Size of the object when the writer opened: what this writer wrote starts there.
    start: u64,
    size: u64,
    path: String,
}

impl Drop for PluginWriter {
    /// A writer dropped without commit or cancel (request gone): cancel it in its instance,
    /// after its pump has written what was queued.
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let (p, slot, id) = (self.plugin.clone(), self.slot.clone(), self.id);
        let body = std::mem::replace(&mut self.body, Body::Calls);
        rt.spawn(async move {
            if let Body::Pump(pump) = body {
                let _ = pump.finish(p.spec.deadline).await;
            }
            if let Ok(mut held) = p.hold(&slot, Some(id)).await {
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
        // Finish the body first, so the guest sees all of it.
        let mut check = self.check.take();
        let (pumped, file) = match std::mem::replace(&mut self.body, Body::Calls) {
            Body::Pump(pump) => {
                let file = pump.file.clone();
                (pump.finish(p.spec.deadline).await.map(|c| check = c), file)
            }
            Body::Calls => (Ok(()), None),
            Body::Failed(e) => (Err(e), None),
        };
        // A file the host wrote itself is made durable by the host, before the plugin commits.
        let mut state = None;
        let pumped = match (pumped, file.clone()) {
            (Ok(()), Some(file)) if commit => {
                let synced = tokio::task::spawn_blocking(move || file.sync_data().and_then(|()| file.metadata())).await;
                match synced {
                    Ok(Ok(m)) => {
                        state = Some(FileState::of(&m));
                        Ok(())
                    }
                    Ok(Err(e)) => Err(format!("sync: {e}")),
                    Err(e) => Err(format!("sync task failed: {e}")),
                }
            }
            (r, _) => r,
        };
        let commit = commit && pumped.is_ok();
        let mut held = p.hold(&slot, Some(self.id)).await?;
        let r = finish(&p, &mut held, handle, commit).await?;
        drop(held);
        if let Err(e) = pumped {
            return Err(stream_error(&p, "write", &self.path, e));
        }
        r.map_err(|e| plugin_error(&p, if commit { "writer.commit" } else { "writer.cancel" }, &self.path, e))?;
        if !commit || self.size == self.start {
            return Ok(());
        }
        if !p.spec.verify_uploads {
            state = None;
            check = None;
        }
        match (state, check) {
            (Some(state), _) => verify_same_file(&p, &self.path, self.size, state).await?,
            (None, Some(sent)) => verify_stored(&p, &self.path, self.start, self.size - self.start, sent).await?,
            (None, None) => {}
        }
        if let Some(file) = file {
            // As the native driver does after its direct writes: a blob just pushed is usually
            // pulled soon, so have the kernel read it back in the background.
            tokio::task::spawn_blocking(move || prefetch(&file));
        }
        Ok(())
    }
}

/// Refuses a write whose object is not what the plugin's store holds.
fn not_stored(p: &StoragePlugin, path: &str, why: String) -> StorageError {
    tracing::error!(plugin = %p.name(), path, error = %why, "plugin does not store what it was given; write refused");
    StorageError::Backend(format!("plugin {}: {path}: {why}", p.name()))
}

/// Checks that what the plugin's `open-file` opens for `path` after its commit is the file the
/// host wrote and synced, `size` bytes long and untouched since: then the registry's digest of
/// what it streamed into that file is the digest of what the plugin will serve, with no need
/// to read the file back.
async fn verify_same_file(p: &Arc<StoragePlugin>, path: &str, size: u64, wrote: FileState) -> Result<()> {
    if wrote.size != size {
        return Err(not_stored(p, path, format!("the file has {} bytes after the write, not {size}", wrote.size)));
    }
    match open_file(p, path).await? {
        Some(file) => match file.metadata() {
            Ok(m) if FileState::of(&m) == wrote => Ok(()),
            Ok(m) => Err(not_stored(
                p,
                path,
                format!(
                    "open-file gives another file, or one changed since the host wrote it ({:?})",
                    FileState::of(&m)
                ),
            )),
            Err(e) => Err(StorageError::io(path, e)),
        },
        None => Err(not_stored(p, path, "it hands its writers' files over but has no open-file to check them".into())),
    }
}

/// Reads back through the plugin what a writer wrote at `offset` (`len` bytes) and compares
/// its keyed hash with that of what was sent. The plugin never sees the key nor either hash,
/// so it cannot serve other bytes that pass, short of storing the right ones.
async fn verify_stored(p: &Arc<StoragePlugin>, path: &str, offset: u64, len: u64, sent: check::Hasher) -> Result<()> {
    let mut back = sent.fresh();
    let mut stream = open_reader(p.clone(), path, offset).await?;
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        if got > len {
            break;
        }
        back.update(&chunk);
    }
    if got == len && back.finish() == sent.finish() {
        return Ok(());
    }
    let why = if got == len {
        format!("the {len} bytes read back differ from those written")
    } else {
        format!("{}{got} bytes read back, {len} written", if got > len { "more than " } else { "" })
    };
    Err(not_stored(p, path, why))
}

#[async_trait]
impl FileWriter for PluginWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        let p = self.plugin.clone();
        let handle = self
            .handle
            .ok_or_else(|| StorageError::Backend(format!("plugin {}: writer already finished", p.name())))?;
        match &mut self.body {
            Body::Pump(pump) => match pump.send(data, p.spec.deadline).await {
                Ok(()) => {}
                Err(why) => {
                    let why = match (why, std::mem::replace(&mut self.body, Body::Calls)) {
                        (Some(why), _) => why,
                        (None, Body::Pump(pump)) => pump.finish(p.spec.deadline).await.err().unwrap_or_default(),
                        (None, _) => unreachable!("the body was a pump"),
                    };
                    self.body = Body::Failed(why.clone());
                    return Err(stream_error(&p, "write", &self.path, why));
                }
            },
            Body::Failed(why) => return Err(stream_error(&p, "write", &self.path, why.clone())),
            Body::Calls => {
                if let Some(c) = self.check.as_mut() {
                    c.update(&data);
                }
                let mut held = p.hold(&self.slot, Some(self.id)).await?;
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

/// The keyed hash `verify_stored` compares: NH (UMAC's inner hash, two independent 32-bit
/// keys per 1 KiB block, collision probability 2^-64 per block) folded by a polynomial over
/// GF(2^61 - 1) at a secret point, with the length last. A fresh random key per writer, and
/// neither key nor hash ever reaches the plugin, so bytes that differ from those sent pass
/// with probability about (words hashed) / 2^61 — below 2^-38 for a 1 GiB blob. It is what
/// SHA-256 would give here at several times the speed (about 10 GB/s against 1.7), which is
/// what lets a plugin's upload be checked without hashing it twice with SHA-256.
mod check {
    use std::sync::Arc;

    use rand::Rng;

    const BLOCK: usize = 1024;
    const WORDS: usize = BLOCK / 4;
    /// The Mersenne prime 2^61 - 1.
    const P: u64 = (1 << 61) - 1;

    struct Key {
        nh: [[u32; WORDS]; 2],
        /// The polynomial's point, in [1, P).
        r: u64,
    }

    pub struct Hasher {
        key: Arc<Key>,
        acc: u64,
        len: u64,
        buf: Box<[u8; BLOCK]>,
        fill: usize,
    }

    impl Hasher {
        /// A hasher with a fresh random key.
        pub fn new() -> Hasher {
            let mut rng = rand::rng();
            let mut nh = [[0u32; WORDS]; 2];
            rng.fill(&mut nh[0][..]);
            rng.fill(&mut nh[1][..]);
            let r = rng.random_range(1..P);
            Hasher::with_key(Arc::new(Key { nh, r }))
        }

        /// An empty hasher with the same key.
        pub fn fresh(&self) -> Hasher {
            Hasher::with_key(self.key.clone())
        }

        fn with_key(key: Arc<Key>) -> Hasher {
            Hasher { key, acc: 0, len: 0, buf: Box::new([0; BLOCK]), fill: 0 }
        }

        pub fn update(&mut self, mut data: &[u8]) {
            self.len += data.len() as u64;
            if self.fill > 0 {
                let n = data.len().min(BLOCK - self.fill);
                self.buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
                self.fill += n;
                data = &data[n..];
                if self.fill < BLOCK {
                    return;
                }
                let block = *self.buf;
                self.block(&block);
                self.fill = 0;
            }
            let mut blocks = data.chunks_exact(BLOCK);
            for b in &mut blocks {
                self.block(b);
            }
            let rest = blocks.remainder();
            self.buf[..rest.len()].copy_from_slice(rest);
            self.fill = rest.len();
        }

        pub fn finish(&self) -> u64 {
            let mut h = Hasher { key: self.key.clone(), acc: self.acc, len: self.len, buf: self.buf.clone(), fill: 0 };
            if self.fill > 0 {
                h.buf[self.fill..].fill(0);
                let block = *h.buf;
                h.block(&block);
            }
            // The length tells a zero-padded tail from real zeros.
            h.absorb(self.len & 0xffff_ffff);
            h.absorb(self.len >> 32);
            h.acc
        }

        fn block(&mut self, b: &[u8]) {
            let (x, y) = (nh(b, &self.key.nh[0]), nh(b, &self.key.nh[1]));
            for w in [x & 0xffff_ffff, x >> 32, y & 0xffff_ffff, y >> 32] {
                self.absorb(w);
            }
        }

        /// `acc = acc * r + w (mod P)`, `w` < 2^32.
        fn absorb(&mut self, w: u64) {
            let x = u128::from(self.acc) * u128::from(self.key.r);
            self.acc = reduce(reduce((x as u64 & P) + (x >> 61) as u64) + w);
        }
    }

    /// `x mod P` for `x` < 2^63 + 2^61.
    fn reduce(x: u64) -> u64 {
        let s = (x & P) + (x >> 61);
        if s >= P {
            s - P
        } else {
            s
        }
    }

    /// NH over one block: sum of `(m[2i] + k[2i]) * (m[2i+1] + k[2i+1])`, 32-bit sums and
    /// 64-bit products, wrapping. Four lanes so the compiler vectorises it.
    fn nh(block: &[u8], key: &[u32; WORDS]) -> u64 {
        let mut acc = [0u64; 4];
        for (c, k) in block.chunks_exact(32).zip(key.chunks_exact(8)) {
            for j in 0..4 {
                let a = u32::from_le_bytes(c[8 * j..8 * j + 4].try_into().unwrap()).wrapping_add(k[2 * j]);
                let b = u32::from_le_bytes(c[8 * j + 4..8 * j + 8].try_into().unwrap()).wrapping_add(k[2 * j + 1]);
                acc[j] = acc[j].wrapping_add(u64::from(a) * u64::from(b));
            }
        }
        acc[0].wrapping_add(acc[1]).wrapping_add(acc[2]).wrapping_add(acc[3])
    }

    #[cfg(test)]
    mod tests {
        use super::Hasher;

        fn data(n: usize) -> Vec<u8> {
            (0..n).map(|i| (i * 131 % 251) as u8).collect()
        }

        fn hash(h: &Hasher, chunks: &[&[u8]]) -> u64 {
            let mut h = h.fresh();
            chunks.iter().for_each(|c| h.update(c));
            h.finish()
        }

        #[test]
        fn same_bytes_any_chunking() {
            let k = Hasher::new();
            let d = data(5000);
            let whole = hash(&k, &[&d]);
            assert_eq!(whole, hash(&k, &[&d[..1], &d[1..1023], &d[1023..1025], &d[1025..4096], &d[4096..]]));
            assert_eq!(whole, hash(&k, &d.chunks(7).collect::<Vec<_>>()));
        }

        #[test]
        fn different_bytes_differ() {
            let k = Hasher::new();
            let d = data(3000);
            let base = hash(&k, &[&d]);
            for i in [0, 1, 1023, 1024, 2999] {
                let mut e = d.clone();
                e[i] ^= 1;
                assert_ne!(base, hash(&k, &[&e]), "flip at {i}");
            }
            // Zero padding is not content; nor is a missing tail.
            let mut padded = d.clone();
            padded.push(0);
            assert_ne!(base, hash(&k, &[&padded]));
            assert_ne!(base, hash(&k, &[&d[..2999]]));
            assert_ne!(hash(&k, &[]), hash(&k, &[&[0]]));
            // Another key, another hash.
            assert_ne!(base, hash(&Hasher::new(), &[&d]));
        }
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

    fn with_config(mut spec: PluginSpec, pairs: &[(&str, &str)]) -> PluginSpec {
        spec.config.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        spec
    }

    /// A directory with more children than one page: every child comes back, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_pages_through_large_directories() {
        let n = LIST_PAGE as usize * 2 + 345;
        let mut want: Vec<String> = (0..n).map(|i| format!("/big/e{i:05}")).collect();
        want.push("/big/sub".to_string());
        want.sort();
        if let Some(wasm) = built("berth_storage_fs.wasm") {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("big/sub")).unwrap();
            for i in 0..n {
                std::fs::write(dir.path().join(format!("big/e{i:05}")), b"x").unwrap();
            }
            // A put-content in flight leaves a temporary name; listings never show it.
            std::fs::write(dir.path().join("big/e00001.tmp-0123456789abcdef"), b"x").unwrap();
            let d = ComponentDriver::load(spec(wasm, Some(dir.path()), 1)).await.unwrap();
            assert_eq!(d.list("/big").await.unwrap(), want);
            assert!(d.list("/nope").await.unwrap_err().is_not_found());
        }
        if let Some(wasm) = built("berth_storage_memory.wasm") {
            let d = ComponentDriver::load(spec(wasm, None, 1)).await.unwrap();
            for p in want.iter().map(|p| if p == "/big/sub" { "/big/sub/x".to_string() } else { p.clone() }) {
                d.put_content(&p, Bytes::from_static(b"x")).await.unwrap();
            }
            assert_eq!(d.list("/big").await.unwrap(), want);
        }
    }

    /// A plugin whose pages repeat a token, or never end, fails the listing; the host goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_refuses_pages_that_never_end() {
        let Some(wasm) = built("berth_hostile.wasm") else { return };
        for (mode, why) in [("list-loop", "came back twice"), ("list-endless", "more than")] {
            let d = ComponentDriver::load(with_config(spec(wasm.clone(), None, 1), &[("mode", mode)])).await.unwrap();
            d.put_content("/d/a", Bytes::from_static(b"1")).await.unwrap();
            let started = std::time::Instant::now();
            let e = d.list("/d").await.unwrap_err();
            assert!(matches!(&e, StorageError::Backend(m) if m.contains(why)), "{mode}: {e}");
            assert!(started.elapsed() < Duration::from_secs(30), "{mode}: {:?}", started.elapsed());
            assert_eq!(d.get_content("/d/a").await.unwrap(), Bytes::from_static(b"1"));
        }
    }

    async fn write(d: &ComponentDriver, path: &str, append: bool, data: Bytes) -> Result<()> {
        let mut w = d.writer(path, append).await?;
        for chunk in data.chunks(65_521) {
            w.write(data.slice_ref(chunk)).await?;
        }
        w.commit().await
    }

    /// Writes are read back through the plugin: one that serves other bytes than it was given
    /// fails the commit, while an honest one passes whatever the chunking.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_check_what_the_plugin_stored() {
        let data: Bytes = (0..3_000_017u32).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
        if let Some(wasm) = built("berth_hostile.wasm") {
            let d = ComponentDriver::load(with_config(spec(wasm, None, 1), &[("mode", "bad-data")])).await.unwrap();
            let e = write(&d, "/up/data", false, data.clone()).await.unwrap_err();
            assert!(matches!(&e, StorageError::Backend(m) if m.contains("differ")), "{e}");
            // Paths that are not blob data are not corrupted: they pass.
            write(&d, "/up/other", false, data.clone()).await.unwrap();
        }
        if let Some(wasm) = built("berth_storage_fs.wasm") {
            let dir = tempfile::tempdir().unwrap();
            let d = ComponentDriver::load(spec(wasm, Some(dir.path()), 2)).await.unwrap();
            write(&d, "/up/data", false, data.slice(..1_000_000)).await.unwrap();
            write(&d, "/up/data", true, data.slice(1_000_000..)).await.unwrap();
            assert_eq!(std::fs::read(dir.path().join("up/data")).unwrap(), data);
            // A file the host wrote is checked by identity: what open-file gives must be that
            // file, unchanged since the host synced it.
            write(&d, "/up/other", false, data.slice(..5)).await.unwrap();
            let state = |rel: &str| FileState::of(&std::fs::metadata(dir.path().join(rel)).unwrap());
            let p = d.plugin();
            verify_same_file(&p, "/up/data", data.len() as u64, state("up/data")).await.unwrap();
            assert!(verify_same_file(&p, "/up/other", data.len() as u64, state("up/data")).await.is_err());
            let before = state("up/data");
            std::fs::OpenOptions::new()
                .append(true)
                .open(dir.path().join("up/data"))
                .and_then(|mut f| std::io::Write::write_all(&mut f, b"!"))
                .unwrap();
            assert!(verify_same_file(&p, "/up/data", data.len() as u64, before).await.is_err());
        }
        // The other ways bytes reach storage-fs: its streams (hashed by the pump) and copies.
        for handover in ["stream", "copy"] {
            let Some(wasm) = built("berth_storage_fs.wasm") else { return };
            let dir = tempfile::tempdir().unwrap();
            let d = ComponentDriver::load(with_config(spec(wasm, Some(dir.path()), 2), &[("handover", handover)]))
                .await
                .unwrap();
            write(&d, "/up/data", false, data.slice(..1_000_000)).await.unwrap();
            write(&d, "/up/data", true, data.slice(1_000_000..)).await.unwrap();
            assert_eq!(std::fs::read(dir.path().join("up/data")).unwrap(), data, "{handover}");
            let back: Vec<Bytes> = d.reader("/up/data", 7).await.unwrap().map(|c| c.unwrap()).collect().await;
            assert_eq!(back.concat(), data[7..], "{handover}");
        }
    }

    /// `BERTH_SUITE_WASM=/path/to/a/memory-style/plugin.wasm` runs the suite against any component.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suite_extra_component() {
        let Some(wasm) = std::env::var_os("BERTH_SUITE_WASM").map(PathBuf::from) else { return };
        let d = ComponentDriver::load(spec(wasm, None, 1)).await.unwrap();
        crate::storage::suite::run_all(&d).await;
    }
}
