//! The HTTP server: accept loop, one hyper connection task each, graceful shutdown that lets
//! requests in flight finish. Plain HTTP is HTTP/1.1; with `http.tls` each connection completes
//! a TLS handshake first and speaks HTTP/2 or HTTP/1.1, as ALPN chose (as distribution does).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use std::path::PathBuf;

use crate::accept_backoff::AcceptBackoff;
use crate::api::{ApiOptions, App, RequestBody};
use crate::auth::Auth;
use crate::config::{Config, Driver};
use crate::connections::{watchdog, Admission, Connections, Http2Response, Ticket};
use crate::guarded_io::GuardedIo;
use crate::plugins::auth::PolicyPlugin;
use crate::plugins::{AuthKind, PluginSet, PluginSpec, Swap, World};
use crate::registry::Registry;
use crate::storage::MeteredDriver;
use crate::storage::{ComponentDriver, FilesystemDriver, InMemoryDriver, ObjectStoreDriver, StorageDriver};

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client may take to complete the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the application (storage, registry, HTTP layer) from a configuration with a native
/// storage driver (`build_with_plugins` also takes plugin drivers).
pub fn build(config: &Config) -> std::io::Result<Arc<App>> {
    if config.auth.enabled() {
        // Never serve open what the configuration says is protected.
        return Err(std::io::Error::other("auth is configured: the server must be built with build_with_plugins"));
    }
    if !config.admission.chains.is_empty() {
        // Never accept a write the configuration says must pass a policy.
        return Err(std::io::Error::other("admission is configured: the server must be built with build_with_plugins"));
    }
    Ok(app(config, native_driver(config)?, None, None))
}

/// The registry over the configured storage, for the commands that work on it beside a running
/// server (`berth cleanup`, `berth garbage-collect`): a storage plugin is loaded, nothing else.
pub async fn open_registry(config: &Config) -> std::io::Result<Registry> {
    let driver: Arc<dyn StorageDriver> = match config.driver() {
        Driver::Plugin(name) => {
            let spec = PluginSpec::from_config(config, &name).map_err(std::io::Error::other)?;
            Arc::new(ComponentDriver::load(spec).await.map_err(std::io::Error::other)?)
        }
        _ => native_driver(config)?,
    };
    Ok(Registry::new(driver).with_schema1(config.compatibility.schema1.enabled))
}

/// The native storage driver the configuration names.
fn native_driver(config: &Config) -> std::io::Result<Arc<dyn StorageDriver>> {
    let redirect = !config.storage.redirect.disable;
    let driver: Arc<dyn StorageDriver> = match config.driver() {
        Driver::Filesystem(root) => {
            let warm = config.storage.filesystem.as_ref().map_or(crate::storage::DEFAULT_WARM_BYTES, |f| f.warmbytes);
            Arc::new(
                FilesystemDriver::open(&root)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("storage.filesystem.rootdirectory {}: {e}", root.display()),
                        )
                    })?
                    .with_warm_bytes(warm),
            )
        }
        Driver::InMemory => Arc::new(InMemoryDriver::new()),
        Driver::Plugin(name) => {
            return Err(std::io::Error::other(format!("storage.plugin {name}: plugin drivers need build_with_plugins")))
        }
        Driver::S3(c) => Arc::new(ObjectStoreDriver::s3(&c, redirect).map_err(std::io::Error::other)?),
        Driver::Azure(c) => Arc::new(ObjectStoreDriver::azure(&c, redirect).map_err(std::io::Error::other)?),
        Driver::Gcs(c) => Arc::new(ObjectStoreDriver::gcs(&c, redirect).map_err(std::io::Error::other)?),
    };
    Ok(driver)
}

