//! HTTP only: routing, request parsing, response shaping and OCI error bodies. Each handler
//! parses, calls one registry operation, and shapes the answer.

mod error;
mod handlers;
mod manifest_budget;
pub mod request_body;
mod routes;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyDataStream, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tracing::Instrument;

use crate::auth::{self, Auth, Caller, Target};
use crate::metrics::{self, RouteLabels};
use crate::registry::{BodyStream, Registry};
use crate::storage::ByteStream;

pub use error::ApiError;
pub(crate) use handlers::form;
use manifest_budget::ManifestBudget;
pub use request_body::RequestBody;
use routes::Route;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The client's address, put on each request by the server (for the failed-login throttle and
/// the request info a policy plugin sees).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// What the HTTP layer needs to know of the configuration.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    pub read_only: bool,
    pub delete_enabled: bool,
    pub relative_urls: bool,
    /// Requests handled at once (0: unlimited); the rest get 429 TOOMANYREQUESTS.
    pub max_in_flight: usize,
    /// The most repositories one catalog page holds, and the page size without `n`.
    pub catalog_max_entries: usize,
    /// The listener serves HTTPS: absolute URLs say `https` unless a proxy says otherwise.
    pub tls: bool,
    /// Bytes of manifest bodies held in memory at once (`http.manifestmemory`; 0: no limit).
    pub manifest_memory: usize,
}

/// Reloads the configuration and plugin files; `Ok` describes what now serves.
pub type ReloadFn = Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<String, String>> + Send + Sync>;

pub struct App {
    pub registry: Registry,
    /// Who may do what; `None`: open (no `auth` section).
    auth: Option<Arc<Auth>>,
    pub options: ApiOptions,
    next_id: AtomicU64,
    reload: OnceLock<ReloadFn>,
    plugins: OnceLock<crate::plugins::PluginSet>,
    /// Cleanup policies, when the configuration has any.
    cleanup: OnceLock<Arc<crate::cleanup::Cleanup>>,
    /// Garbage collection in this server (`POST /admin/gc`, `gc.schedule`).
    gc: OnceLock<Arc<crate::gc::Service>>,
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
    manifest_budget: ManifestBudget,
    /// Notifications (none: no endpoint enabled).
    events: OnceLock<Arc<crate::events::Notifier>>,
}

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A body streamed from storage. A storage failure after the answer's head went out can only
/// cut the body short (the client sees fewer bytes than `Content-Length`), so it is logged here.
pub(crate) fn stream(s: ByteStream) -> Body {
    let failed = |e: crate::storage::StorageError| {
        tracing::warn!(error = %e, "response body cut short: storage failed while it streamed");
        std::io::Error::other(e)
    };
    StreamBody::new(s.map_ok(Frame::data).map_err(failed)).boxed_unsync()
}

/// Counts a request's body bytes as a handler streams them (uploads); a body read otherwise is
/// counted from its Content-Length.
#[derive(Clone)]
struct RequestBytes {
    counter: Counter,
    streamed: Arc<AtomicBool>,
}

tokio::task_local! {
    static REQUEST_BYTES: RequestBytes;
}

/// Holds the in-flight gauge up while a request is handled, including one whose client went away
/// (hyper then drops the handler's future midway).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(g: &'a Gauge) -> Self {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) fn body_stream(b: RequestBody) -> BodyStream {
    let stream = BodyDataStream::new(b).map_err(std::io::Error::other);
    match REQUEST_BYTES.try_with(|m| m.clone()) {
        Ok(m) => {
            m.streamed.store(true, Ordering::Relaxed);
            Box::pin(stream.inspect_ok(move |chunk| {
                m.counter.inc_by(chunk.len() as u64);
            }))
        }
        Err(_) => Box::pin(stream),
    }
}

