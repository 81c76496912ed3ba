//! The debug server (`http.debug.addr`): a separate plain-HTTP listener for operators and their
//! monitoring, kept off the registry's port so it can stay private behind a load balancer.
//! `/debug/health` checks storage and plugins, `/debug/vars` shows process facts (as Go's
//! expvar), the Prometheus path exposes `crate::metrics`, `/debug/pprof/profile` and
//! `/debug/heapstats` profile (`crate::profiling`), and `/admin/*` runs `crate::admin` operations.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::api::App;
use crate::config::Debug;
use crate::{admin, metrics, profiling};

/// A health check that takes longer than this is a failure: a load balancer must get an answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the storage check lists: the registry's root, which may not exist yet (NotFound still
/// proves the backend answers).
const HEALTH_PATH: &str = "/docker/registry/v2";

/// Serves the debug endpoints on `listener` until the process stops.
pub async fn serve(app: Arc<App>, config: Debug, listener: TcpListener) {
    let path = &config.prometheus.path;
    let metrics_path: Option<Arc<str>> = config.prometheus.enabled.then(|| {
        if path.starts_with('/') {
            path.as_str().into()
        } else {
            format!("/{path}").into()
        }
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "debug server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (app, metrics_path) = (app.clone(), metrics_path.clone());
        let svc = service_fn(move |req| {
            let (app, metrics_path) = (app.clone(), metrics_path.clone());
            async move { Ok::<_, Infallible>(handle(&app, metrics_path.as_deref(), req).await) }
        });
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, error = %e, "debug connection ended with an error");
            }
        });
    }
}

async fn handle<B>(app: &App, metrics_path: Option<&str>, req: Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(r) = admin::handle(app, req.method(), req.uri()).await {
        return r;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match path {
        "/debug/health" => {
            let (healthy, report) = health(app).await;
            let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json_response(status, &report)
        }
        "/debug/vars" => json_response(StatusCode::OK, &vars(app)),
        "/debug/pprof/profile" => cpu_profile(req.uri().query()).await,
        "/debug/heapstats" => json_response(StatusCode::OK, &profiling::heap_stats()),
        "/debug/events" => {
            let n = req.uri().query().and_then(|q| q.strip_prefix("n=")).and_then(|n| n.parse().ok()).unwrap_or(20);
            match app.events() {
                Some(e) => json_response(StatusCode::OK, &e.tail(n)),
                None => json_response(StatusCode::NOT_FOUND, &serde_json::json!({"error": "notifications are off"})),
            }
        }
        p if Some(p) == metrics_path => {
            crate::connections::publish();
            let mut r = Response::new(Full::new(Bytes::from(metrics::get().encode())));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /debug/pprof/profile?seconds=N`: the gzip'd pprof profile, as Go's net/http/pprof serves it.
async fn cpu_profile(query: Option<&str>) -> Response<Full<Bytes>> {
    let result = match profiling::seconds(query) {
        Ok(seconds) => profiling::cpu_profile(seconds).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(profile) => {
            let mut r = Response::new(Full::new(Bytes::from(profile)));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"profile\""));
            r
        }
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(error = %e, "CPU profile failed");
            }
            json_response(e.status(), &json!({"error": e.to_string()}))
        }
    }
}

/// Storage answers a listing of the registry root in time, and the plugins are loaded. The
/// report says `ok` per check, or the failing check's error.
pub async fn health(app: &App) -> (bool, Value) {
    let storage = match tokio::time::timeout(HEALTH_TIMEOUT, app.registry.driver().list(HEALTH_PATH)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.is_not_found() => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", HEALTH_TIMEOUT.as_secs())),
    };
    // A plugin that failed to load stops startup and a failed reload keeps the old version, so a
    // serving plugin is loaded; it is unhealthy while it cannot make new instances (its init
    // fails now, say). Its calls are exercised by the storage check when it is the driver.
    let (plugins_ok, plugins) = app.plugin_health();
    let healthy = storage.is_ok() && plugins_ok;
    let storage = match storage {
        Ok(()) => json!("ok"),
        Err(e) => {
            tracing::warn!(error = %e, "health check: storage failed");
            json!(e)
        }
    };
    (healthy, json!({"storage": storage, "plugins": plugins}))
}

/// Process facts, as Go's expvar shows them.
pub fn vars(app: &App) -> Value {
    let m = metrics::get();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": m.uptime_seconds(),
        "driver": app.registry.driver().name(),
        "requests_served": m.requests_served(),
        "requests_in_flight": m.in_flight.get(),
        "connections": crate::connections::census(),
        "rss_bytes": rss_bytes(),
        "read_only": app.options.read_only,
        "tls": app.options.tls,
        "plugins": app.plugin_report(),
        "cleanup": crate::cleanup::last_report().map(|r| json!({
            "policies": r.policies, "dry_run": r.dry_run, "repositories": r.repositories,
            "deleted": r.deleted, "would_delete": r.would_delete, "skipped": r.skipped,
            "failed_repositories": r.failed_repositories, "duration_ms": r.duration_ms,
        })),
        "notifications": app.events().map(|e| e.report()),
        "gc": {"last_run": crate::gc::report::last()},
    })
}

/// Resident set size from `/proc/self/statm` (pages), or `None` where there is no procfs.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiOptions;
    use crate::registry::Registry;
    use crate::storage::FilesystemDriver;

    #[tokio::test]
    async fn health_and_vars() {
        let dir = tempfile::tempdir().unwrap();
        let driver = Arc::new(FilesystemDriver::open(dir.path()).unwrap());
        let app = App::new(Registry::new(driver), ApiOptions::default(), None);
        let (ok, report) = health(&app).await;
        assert!(ok, "{report}");
        assert_eq!(report["storage"], "ok");
        // A file where the registry's directory should be: listing it fails, not "not found".
        std::fs::write(dir.path().join("docker"), b"not a directory").unwrap();
        let (ok, report) = health(&app).await;
        assert!(!ok, "{report}");
        assert!(report["storage"].as_str().unwrap().contains("docker"), "{report}");
        let v = vars(&app);
        assert_eq!(v["driver"], "filesystem");
        assert_eq!(v["pid"], std::process::id());
        assert!(v["rss_bytes"].as_u64().unwrap() > 0);
    }
}