/// Builds the application, loading the plugins the configuration uses (auth policy,
/// admission, storage driver, notification sinks), and installs the reload hook (SIGHUP through `spawn_sighup_reload`, and the debug
/// server's `POST /admin/reload`) that re-reads `config_path` and the plugin files.
pub async fn build_with_plugins(config: &Config, config_path: Option<PathBuf>) -> std::io::Result<Arc<App>> {
    let mut plugins = PluginSet::default();
    let policy = match auth_plugin(config) {
        Some(name) => {
            let spec = PluginSpec::from_config(config, &name).map_err(std::io::Error::other)?;
            let swap = Arc::new(Swap::<AuthKind>::load(spec).await.map_err(std::io::Error::other)?);
            let p = swap.current();
            tracing::info!(plugin = %p.name(), sha256 = %p.sha256, version = %p.version, stateless = p.stateless, "auth policy plugin loaded");
            let (role, _, which) = AUTH_ROLE;
            plugins.add(role, which, swap.clone());
            Some(PolicyPlugin(swap))
        }
        None => None,
    };
    let auth = Auth::build(config, policy).await.map_err(std::io::Error::other)?;
    // Each admission plugin keeps its role while some chain still names it.
    let admission = crate::admission::Chain::load(config, |name, swap| {
        let name = name.to_string();
        let which = move |c: &Config| c.admission.plugin_names().contains(&name).then(|| name.clone());
        plugins.add_with("admission", which, swap);
    })
    .await
    .map_err(std::io::Error::other)?
    .map(Arc::new);
    if let Some(a) = &auth {
        let mode = if config.auth.token.is_some() {
            "token"
        } else if config.auth.htpasswd.is_some() {
            "htpasswd"
        } else {
            "issuer"
        };
        tracing::info!(mode, policy = config.auth.policy().unwrap_or("(none)"), "auth enabled");
        let _ = a;
    }
    let app = match config.driver() {
        Driver::Plugin(name) => {
            let spec = PluginSpec::from_config(config, &name).map_err(std::io::Error::other)?;
            let driver = Arc::new(ComponentDriver::load(spec).await.map_err(std::io::Error::other)?);
            let p = driver.plugin();
            tracing::info!(plugin = %p.name(), sha256 = %p.sha256, version = %p.version, stateless = p.stateless, path = %p.spec.path.display(), "storage plugin loaded");
            let (role, _, which) = STORAGE_ROLE;
            plugins.add(role, which, driver.reloadable());
            app(config, driver, auth, admission)
        }
        _ => app(config, native_driver(config)?, auth, admission),
    };
    for name in unused_plugins(config) {
        tracing::warn!(plugin = %name, "plugins.{name} is configured but nothing uses it; not loaded");
    }
    // Each sink plugin keeps its role while an enabled endpoint still names it.
    let sinks = crate::events::Notifier::start(config, |name, swap| {
        let name = name.to_string();
        let which = move |c: &Config| {
            c.notifications.enabled().any(|e| e.plugin.as_deref() == Some(name.as_str())).then(|| name.clone())
        };
        plugins.add_with("notification-sink", which, swap);
    });
    if let Some(n) = sinks.await.map_err(std::io::Error::other)? {
        app.set_events(n);
    }
    app.set_plugins(plugins.clone());
    let reloader = Arc::new(Reloader {
        config_path,
        running: config.clone(),
        plugins,
        app: Arc::downgrade(&app),
        lock: tokio::sync::Mutex::new(()),
    });
    app.set_reload(Arc::new(move || {
        let r = reloader.clone();
        Box::pin(async move { r.reload().await })
    }));
    if !config.cleanup.policies.is_empty() {
        let cleanup = Arc::new(crate::cleanup::Cleanup::from_config(config).map_err(std::io::Error::other)?);
        cleanup.check().await.map_err(std::io::Error::other)?;
        crate::cleanup::spawn_schedules(&app, cleanup.clone());
        app.set_cleanup(cleanup);
    }
    install_gc(&app, config);
    let purge = &config.storage.maintenance.uploadpurging;
    if purge.enabled && !config.storage.maintenance.readonly.enabled {
        crate::registry::spawn_purger(Arc::downgrade(&app), purge.age, purge.interval, purge.dryrun);
    }
    Ok(app)
}

/// Garbage collection in the server: its journal (fed by the lock poll, so runs of
/// `berth garbage-collect` in other processes are seen too) and its schedule.
fn install_gc(app: &Arc<App>, config: &Config) {
    let gc = crate::gc::Service::new(config.gc.clone(), config.storage.maintenance.readonly.enabled);
    app.set_gc(gc.clone());
    gc.journal.spawn_poller(Arc::downgrade(app));
    gc.spawn_schedule(Arc::downgrade(app));
}

