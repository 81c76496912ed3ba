//! Reading through a storage plugin: its file when it hands one over (read by the host, no
//! plugin code per chunk), else its input stream pumped per chunk, else its whole content.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, StreamError};
use wasmtime_wasi::OpenMode;

use super::handover::{regular_file, take_resource};
use super::{plugin_error, sd, stream_error, StoragePlugin, READ_CHUNK};
use crate::plugins::{Slot, StorageKind};
use crate::storage::{ByteStream, Result, StorageError};

pub(super) async fn get_content(p: &StoragePlugin, path: &str) -> Result<Bytes> {
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
pub(super) async fn open_reader(p: Arc<StoragePlugin>, path: &str, offset: u64) -> Result<ByteStream> {
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
pub(super) async fn open_file(p: &StoragePlugin, path: &str) -> Result<Option<Arc<std::fs::File>>> {
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

/// Streams a plugin's file from `offset` as the native filesystem driver streams its files
/// (`file_stream`: no thread held while the client does not read): no plugin code and no
/// instance lock per chunk.
pub(super) fn read_file(file: Arc<std::fs::File>, path: &str, offset: u64) -> Result<ByteStream> {
    let len = file.metadata().map_err(|e| StorageError::io(path, e))?.len();
    if offset > len {
        return Err(StorageError::InvalidOffset { path: path.to_string(), offset });
    }
    Ok(crate::storage::file_stream::stream(file, offset, path))
}

/// An open reader: the plugin's input stream, in the table of the instance that opened it.
pub(super) struct Reader {
    p: Arc<StoragePlugin>,
    slot: Slot<StorageKind>,
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
pub(super) fn pump_reader(r: Reader) -> ByteStream {
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
