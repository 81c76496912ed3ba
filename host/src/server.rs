//! The HTTP/1.1 server: accept loop, one hyper connection task each, graceful shutdown that lets
//! requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::api::{ApiOptions, App};
use crate::config::{Config, Driver};
use crate::registry::Registry;
use crate::storage::{FilesystemDriver, InMemoryDriver, StorageDriver};

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the application (storage, registry, HTTP layer) from a configuration.
pub fn build(config: &Config) -> std::io::Result<Arc<App>> {
    let driver: Arc<dyn StorageDriver> = match config.driver() {
        Driver::Filesystem(root) => Arc::new(FilesystemDriver::open(&root).map_err(|e| {
            std::io::Error::new(e.kind(), format!("storage.filesystem.rootdirectory {}: {e}", root.display()))
        })?),
        Driver::InMemory => Arc::new(InMemoryDriver::default()),
    };
    let options = ApiOptions {
        read_only: config.storage.maintenance.readonly.enabled,
        delete_enabled: config.storage.delete.enabled,
        relative_urls: config.http.relativeurls,
    };
    Ok(App::new(Registry::new(driver), options))
}

/// Serves until `shutdown` resolves, then drains connections.
pub async fn serve(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
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
                let svc = service_fn(move |req| app.clone().serve(req));
                let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
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

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