/// The storage driver's role in a `PluginSet`: the plugin `storage.plugin` names.
fn storage_plugin(config: &Config) -> Option<String> {
    match config.driver() {
        Driver::Plugin(name) => Some(name),
        _ => None,
    }
}

/// A plugin role: its name, the world its plugin must implement, and which plugin a
/// configuration gives it.
type Role = (&'static str, World, crate::plugins::RoleFn);

const STORAGE_ROLE: Role = ("storage", World::StorageDriver, storage_plugin);

/// The auth policy's role: the plugin the auth mode's `policy` names.
fn auth_plugin(config: &Config) -> Option<String> {
    config.auth.policy().map(String::from)
}

const AUTH_ROLE: Role = ("auth", World::AuthPolicy, auth_plugin);

/// Every plugin role.
const ROLES: [Role; 2] = [STORAGE_ROLE, AUTH_ROLE];

/// Plugins configured under `plugins` that no role uses (warned about, not loaded).
pub fn unused_plugins(config: &Config) -> Vec<String> {
    let used: Vec<String> = used_plugins(config).into_iter().map(|(_, name, _)| name).collect();
    config.plugins.entries.keys().filter(|n| !used.contains(n)).cloned().collect()
}

/// The plugins a configuration uses, by role: `(role, plugin name, world it must implement)`.
/// Besides the single-plugin roles, each cleanup policy and each notification sink uses its
/// plugin (cleanup plugins are loaded per run, so they are not in the reload set).
pub fn used_plugins(config: &Config) -> Vec<(&'static str, String, World)> {
    let mut used: Vec<(&'static str, String, World)> =
        ROLES.iter().filter_map(|(role, world, which)| which(config).map(|n| (*role, n, *world))).collect();
    let many = config
        .cleanup
        .plugins()
        .map(|n| ("cleanup", n, World::CleanupPolicy))
        .chain(config.notifications.plugins().map(|n| ("notifications", n, World::NotificationSink)));
    for (role, name, world) in many {
        if !used.iter().any(|(r, n, _)| *r == role && n == name) {
            used.push((role, name.to_string(), world));
        }
    }
    used.extend(config.admission.plugin_names().into_iter().map(|n| ("admission", n, World::AdmissionPolicy)));
    used
}

impl AsRef<Registry> for App {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}

/// Re-reads the configuration and the plugin files; swaps in what loads, keeps the rest.
struct Reloader {
    config_path: Option<PathBuf>,
    /// The configuration the server started with: what is not reloaded still runs as it says.
    running: Config,
    plugins: PluginSet,
    app: std::sync::Weak<App>,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    async fn reload(&self) -> Result<String, String> {
        let _one_at_a_time = self.lock.lock().await;
        let result = self.reload_inner().await;
        match &result {
            Ok(what) => tracing::info!(%what, "reload done"),
            Err(e) => tracing::error!(error = %e, "reload refused; the running configuration keeps serving"),
        }
        result
    }

    async fn reload_inner(&self) -> Result<String, String> {
        let loaded = Config::load(self.config_path.as_deref(), std::env::vars())
            .map_err(|e| format!("invalid configuration: {e}"))?;
        let serving = if self.plugins.is_empty() {
            "no plugins in use; nothing reloaded".to_string()
        } else {
            let (worlds, serving) = self.plugins.reload(&loaded.config).await.map_err(|e| e.to_string())?;
            // Cached manifests came from the previous storage backend.
            if worlds.contains(&World::StorageDriver) {
                if let Some(app) = self.app.upgrade() {
                    app.registry.storage_changed();
                }
            }
            serving
        };
        // Said, not silently ignored: an operator who edited them expects them to apply.
        let stale = self.running.restart_needed_for(&loaded.config);
        if stale.is_empty() {
            return Ok(serving);
        }
        let stale = stale.join(", ");
        tracing::warn!(sections = %stale, "reload: these sections changed; they apply at the next restart");
        Ok(format!("{serving}; not applied until a restart: {stale}"))
    }
}

/// Reloads on every SIGHUP.
pub fn spawn_sighup_reload(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload with POST /admin/reload on the debug server");
            return;
        }
    };
    let app = Arc::downgrade(&app);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(app) = app.upgrade() else { return };
            tracing::info!("SIGHUP: reloading");
            let _ = app.reload().await;
        }
    });
}