fn error_response(err: ApiError, request_id: &str) -> Response<Body> {
    let mut err = err;
    if err.status.is_server_error() {
        err.detail = serde_json::json!({"request_id": request_id});
    }
    let body = err.body();
    let len = HeaderValue::from(body.len());
    let mut resp = Response::new(full(body));
    *resp.status_mut() = err.status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Stated, not left to chunking: the body is known, and a client refused before its
    // upload is read (413, 503) can read the answer whole and stop.
    h.insert(header::CONTENT_LENGTH, len);
    for (k, v) in err.headers {
        h.insert(k, v);
    }
    resp
}

impl App {
    pub fn new(registry: Registry, options: ApiOptions, auth: Option<Arc<Auth>>) -> Arc<Self> {
        Arc::new(App {
            registry,
            auth,
            next_id: AtomicU64::new(rand::random::<u32>() as u64),
            reload: OnceLock::new(),
            plugins: OnceLock::new(),
            cleanup: OnceLock::new(),
            gc: OnceLock::new(),
            in_flight: (options.max_in_flight > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(options.max_in_flight))),
            manifest_budget: ManifestBudget::new(options.manifest_memory),
            events: OnceLock::new(),
            options,
        })
    }

    /// Installs the reload hook behind SIGHUP and the debug server's `POST /admin/reload` (once).
    pub fn set_reload(&self, f: ReloadFn) {
        let _ = self.reload.set(f);
    }

    /// Runs the reload hook, if any.
    pub async fn reload(&self) -> Result<String, String> {
        match self.reload.get() {
            Some(f) => f().await,
            None => Ok("nothing to reload".into()),
        }
    }

    /// Installs the notifier every served request reports to (once).
    pub fn set_events(&self, n: Arc<crate::events::Notifier>) {
        n.attach_storage(self.registry.driver());
        let _ = self.events.set(n);
    }

    pub fn events(&self) -> Option<&Arc<crate::events::Notifier>> {
        self.events.get()
    }

    /// Installs the plugins the server runs, for the debug server's health and vars (once).
    pub fn set_cleanup(&self, cleanup: Arc<crate::cleanup::Cleanup>) {
        let _ = self.cleanup.set(cleanup);
    }

    /// The configured cleanup policies, if any.
    pub fn cleanup(&self) -> Option<&Arc<crate::cleanup::Cleanup>> {
        self.cleanup.get()
    }

    /// Installs the garbage collection service (once) and routes the registry's writes
    /// through its journal.
    pub fn set_gc(&self, gc: Arc<crate::gc::Service>) {
        self.registry.set_write_watch(gc.journal.clone());
        let _ = self.gc.set(gc);
    }

    pub fn gc(&self) -> Option<&Arc<crate::gc::Service>> {
        self.gc.get()
    }

    pub fn set_plugins(&self, plugins: crate::plugins::PluginSet) {
        let _ = self.plugins.set(plugins);
    }

    /// The loaded plugins by name, with their facts (empty when none).
    pub fn plugin_report(&self) -> serde_json::Map<String, serde_json::Value> {
        self.plugins.get().map(|p| p.report()).unwrap_or_default()
    }

    /// Each loaded plugin's health (`ok`, or why it cannot make instances); false if one is
    /// broken.
    pub fn plugin_health(&self) -> (bool, serde_json::Map<String, serde_json::Value>) {
        self.plugins.get().map_or_else(|| (true, serde_json::Map::new()), |p| p.health())
    }

    /// Entry point for every request: one span, one log line, errors shaped as OCI JSON.
    pub async fn serve(self: Arc<Self>, req: Request<RequestBody>) -> Result<Response<Body>, Infallible> {
        let id = format!("{:016x}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let span =
            tracing::info_span!("request", id = %id, method = %method, path = %path, user = tracing::field::Empty);
        let started = Instant::now();
        let metrics = metrics::get();
        let route = Route::parse(&path).kind();
        let labels = RouteLabels { route, method: metrics::method_label(&method) };
        let request_bytes = RequestBytes {
            counter: metrics.request_bytes.get_or_create(&labels).clone(),
            streamed: Arc::new(AtomicBool::new(false)),
        };
        let content_length =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        let in_flight = InFlight::enter(&metrics.in_flight);
        // Shed load instead of queueing without bound: the client retries after a second.
        let permit = self.in_flight.as_ref().map(|s| s.clone().try_acquire_owned());
        let result = match permit {
            Some(Err(_)) => {
                let mut e =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "too many requests in flight");
                e.headers.push(("retry-after", HeaderValue::from_static("1")));
                Err(e)
            }
            // The route's future (handlers, events, admission, deferred sync) is kilobytes:
            // boxed, it is allocated once instead of being copied each time hyper and the
            // wrappers here move it (those copies were about a fifth of a manifest GET's CPU).
            _ => {
                REQUEST_BYTES
                    .scope(request_bytes.clone(), Box::pin(self.route(req, &id)))
                    .instrument(span.clone())
                    .await
            }
        };
        drop(permit);
        drop(in_flight);
        if !request_bytes.streamed.load(Ordering::Relaxed) {
            request_bytes.counter.inc_by(content_length.unwrap_or(0));
        }
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => error_response(e, &id),
        };
        let h = resp.headers_mut();
        h.insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert("x-request-id", v);
        }
        let bytes = h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
        metrics.record_request(labels.clone(), resp.status().as_u16(), started.elapsed().as_secs_f64());
        let sent = metrics.response_bytes.get_or_create(&labels).clone();
        let resp = resp.map(|b| {
            b.map_frame(move |f| {
                if let Some(d) = f.data_ref() {
                    sent.inc_by(d.len() as u64);
                }
                f
            })
            .boxed_unsync()
        });
        span.in_scope(|| {
            tracing::info!(
                status = resp.status().as_u16(),
                duration_us = started.elapsed().as_micros() as u64,
                bytes,
                "served"
            )
        });
        Ok(resp)
    }

    async fn route(&self, req: Request<RequestBody>, id: &str) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_string();
        let route = Route::parse(&path);
        let method = req.method().clone();
        let mut actor = String::new();
        let mut identity = None;
        // A refusal may leave this body unread (`closing`).
        let has_body = has_body(req.headers());
        if let Some(auth) = &self.auth {
            let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
            let caller =
                Caller { headers: req.headers(), peer, method: &method, request_id: id, tls: self.options.tls };
            if path == "/auth/token" && auth.issuer().is_some() {
                drop(caller);
                return self.token_endpoint(auth, req, peer, id).await;
            }
            if path == "/v2" || path.starts_with("/v2/") {
                let target = match &route {
                    Route::Base | Route::NotFound => Target::Base,
                    Route::Catalog => Target::Catalog,
                    Route::Tags { name }
                    | Route::Manifest { name, .. }
                    | Route::Blob { name, .. }
                    | Route::UploadStart { name }
                    | Route::Upload { name, .. }
                    | Route::Referrers { name, .. } => Target::Repository(name),
                };
                // Only a mount (a POST) names a second repository: reads skip the query.
                let params =
                    if method == Method::POST { handlers::form(req.uri().query().unwrap_or("")) } else { Vec::new() };
                let from = params
                    .iter()
                    .any(|(k, _)| k == "mount")
                    .then(|| params.iter().find(|(k, _)| k == "from"))
                    .flatten();
                let needed = auth::needed(target, &method, from.map(|(_, v)| v.as_str()));
                let access = auth.authorize(&caller, &needed).await.map_err(|e| closing(e, has_body))?;
                if !access.subject.is_empty() {
                    tracing::Span::current().record("user", access.subject.as_str());
                    identity =
                        Some(crate::admission::Identity { subject: access.subject.clone(), groups: access.groups });
                }
                actor = access.subject;
            }
        }
        let write = matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
        if write && self.options.read_only && route != Route::NotFound {
            return Err(ApiError::unsupported("the registry is in read-only mode for maintenance"));
        }
        let deletes_content = matches!(route, Route::Manifest { .. } | Route::Blob { .. });
        if method == Method::DELETE && deletes_content && !self.options.delete_enabled {
            return Err(ApiError::unsupported("deletes are disabled (storage.delete.enabled is false)"));
        }
        // Notifications decorate the operation here, in one place: what the request is
        // about is noted before it runs, the event shaped from the answer after.
        let mut observed = self.events.get().and_then(|n| self.observe(n, &route, &path, &req, id));
        if let Some(o) = &mut observed {
            o.prepare(&self.registry).await;
        }
        // Writes carry who is writing to the admission chain (`Registry::admit`).
        let admission = write.then(|| crate::admission::RequestContext {
            identity,
            request: crate::plugins::wit::latest::types::RequestInfo {
                id: id.to_string(),
                method: method.to_string(),
                addr: req.extensions().get::<PeerAddr>().map(|p| p.0.to_string()).unwrap_or_default(),
                user_agent: req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
            },
        });
        // A write whose event must be durable before the answer syncs once for both: the
        // operation's sync waits until the event is journaled (`registry::deferred_sync`).
        // The operation's future is made in each branch, not held in a local first: a local
        // moved into one branch still took its own space in this future, copied per request.
        let (resp, owed) = if observed.as_ref().is_some_and(|o| o.durable()) {
            crate::registry::deferred_sync::deferring(self.run(admission, route, req)).await
        } else {
            (self.run(admission, route, req).await, Vec::new())
        };
        let resp = match resp {
            // Some refusals are answers of their own (a 416 carries the upload's state).
            Ok(resp) if has_body && resp.status().as_u16() >= 400 => closing_response(resp),
            Ok(resp) => resp,
            Err(e) => {
                if !owed.is_empty() {
                    self.registry.sync_owed(owed).await.map_err(crate::registry::RegistryError::from)?;
                }
                return Err(closing(e, has_body));
            }
        };
        let recorded = match (self.events.get(), observed) {
            (Some(n), Some(o)) => {
                let flush = n.flush_for(&o, !owed.is_empty());
                // Most events need nothing but the answer: recorded without the asynchronous
                // path (whose state would be carried by this future).
                match n.record_now(&o, resp.status(), resp.headers(), &actor, flush) {
                    Ok(Ok(appended)) => appended.durable().await,
                    Ok(Err(e)) => Err(e),
                    Err(pending) => n.record(&o, pending, &actor, &self.registry, flush).await,
                }
            }
            _ => Ok(()),
        };
        if !owed.is_empty() {
            self.registry.sync_owed(owed).await.map_err(crate::registry::RegistryError::from)?;
        }
        recorded.map_err(|e| {
            tracing::error!(error = %e, "event not recorded");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the event outbox cannot be written")
        })?;
        Ok(resp)
    }

    /// The operation itself: the handler, inside the admission chain's context for a write.
    async fn run(
        &self,
        admission: Option<crate::admission::RequestContext>,
        route: Route<'_>,
        req: Request<RequestBody>,
    ) -> Result<Response<Body>, ApiError> {
        match admission {
            Some(ctx) => crate::admission::scope(ctx, handlers::dispatch(self, route, req)).await,
            None => handlers::dispatch(self, route, req).await,
        }
    }

    /// What a request may cause an event about, for `events::listener`.
    fn observe<'a>(
        &self,
        notifier: &crate::events::Notifier,
        route: &Route<'a>,
        path: &'a str,
        req: &Request<RequestBody>,
        id: &'a str,
    ) -> Option<crate::events::listener::Observed<'a>> {
        let (kind, name, reference) = match route {
            Route::Manifest { name, reference } => ("manifest", name, Some(*reference)),
            Route::Blob { name, digest } => ("blob", name, Some(*digest)),
            Route::Upload { name, .. } => ("upload", name, None),
            Route::UploadStart { name } => ("upload-start", name, None),
            _ => return None,
        };
        let facts = crate::events::listener::RequestFacts {
            method: req.method(),
            headers: req.headers(),
            query: req.uri().query(),
            peer: req.extensions().get::<PeerAddr>().map(|p| p.0),
            absolute_urls: !self.options.relative_urls,
            tls: self.options.tls,
        };
        // The repository as the path spells it (`Route` joined its segments back into the same
        // text), borrowed for as long as the request runs.
        let repository = path.strip_prefix("/v2/").and_then(|rest| rest.get(..name.len())).filter(|r| r == name);
        crate::events::listener::observe(kind, repository, reference, id, facts, |a, mt| notifier.may_want(a, mt))
    }

    /// Berth's token endpoint: parameters from the query (`GET`) or the form body (`POST`).
    async fn token_endpoint(
        &self,
        auth: &Auth,
        req: Request<RequestBody>,
        peer: Option<std::net::SocketAddr>,
        id: &str,
    ) -> Result<Response<Body>, ApiError> {
        /// A token request's form is a few hundred bytes; this bounds what a client can make
        /// the server buffer.
        const MAX_FORM: usize = 64 << 10;
        let method = req.method().clone();
        let (parts, body) = req.into_parts();
        let caller = Caller { headers: &parts.headers, peer, method: &method, request_id: id, tls: self.options.tls };
        let request = match method {
            Method::GET => {
                auth::issuer::TokenRequest { params: handlers::form(parts.uri.query().unwrap_or("")), post: false }
            }
            Method::POST => {
                let bytes = http_body_util::Limited::new(body, MAX_FORM).collect().await.map_err(|_| {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", "token request body too large")
                })?;
                let text = String::from_utf8_lossy(&bytes.to_bytes()).into_owned();
                auth::issuer::TokenRequest { params: handlers::form(&text), post: true }
            }
            _ => return Err(ApiError::unsupported(format!("method {method} is not supported on /auth/token"))),
        };
        let answer = auth.issue(&caller, request).await?;
        let mut r = Response::new(full(answer.to_string()));
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }

    /// A URL for `path` as the client should follow it: relative, or absolute from the
    /// request's host (and forwarded headers), as distribution does.
    fn url(&self, headers: &HeaderMap, path: &str) -> String {
        if self.options.relative_urls {
            return path.to_string();
        }
        match origin(headers, self.options.tls) {
            Some(origin) => format!("{origin}{path}"),
            None => path.to_string(),
        }
    }
}

