//! The HTTP/1.1 server: accept loop, one hyper connection task each (behind a TLS handshake when
//! `http.tls` is set), graceful shutdown that lets requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use std::path::PathBuf;

use crate::api::{ApiOptions, App};
use crate::config::{Config, Driver};
use crate::plugins::PluginSpec;
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
    let redirect = !config.storage.redirect.disable;
    let driver: Arc<dyn StorageDriver> = match config.driver() {
        Driver::Filesystem(root) => Arc::new(FilesystemDriver::open(&root).map_err(|e| {
            std::io::Error::new(e.kind(), format!("storage.filesystem.rootdirectory {}: {e}", root.display()))
        })?),
        Driver::InMemory => Arc::new(InMemoryDriver::new()),
        Driver::Plugin(name) => {
            return Err(std::io::Error::other(format!("storage.plugin {name}: plugin drivers need build_with_plugins")))
        }
        Driver::S3(c) => Arc::new(ObjectStoreDriver::s3(&c, redirect).map_err(std::io::Error::other)?),
        Driver::Azure(c) => Arc::new(ObjectStoreDriver::azure(&c, redirect).map_err(std::io::Error::other)?),
        Driver::Gcs(c) => Arc::new(ObjectStoreDriver::gcs(&c, redirect).map_err(std::io::Error::other)?),
    };
    Ok(app(config, driver))
}

/// Builds the application, loading a storage driver plugin if the configuration names one, and
/// installs the reload hook (`POST /admin/reload`, and SIGHUP through `spawn_sighup_reload`)
/// that re-reads `config_path` and the plugin files.
pub async fn build_with_plugins(config: &Config, config_path: Option<PathBuf>) -> std::io::Result<Arc<App>> {
    let (app, plugin) = match config.driver() {
        Driver::Plugin(name) => {
            let spec = PluginSpec::from_config(config, &name).map_err(std::io::Error::other)?;
            let driver = Arc::new(ComponentDriver::load(spec).await.map_err(std::io::Error::other)?);
            let p = driver.plugin();
            tracing::info!(plugin = %p.name(), sha256 = %p.sha256, path = %p.spec.path.display(), "storage plugin loaded");
            (app(config, driver.clone()), Some(driver))
        }
        _ => (build(config)?, None),
    };
    if let Some(driver) = plugin.clone() {
        app.set_plugin_report(Arc::new(move || {
            let p = driver.plugin();
            let facts = serde_json::json!({"world": "storage-driver", "sha256": p.sha256, "path": p.spec.path});
            serde_json::Map::from_iter([(p.name().to_string(), facts)])
        }));
    }
    let reloader = Arc::new(Reloader {
        config_path,
        driver: plugin,
        app: Arc::downgrade(&app),
        lock: tokio::sync::Mutex::new(()),
    });
    app.set_reload(Arc::new(move || {
        let r = reloader.clone();
        Box::pin(async move { r.reload().await })
    }));
    let purge = &config.storage.maintenance.uploadpurging;
    if purge.enabled && !config.storage.maintenance.readonly.enabled {
        crate::registry::spawn_purger(Arc::downgrade(&app), purge.age, purge.interval, purge.dryrun);
    }
    Ok(app)
}

impl AsRef<Registry> for App {
    fn as_ref(&self) -> &Registry {
        &self.registry
    }
}

/// Re-reads the configuration and the plugin files; swaps in what loads, keeps the rest.
struct Reloader {
    config_path: Option<PathBuf>,
    driver: Option<Arc<ComponentDriver>>,
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
        let config = loaded.config;
        let Some(driver) = &self.driver else {
            return Ok("no plugins in use; nothing reloaded".into());
        };
        let Driver::Plugin(name) = config.driver() else {
            return Err("switching from a storage plugin to a native driver needs a restart".into());
        };
        let spec = PluginSpec::from_config(&config, &name)?;
        let what = driver.reload(spec).await?;
        // Cached manifests came from the previous backend.
        if let Some(app) = self.app.upgrade() {
            app.registry.storage_changed();
        }
        Ok(format!("storage plugin {what}"))
    }
}

/// Reloads on every SIGHUP.
pub fn spawn_sighup_reload(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload with POST /admin/reload");
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
fn app(config: &Config, driver: Arc<dyn StorageDriver>) -> Arc<App> {
    let options = ApiOptions {
        read_only: config.storage.maintenance.readonly.enabled,
        delete_enabled: config.storage.delete.enabled,
        relative_urls: config.http.relativeurls,
        max_in_flight: config.http.maxinflight,
        tls: config.http.tls.is_some(),
    };
    let registry =
        Registry::new(Arc::new(MeteredDriver::new(driver))).with_schema1(config.compatibility.schema1.enabled);
    App::new(registry, options)
}

/// Serves until `shutdown` resolves, then drains connections. With `tls`, each connection
/// first completes a TLS handshake in its own task; one that fails is logged at debug level and
/// dropped, as a client's mistake.
pub async fn serve(app: Arc<App>, listener: TcpListener, tls: Option<TlsAcceptor>, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let watcher = graceful.watcher();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let result = match tls {
                        None => serve_connection(app, stream, peer, watcher).await,
                        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(app, stream, peer, watcher).await,
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

/// Serves one connection (plain or TLS) under graceful shutdown.
async fn serve_connection<S>(
    app: Arc<App>,
    stream: S,
    peer: std::net::SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) -> hyper::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer);
        app.clone().serve(req)
    });
    let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc);
    watcher.watch(conn).await
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