/// The HTTP layer over `driver`, timed by `MeteredDriver` for the storage metrics.
fn app(
    config: &Config,
    driver: Arc<dyn StorageDriver>,
    auth: Option<Arc<Auth>>,
    admission: Option<Arc<crate::admission::Chain>>,
) -> Arc<App> {
    let options = ApiOptions {
        read_only: config.storage.maintenance.readonly.enabled,
        delete_enabled: config.storage.delete.enabled,
        relative_urls: config.http.relativeurls,
        max_in_flight: config.http.maxinflight,
        catalog_max_entries: config.catalog.maxentries,
        tls: config.http.tls.is_some(),
        manifest_memory: config.http.manifestmemory,
    };
    let registry = Registry::new(Arc::new(MeteredDriver::new(driver)))
        .with_schema1(config.compatibility.schema1.enabled)
        .with_admission(admission);
    App::new(registry, options, auth)
}

/// What the server allows each client connection: `http.timeouts`, `http.maxconnections` and
/// `http.maxheaders`.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub timeouts: crate::config::Timeouts,
    /// 0: derived from the open-file limit (`Connections::new`).
    pub max_connections: usize,
    pub max_headers: usize,
}

impl ConnectionLimits {
    pub fn from_config(http: &crate::config::Http) -> Self {
        ConnectionLimits {
            timeouts: http.timeouts.clone(),
            max_connections: http.maxconnections,
            max_headers: http.maxheaders.max(1),
        }
    }
}

/// Serves until `shutdown` resolves, then drains connections. With `tls`, each connection
/// first completes a TLS handshake in its own task; one that fails is logged at debug level and
/// dropped, as a client's mistake.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let connections = Connections::new(limits.max_connections);
    tracing::info!(max_connections = connections.cap(), "connection limits");
    crate::heap_trim::spawn(&connections.trim);
    let limits = Arc::new(limits);
    let mut backoff = AcceptBackoff::default();
    let mut refused = RefusalLog::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors: an idle connection gives one back.
                        if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                            connections.shed_idle();
                        }
                        let wait = backoff.failed(&e);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = &mut shutdown => break,
                        }
                        continue;
                    }
                };
                backoff.succeeded();
                let ticket = match connections.admit() {
                    Admission::Admitted(t) => t,
                    Admission::Refused => {
                        crate::metrics::get().connections_refused.inc();
                        refused.refused(peer, connections.cap());
                        if tls.is_none() {
                            // Best effort, never waits: the socket buffer takes this at once.
                            let _ = stream.try_write(REFUSED_ANSWER.as_bytes());
                        }
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                let limits = limits.clone();
                tokio::spawn(async move {
                    let result = match tls {
                        None => serve_connection(app, stream, peer, Protocol::Http1, watcher, ticket, &limits).await,
                        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let h2 = stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2);
                                let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
                                serve_connection(app, stream, peer, protocol, watcher, ticket, &limits).await
                            }
                            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        },
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: waiting for requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
}

/// The most of a request an HTTP/1 connection reads into one buffer: an upload's body arrives
/// in pieces this size, and each piece queued between the socket, the hash and the disk is its
/// own allocation. hyper's default (about 400 KiB) made a streaming 256 MiB push hold 4-5 MiB
/// more at its peak than this does, at the same throughput. It also caps a request's head
/// (request line and headers), four times nginx's largest default.
const MAX_READ_BUFFER: usize = 128 << 10;

/// What a plain-HTTP client refused at `http.maxconnections` reads before the close.
const REFUSED_ANSWER: &str = concat!(
    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n",
    "connection: close\r\ndocker-distribution-api-version: registry/2.0\r\ncontent-length: 95\r\n\r\n",
    r#"{"errors":[{"code":"UNAVAILABLE","message":"too many open connections (http.maxconnections)"}]}"#,
);

/// Logs refused connections at most once every 10 s, with how many since the last line.
#[derive(Default)]
struct RefusalLog {
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn refused(&mut self, peer: std::net::SocketAddr, cap: usize) {
        let now = tokio::time::Instant::now();
        if self.last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            tracing::warn!(%peer, cap, not_logged = self.unlogged, "connection refused: http.maxconnections reached and none idle");
            self.last = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
    }
}

/// The streams one HTTP/2 connection may have open at once (hyper's default is 200; RFC 9113
/// asks for at least 100). With [`H2_SEND_BUFFER`] it bounds what a client that reads nothing
/// makes one connection hold: each stream keeps its buffer and the chunk it is sending (at
/// most 128 KiB from the filesystem, whose reader lets go of what it read ahead once the
/// stream stalls), about 370 KiB of RSS a stream; 36 MiB for the connection (measured:
/// `test_tls.py`), where hyper's 200 streams let it reach twice that. How long is bounded by
/// the watchdog (`Closed::Stalled`).
const H2_MAX_STREAMS: u32 = 100;

/// The bytes of a response an HTTP/2 stream buffers beyond what the client's window lets out
/// (hyper's default: 400 KiB). The socket's own buffer keeps a fast download fed.
const H2_SEND_BUFFER: usize = 64 << 10;

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// Negotiated through ALPN on a TLS connection.
    Http2,
}