/// Whether a request carries a body (which a refusal may leave unread).
fn has_body(h: &HeaderMap) -> bool {
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1) > 0)
}

/// A refused request's body (an upload chunk) may be left unread, so the connection cannot
/// carry another request: say so, or a client that retries on it (after re-authenticating, or
/// to ask an upload's state after a 416) finds it closed under its feet.
fn closing(mut e: ApiError, has_body: bool) -> ApiError {
    if has_body {
        e.headers.push(("connection", HeaderValue::from_static("close")));
    }
    e
}

/// [`closing`] for a refusal the handler answered itself.
fn closing_response(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// `scheme://host` as the client reached the registry: the request's `Host`, unless a proxy in
/// front says otherwise (`X-Forwarded-Proto`, `X-Forwarded-Host`). `None` without a host.
pub(crate) fn origin(headers: &HeaderMap, tls: bool) -> Option<String> {
    let get = |k: &str| {
        headers.get(k).and_then(|v| v.to_str().ok()).map(|s| s.split(',').next().unwrap_or("").trim().to_string())
    };
    let own = if tls { "https" } else { "http" };
    let proto = get("x-forwarded-proto").filter(|p| !p.is_empty()).unwrap_or_else(|| own.into());
    let host = get("x-forwarded-host").filter(|h| !h.is_empty()).or_else(|| get("host"))?;
    Some(format!("{proto}://{host}"))
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// `Box::pin` copies a request's whole future once per request: wrappers that held the
    /// future they awaited twice had made it 44 KB (9 KB since).
    #[test]
    fn a_request_s_future_stays_small() {
        let route = future_size(|app: &'static App, req: Request<RequestBody>, id: &'static str| app.route(req, id));
        assert!(route <= 16 << 10, "App::route's future is {route} bytes");
    }
}
