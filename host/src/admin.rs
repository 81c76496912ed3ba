//! Admin operations, served on the debug listener (`http.debug.addr`) and never on the registry's
//! port: behind a reverse proxy on the same host every client looks like loopback, so the peer
//! address cannot tell an operator from the internet. Who may reach the debug port is the
//! operator's network decision. Each operation is one `Op`: its path, its method, its handler.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::api::App;
use crate::debug::json_response;

/// An admin operation, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Re-read the configuration and plugin files (as SIGHUP does).
    Reload,
}

impl Op {
    fn parse(path: &str) -> Option<Op> {
        match path {
            "/admin/reload" => Some(Op::Reload),
            _ => None,
        }
    }

    /// Every operation changes state, so none answers a GET a crawler or a prefetch could send.
    fn method(self) -> Method {
        match self {
            Op::Reload => Method::POST,
        }
    }
}

/// Answers an admin request, or `None` when `path` is no admin operation.
pub async fn handle(app: &App, method: &Method, path: &str) -> Option<Response<Full<Bytes>>> {
    let op = Op::parse(path)?;
    if *method != op.method() {
        let mut r =
            json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": format!("use {} {path}", op.method())}));
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_str(op.method().as_str()).expect("a method name"));
        return Some(r);
    }
    Some(match op {
        Op::Reload => reload(app).await,
    })
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
