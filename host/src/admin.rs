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
}

impl Op {
    fn parse(path: &str) -> Option<Op> {
        match path {
            "/admin/reload" => Some(Op::Reload),
            "/admin/cleanup" => Some(Op::Cleanup),
            _ => None,
        }
    }

    /// Every operation changes state, so none answers a GET a crawler or a prefetch could send.
    fn method(self) -> Method {
        match self {
            Op::Reload | Op::Cleanup => Method::POST,
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
                return json_response(StatusCode::BAD_REQUEST, &json!({"error": format!("unknown parameter {other:?}")}))
            }
        }
    }
    use crate::cleanup::CleanupError as E;
    match cleanup.run(&app.registry, &options).await {
        Ok(report) => json_response(StatusCode::OK, &serde_json::to_value(&report).unwrap_or_default()),
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
