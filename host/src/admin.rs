//! Admin operations, served on the debug listener (`http.debug.addr`) and never on the registry's
//! port: behind a reverse proxy on the same host every client looks like loopback, so the peer
//! address cannot tell an operator from the internet. Who may reach the debug port is the
//! operator's network decision. Each operation is one `Op`: its path, its method, its handler.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::Full;
use serde_json::json;

use crate::api::App;
use crate::debug::json_response;

/// An admin operation, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Re-read the configuration and plugin files (as SIGHUP does).
    Reload,
    /// Run the cleanup policies now (`?policy=NAME&repo=GLOB&dry-run=true`).
    Cleanup,
    /// Run a garbage collection now (`?dry-run=true&delete-untagged=true`).
    Gc,
}

impl Op {
    fn parse(path: &str) -> Option<Op> {
        match path {
            "/admin/reload" => Some(Op::Reload),
            "/admin/cleanup" => Some(Op::Cleanup),
            "/admin/gc" => Some(Op::Gc),
            _ => None,
        }
    }

    /// Every operation changes state, so none answers a GET a crawler or a prefetch could send.
    fn method(self) -> Method {
        match self {
            Op::Reload | Op::Cleanup | Op::Gc => Method::POST,
        }
    }
}

/// Answers an admin request, or `None` when `path` is no admin operation.
pub async fn handle(app: &App, method: &Method, uri: &Uri) -> Option<Response<Full<Bytes>>> {
    let path = uri.path();
    let op = Op::parse(path)?;
    if *method != op.method() {
        let mut r =
            json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": format!("use {} {path}", op.method())}));
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_str(op.method().as_str()).expect("a method name"));
        return Some(r);
    }
    Some(match op {
        Op::Reload => reload(app).await,
        Op::Cleanup => cleanup(app, uri.query().unwrap_or("")).await,
        Op::Gc => gc(app, uri.query()).await,
    })
}

/// `POST /admin/cleanup`: runs the enabled policies (or `policy`), over the repositories `repo`
/// matches, deleting unless `dry-run=true`; 200 with the report, 400 for a bad parameter, 404
/// without policies, 409 when the run is refused (read-only storage), 500 when it failed.
async fn cleanup(app: &App, query: &str) -> Response<Full<Bytes>> {
    let Some(cleanup) = app.cleanup() else {
        return json_response(StatusCode::NOT_FOUND, &json!({"error": "no cleanup policies are configured"}));
    };
    let mut options = crate::cleanup::Options::default();
    for (k, v) in crate::api::form(query) {
        match k.as_str() {
            "policy" => options.policy = Some(v),
            "dry-run" | "dryrun" => options.dry_run = matches!(v.as_str(), "true" | "1" | ""),
            "repo" => match options.only_repositories(&v) {
                Ok(o) => options = o,
                Err(e) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": format!("repo: {e}")})),
            },
            other => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("unknown parameter {other:?}")}),
                )
            }
        }
    }
    use crate::cleanup::CleanupError as E;
    match cleanup.run(&app.registry, &options).await {
        Ok(mut report) => {
            // A dry run asks what it would buy: the estimate costs one scan of the registry.
            if report.dry_run {
                report.gc_would_free = crate::cleanup::gc_would_free(&app.registry, &report).await.ok();
            }
            json_response(StatusCode::OK, &serde_json::to_value(&report).unwrap_or_default())
        }
        Err(e @ E::UnknownPolicy(_)) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
        Err(e @ E::ReadOnly) => json_response(StatusCode::CONFLICT, &json!({"error": e.to_string()})),
        Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e.to_string()})),
    }
}

/// `POST /admin/reload`: 200 `{"reloaded":true,"serving":...}`, or 500 with `reloaded:false`
/// and why, while the running configuration keeps serving.
async fn reload(app: &App) -> Response<Full<Bytes>> {
    match app.reload().await {
        Ok(what) => json_response(StatusCode::OK, &json!({"reloaded": true, "serving": what})),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"reloaded": false, "error": format!("reload refused: {e}")}),
        ),
    }
}

/// `POST /admin/gc[?dry-run=true][&delete-untagged=true]`: runs a garbage collection and answers
/// its report (200); 409 while another run holds the lock; 400 for an unknown parameter.
async fn gc(app: &App, query: Option<&str>) -> Response<Full<Bytes>> {
    let Some(svc) = app.gc() else {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "garbage collection is not set up"}));
    };
    let (mut dry_run, mut delete_untagged) = (false, false);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        let flag = match v {
            "true" | "1" | "" => true,
            "false" | "0" => false,
            _ => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("{k}: expected true or false, not {v:?}")}),
                )
            }
        };
        match k {
            "dry-run" => dry_run = flag,
            "delete-untagged" => delete_untagged = flag,
            _ => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("unknown parameter {k:?} (dry-run, delete-untagged)")}),
                )
            }
        }
    }
    match svc.run(app, &svc.options(dry_run, delete_untagged)).await {
        Ok(report) => json_response(StatusCode::OK, &json!(report)),
        Err(e) if e.is_locked() => json_response(StatusCode::CONFLICT, &json!({"error": e.to_string()})),
        Err(e @ crate::gc::GcError::ReadOnly) => json_response(StatusCode::CONFLICT, &json!({"error": e.to_string()})),
        Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e.to_string()})),
    }
}
