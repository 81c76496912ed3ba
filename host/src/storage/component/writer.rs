//! Writing through a storage plugin: into the file it hands over (direct I/O by the host), else
//! into its output stream, else by 1 MiB `write` calls; each commit verified (`verify`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::ResourceAny;
use wasmtime_wasi::p2::DynOutputStream;
use wasmtime_wasi::OpenMode;

use super::check;
use super::handover::{direct_sink, regular_file, take_resource};
use super::verify::{verify_same_file, verify_stored, FileState};
use super::{plugin_error, sd, stream_error, StoragePlugin, PUMP_QUEUE, WRITE_CHUNK};
use crate::plugins::{Failure, Held, Slot, StorageKind};
use crate::storage::parking::{next_or_park, Job, Parking};
use crate::storage::sink::{prefetch, Sink};
use crate::storage::{FileWriter, Result, StorageError};

pub(super) async fn finish(
    p: &StoragePlugin,
    held: &mut Held<'_, StorageKind>,
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
pub(super) async fn open_body(
    p: &StoragePlugin,
    held: &mut Held<'_, StorageKind>,
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

pub(super) enum Target {
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
pub(super) enum Body {
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
/// feeds the writer's `check::Hasher`, off the request task. When no chunk comes for
/// `PARK_AFTER` (a client that stopped sending), the thread parks the job and ends, as the
/// native driver's writer does (`storage::parking`): a stalled upload holds no thread.
pub(super) struct Pump {
    tx: mpsc::Sender<Bytes>,
    done: oneshot::Receiver<PumpResult>,
    parking: Arc<Parking<PumpJob>>,
    /// The file written, for `Target::File`.
    file: Option<Arc<std::fs::File>>,
}

type PumpResult = std::result::Result<Option<check::Hasher>, String>;

/// What the pump's thread works on, parked between threads while no chunk comes.
struct PumpJob {
    rx: mpsc::Receiver<Bytes>,
    target: Target,
    check: Option<check::Hasher>,
    done: oneshot::Sender<PumpResult>,
}

impl Job for PumpJob {
    fn run(mut self, parking: &Arc<Parking<Self>>) {
        let rt = tokio::runtime::Handle::current();
        loop {
            let Some((job, chunk)) = next_or_park(self, parking, &rt, |j| &mut j.rx) else { return };
            self = job;
            let Some(chunk) = chunk else {
                let result = self.target.close().map(|()| self.check);
                let _ = self.done.send(result);
                return;
            };
            if let Some(c) = self.check.as_mut() {
                c.update(&chunk);
            }
            if let Err(e) = self.target.write(&rt, chunk) {
                let _ = self.done.send(Err(e));
                return;
            }
        }
    }
}

impl Pump {
    fn start(target: Target, check: Option<check::Hasher>, file: Option<Arc<std::fs::File>>) -> Pump {
        let (tx, rx) = mpsc::channel::<Bytes>(PUMP_QUEUE);
        let (done_tx, done) = oneshot::channel();
        let parking = Parking::start(PumpJob { rx, target, check, done: done_tx });
        Pump { tx, done, parking, file }
    }

    /// Queues a chunk; `Err(None)` if the thread has stopped (its error comes from `finish`).
    async fn send(&self, chunk: Bytes, deadline: Duration) -> std::result::Result<(), Option<String>> {
        let sent = tokio::time::timeout(deadline, self.tx.send(chunk)).await;
        self.parking.resume();
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(format!("deadline of {} ms exceeded", deadline.as_millis()))),
        }
    }

    /// Waits until everything queued is written and the file or stream is released.
    async fn finish(self, deadline: Duration) -> PumpResult {
        let Pump { tx, done, parking, .. } = self;
        drop(tx);
        parking.resume();
        match tokio::time::timeout(deadline, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("pump thread failed".to_string()),
            Err(_) => Err(format!("deadline of {} ms exceeded", deadline.as_millis())),
        }
    }
}

pub(super) struct PluginWriter {
    pub(super) plugin: Arc<StoragePlugin>,
    pub(super) slot: Slot<StorageKind>,
    /// The instance the writer lives in.
    pub(super) id: u64,
    /// None once committed or cancelled.
    pub(super) handle: Option<ResourceAny>,
    pub(super) body: Body,
    /// Keyed hash of what this writer sent through `Body::Calls` (a pump keeps its own).
    pub(super) check: Option<check::Hasher>,
    /// Size of the object when the writer opened: what this writer wrote starts there.
    pub(super) start: u64,
    pub(super) size: u64,
    pub(super) path: String,
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
            tokio::task::spawn_blocking(move || prefetch(&file, 0));
        }
        Ok(())
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