/// Serves one connection (plain or TLS) under graceful shutdown, until it ends or its watchdog
/// closes it (header or idle timeout, or shed for a newcomer).
async fn serve_connection<S>(
    app: Arc<App>,
    stream: S,
    peer: std::net::SocketAddr,
    protocol: Protocol,
    watcher: hyper_util::server::graceful::Watcher,
    ticket: Ticket,
    limits: &ConnectionLimits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = ticket.state.clone();
    if protocol == Protocol::Http2 {
        state.set_http2();
    }
    let stall = limits.timeouts.bodystall;
    let svc_state = state.clone();
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let busy = svc_state.begin_request();
        let mut req = req.map(|b| RequestBody::new(b, stall));
        // HTTP/2 carries the host in the `:authority` pseudo-header, which hyper puts in the
        // URI; the API builds absolute URLs from `Host`, as HTTP/1.1 sends it.
        if !req.headers().contains_key(http::header::HOST) {
            if let Some(host) = req.uri().authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        req.extensions_mut().insert(crate::api::PeerAddr(peer));
        let app = app.clone();
        async move {
            let resp = app.serve(req).await?;
            // The connection stays busy until the response body is done (or dropped).
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                match protocol {
                    Protocol::Http2 => Http2Response::new(b, busy).boxed_unsync(),
                    Protocol::Http1 => b
                        .map_frame(move |f| {
                            let _ = &busy;
                            f
                        })
                        .boxed_unsync(),
                }
            }))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Size flow-control windows to the measured bandwidth-delay product: a fixed window caps a
    // single blob push or pull over a long path.
    builder.http2().adaptive_window(true).max_concurrent_streams(H2_MAX_STREAMS).max_send_buf_size(H2_SEND_BUFFER);
    // Header and idle timeouts are the watchdog's (hyper's own header timer also runs between
    // keep-alive requests, which would make it an idle timeout as well).
    builder.http1().max_headers(limits.max_headers).max_buf_size(MAX_READ_BUFFER);
    let builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
    };
    let io = GuardedIo::new(stream, state.clone(), stall);
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc).into_owned());
    let t = &limits.timeouts;
    tokio::select! {
        r = conn => r,
        why = watchdog(&state, t.header, t.idle, t.bodystall) => {
            tracing::debug!(%peer, reason = %why, "connection closed");
            let reason = crate::metrics::ConnectionClosedLabels { reason: why.label() };
            crate::metrics::get().connections_closed.get_or_create(&reason).inc();
            if why == crate::connections::Closed::Stalled {
                ticket.held_much();
            }
            drop(ticket);
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
