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
//! The loaded plugin sits in a `Swap` (`crate::plugins`): `reload` loads and initialises the
//! new version first and swaps only on success; calls in flight finish on the version they
//! started with.
//!
//! One concern per module: `reader` and `writer` move bytes, `handover` takes the files and
//! streams a plugin hands over, `verify` and `check` make sure it stored what it was given.

mod check;
mod handover;
mod reader;
#[cfg(test)]
mod tests;
mod verify;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use self::reader::{get_content, open_reader};
use self::writer::{finish, open_body, PluginWriter};
use super::page::Selection;
use super::{validate_path, ByteStream, FileInfo, FileWriter, ListPage, Result, StorageDriver, StorageError};
use crate::plugins::wit::latest::storage::exports::berth::plugin::storage_driver as sd;
use crate::plugins::PluginSpec;
use crate::plugins::{Failure, Pool, Reloadable, StorageKind, Swap};

/// One loaded version of a storage plugin.
pub type StoragePlugin = Pool<StorageKind>;

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

/// The storage adapter: a `StorageDriver` over a `storage-driver-plugin`.
pub struct ComponentDriver {
    swap: Arc<Swap<StorageKind>>,
}

impl From<Failure> for StorageError {
    fn from(f: Failure) -> Self {
        StorageError::Backend(f.to_string())
    }
}

impl ComponentDriver {
    /// Loads the plugin; fails if it does not compile, link or initialise.
    pub async fn load(spec: PluginSpec) -> std::result::Result<Self, Failure> {
        Ok(ComponentDriver { swap: Arc::new(Swap::load(spec).await?) })
    }

    /// The version serving new calls.
    pub fn plugin(&self) -> Arc<StoragePlugin> {
        self.swap.current()
    }

    /// The plugin for the server's `PluginSet` (reload, health, vars).
    pub fn reloadable(&self) -> Arc<dyn Reloadable> {
        self.swap.clone()
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

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        validate_path(path)?;
        let mut entries = Vec::new();
        self.each_page(path, |page| entries.extend(page)).await?;
        Ok(children_only(&self.plugin(), path, entries))
    }

    /// The plugin's pages, read through with only the `limit` smallest names kept: bounded in
    /// memory however large the directory. The WIT's `start-after` takes only a token the
    /// plugin handed out, so a page after a name reads the listing from its start.
    async fn list_page(&self, path: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        validate_path(path)?;
        let p = self.plugin();
        let mut sel = Selection::new(start_after, limit);
        self.each_page(path, |page| {
            for name in children_only(&p, path, page).iter().filter_map(|e| e.rsplit('/').next()) {
                sel.offer(name);
            }
        })
        .await?;
        Ok(sel.finish())
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

impl ComponentDriver {
    /// Reads the plugin's pages until it says there are no more, handing each to `each`, and
    /// refuses a listing that does not end: a token seen before, a page larger than asked for,
    /// or more pages or entries than `MAX_LIST_PAGES` / `MAX_LIST_ENTRIES`.
    async fn each_page(&self, path: &str, mut each: impl FnMut(Vec<String>) + Send) -> Result<()> {
        let p = self.plugin();
        let broken = |why: String| {
            tracing::error!(plugin = %p.name(), path, error = %why, "plugin listing refused");
            StorageError::Backend(format!("plugin {}: list {path}: {why}", p.name()))
        };
        let mut total = 0;
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
            total += page.entries.len();
            if total > MAX_LIST_ENTRIES {
                return Err(broken(format!("more than {MAX_LIST_ENTRIES} entries")));
            }
            each(page.entries);
            match page.next {
                None => return Ok(()),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(broken(format!("the continuation token {next:?} came back twice")))
                }
                Some(next) => token = Some(next),
            }
        }
        Err(broken(format!("more than {MAX_LIST_PAGES} pages")))
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
