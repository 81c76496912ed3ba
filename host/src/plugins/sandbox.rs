//! What a plugin's store is allowed: its WASI context (only the granted directories, only the
//! granted `ip:port`s, no environment, no arguments, stdin closed, stdout and stderr into the
//! host's log with the plugin's name), its memory cap, and bounds on everything else a guest
//! can allocate. Every default here is "nothing" unless the configuration grants it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::limits::{
    LOG_LINE_MAX, STDERR_BUFFER_MAX, STORE_INSTANCES, STORE_MEMORIES, STORE_TABLES, STORE_TABLE_ELEMENTS,
};
use super::{PluginError, PluginSpec};

/// State of one plugin store.
pub struct State {
    pub(crate) plugin: Arc<str>,
    /// When the current call must end (`Pool::run` sets it before every call).
    pub(crate) call_deadline: Instant,
    /// A guest call started and has not returned. Still set when no call is running means the
    /// call's future was dropped mid-way (its request was cancelled): wasmtime then refuses to
    /// enter the instance again, so the pool replaces it.
    pub(crate) in_call: bool,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
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

/// The memory cap was reached: the error a refused `memory.grow` traps with, so a failed call
/// is told apart by type (and by `Limiter::memory_denied`), never by its message.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {0} bytes reached")]
pub struct MemoryCapReached(pub usize);

/// The store's resource limiter: the configured memory cap and the fixed bounds of
/// `limits`, remembering whether the cap was hit.
pub struct Limiter {
    memory_bytes: usize,
    pub(crate) memory_denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_denied = true;
            return Err(MemoryCapReached(self.memory_bytes).into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= STORE_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        STORE_INSTANCES
    }

    fn tables(&self) -> usize {
        STORE_TABLES
    }

    fn memories(&self) -> usize {
        STORE_MEMORIES
    }
}

/// A new store for `spec` with its deadline armed. Granted directories that do not exist yet
/// are created (as `rootdirectory` is for the native driver).
pub fn new_store(engine: &Engine, spec: &PluginSpec) -> Result<Store<State>, PluginError> {
    let mut b = WasiCtxBuilder::new();
    let name: Arc<str> = Arc::from(spec.name.as_str());
    b.stdout(GuestOutput { plugin: name.clone(), stream: "stdout" });
    b.stderr(GuestOutput { plugin: name.clone(), stream: "stderr" });
    b.allow_blocking_current_thread(true);
    for d in &spec.dirs {
        let perms = if d.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        if !d.read_only {
            std::fs::create_dir_all(&d.host)
                .map_err(|e| PluginError::Grant { reason: format!("{}: {e}", d.host.display()) })?;
        }
        b.preopened_dir(&d.host, &d.guest, perms)
            .map_err(|e| PluginError::Grant { reason: format!("{} -> {}: {e:#}", d.host.display(), d.guest) })?;
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
    let limiter = Limiter { memory_bytes: spec.memory_bytes, memory_denied: false };
    let state = State {
        plugin: name,
        call_deadline: Instant::now() + spec.deadline,
        in_call: false,
        wasi: b.build(),
        table: ResourceTable::new(),
        limiter,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // At every epoch tick a running guest yields to the executor (a spinning plugin must not
    // hold one of the runtime's few worker threads, and every request queued behind it), and
    // traps once its call's deadline has passed.
    store.epoch_deadline_callback(|ctx| {
        Ok(if Instant::now() >= ctx.data().call_deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        })
    });
    store.set_epoch_deadline(1);
    Ok(store)
}

/// A guest's stdout or stderr (a Rust panic message lands here): each line becomes a log line
/// tagged with the plugin's name. Written synchronously during the guest call, so the line
/// also carries the span of the request that made the call (its request id).
struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineLogger { plugin: self.plugin.clone(), stream: self.stream, pending: Vec::new() })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.2 is linked, which uses `p2_stream`; anything else writes nowhere.
        Box::new(tokio::io::sink())
    }
}

struct LineLogger {
    plugin: Arc<str>,
    stream: &'static str,
    pending: Vec<u8>,
}

impl LineLogger {
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text: String = text.trim_end().chars().take(LOG_LINE_MAX).collect();
        if !text.is_empty() {
            tracing::warn!(target: "plugin", plugin = %self.plugin, stream = self.stream, "{text}");
        }
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest);
    }
}

#[async_trait::async_trait]
impl Pollable for LineLogger {
    async fn ready(&mut self) {}
}

impl OutputStream for LineLogger {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut rest = &bytes[..];
        while let Some(n) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut self.pending);
            line.extend_from_slice(&rest[..n]);
            self.emit(&line);
            rest = &rest[n + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > STDERR_BUFFER_MAX {
            let full = std::mem::take(&mut self.pending);
            self.emit(&full);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_BUFFER_MAX)
    }
}
