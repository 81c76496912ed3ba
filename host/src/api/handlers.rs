//! One function per endpoint: parse the request, call the registry, shape the response.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use super::manifest_budget::ManifestReadError;
use super::{body_stream, empty, full, stream, ApiError, App, Body, RequestBody, Route};
use crate::registry::{Condition, Digest, Page, RangeSpec, Reference, RegistryError, RepoName, MAX_MANIFEST_SIZE};

type Result<T = Response<Body>> = std::result::Result<T, ApiError>;

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn set(resp: &mut Response<Body>, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        resp.headers_mut().insert(name, v);
    }
}

/// Query parameters, percent-decoded.
fn query(req: &Request<RequestBody>) -> Vec<(String, String)> {
    form(req.uri().query().unwrap_or(""))
}

/// `k=v&k=v` pairs (a query string or an `application/x-www-form-urlencoded` body), decoded.
pub(crate) fn form(s: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'q>(q: &'q [(String, String)], key: &str) -> Option<&'q str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::unsupported(format!("method {method} is not supported on this endpoint"))
}

fn digest(s: &str) -> Result<Digest> {
    Ok(Digest::parse(s)?)
}

pub(super) async fn dispatch(app: &App, route: Route<'_>, req: Request<RequestBody>) -> Result {
    let m = req.method().clone();
    match route {
        Route::Base => match m {
            Method::GET | Method::HEAD => {
                let mut r = Response::new(full(Bytes::from_static(b"{}")));
                set(&mut r, "content-type", "application/json");
                Ok(r)
            }
            _ => Err(method_not_allowed(&m)),
        },
        Route::Catalog => match m {
            Method::GET => catalog(app, &req).await,
            _ => Err(method_not_allowed(&m)),
        },
        Route::Tags { name } => {
            let name = RepoName::parse(&name)?;
            match m {
                Method::GET => tags(app, &name, &req).await,
                _ => Err(method_not_allowed(&m)),
            }
        }
        Route::Manifest { name, reference } => {
            let name = RepoName::parse(&name)?;
            let reference = match Reference::parse(reference) {
                Ok(r) => r,
                // No manifest can exist under an invalid tag: reads get 404, as the spec's
                // conformance suite expects; writes learn why.
                Err(RegistryError::TagInvalid(t)) if m != Method::PUT => {
                    return Err(RegistryError::ManifestUnknown(format!("{name}:{t}")).into())
                }
                Err(e) => return Err(e.into()),
            };
            match m {
                Method::GET | Method::HEAD => get_manifest(app, &name, &reference, &req).await,
                Method::PUT => put_manifest(app, &name, &reference, req).await,
                Method::DELETE => {
                    app.registry.delete_manifest(&name, &reference, &condition(req.headers())).await?;
                    Ok(empty(StatusCode::ACCEPTED))
                }
                _ => Err(method_not_allowed(&m)),
            }
        }
        Route::Blob { name, digest: d } => {
            let name = RepoName::parse(&name)?;
            let d = digest(d)?;
            match m {
                Method::GET | Method::HEAD => get_blob(app, &name, &d, &req).await,
                Method::DELETE => {
                    app.registry.delete_blob(&name, &d).await?;
                    Ok(empty(StatusCode::ACCEPTED))
                }
                _ => Err(method_not_allowed(&m)),
            }
        }
        Route::UploadStart { name } => {
            let name = RepoName::parse(&name)?;
            match m {
                Method::POST => start_upload(app, &name, req).await,
                _ => Err(method_not_allowed(&m)),
            }
        }
        Route::Upload { name, id } => {
            let name = RepoName::parse(&name)?;
            match m {
                Method::GET => {
                    let status = app.registry.upload_status(&name, id).await?;
                    Ok(upload_response(app, req.headers(), StatusCode::NO_CONTENT, &name, id, status.size))
                }
                Method::PATCH => patch_upload(app, &name, id, req).await,
                Method::PUT => finish_upload(app, &name, id, req).await,
                Method::DELETE => {
                    app.registry.cancel_upload(&name, id).await?;
                    Ok(empty(StatusCode::NO_CONTENT))
                }
                _ => Err(method_not_allowed(&m)),
            }
        }
        Route::Referrers { name, digest: d } => {
            let name = RepoName::parse(&name)?;
            let d = digest(d)?;
            match m {
                Method::GET => referrers(app, &name, &d, &req).await,
                _ => Err(method_not_allowed(&m)),
            }
        }
        Route::NotFound => Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")),
    }
}

/// `n` and `last` of a paginated list.
fn pagination(req: &Request<RequestBody>) -> Result<(Option<usize>, Option<String>)> {
    let q = query(req);
    let n = match param(&q, "n") {
        None | Some("") => None,
        Some(v) => Some(v.parse::<usize>().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID", format!("invalid n={v:?}"))
        })?),
    };
    Ok((n, param(&q, "last").filter(|l| !l.is_empty()).map(str::to_string)))
}

fn json_page(
    app: &App,
    req: &Request<RequestBody>,
    path: &str,
    body: String,
    page: &Page,
    n: Option<usize>,
) -> Response<Body> {
    let mut r = Response::new(full(body));
    set(&mut r, "content-type", "application/json");
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        let next = format!(
            "{path}?n={n}&last={}",
            percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC)
        );
        set(&mut r, "link", format!("<{}>; rel=\"next\"", app.url(req.headers(), &next)));
    }
    r
}

/// A catalog page: `catalog.maxentries` names without `n`, and never more. distribution 2.8
/// has no cap and distribution 3 refuses a larger `n` with `PAGINATION_NUMBER_INVALID`;
/// Berth clamps it and links on, which the spec allows and no paging client trips over.
async fn catalog(app: &App, req: &Request<RequestBody>) -> Result {
    let (n, last) = pagination(req)?;
    let max = match app.options.catalog_max_entries {
        0 => crate::config::Catalog::default().maxentries,
        m => m,
    };
    let n = n.map_or(max, |n| n.min(max));
    let page = app.registry.catalog(n, last.as_deref()).await?;
    let body = serde_json::to_string(&json!({ "repositories": page.items })).expect("json of strings");
    Ok(json_page(app, req, "/v2/_catalog", body, &page, Some(n)))
}

/// Every tag without `n`, as distribution answers; the body is written from the names with no
/// intermediate JSON tree, so 100,000 tags cost their names and their text once each.
async fn tags(app: &App, name: &RepoName, req: &Request<RequestBody>) -> Result {
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let (n, last) = pagination(req)?;
    let page = app.registry.list_tags(name, n, last.as_deref()).await?;
    let path = format!("/v2/{name}/tags/list");
    let body = serde_json::to_string(&TagList { name: name.as_str(), tags: &page.items }).expect("json of strings");
    Ok(json_page(app, req, &path, body, &page, n))
}

/// Every media type in the `Accept` headers, without parameters.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Preconditions from `If-None-Match: *` and `If-Match: "<digest>"`.
fn condition(headers: &HeaderMap) -> Condition {
    if header_str(headers, "if-none-match").is_some_and(|v| v.trim() == "*") {
        return Condition::Absent;
    }
    match header_str(headers, "if-match") {
        Some(v) => Condition::Matches(
            v.split(',')
                .map(|t| t.trim().trim_start_matches("W/").trim_matches('"').to_string())
                .filter(|t| !t.is_empty())
                .collect(),
        ),
        None => Condition::None,
    }
}

async fn get_manifest(app: &App, name: &RepoName, reference: &Reference, req: &Request<RequestBody>) -> Result {
    let mut m = app.registry.get_manifest(name, reference).await?;
    // By digest the client gets exactly those bytes; only a tag has representations to choose.
    if let Reference::Tag(_) = reference {
        m = app.registry.negotiate(name, m, &accepted(req.headers())).await?;
    }
    let len = m.content.len();
    let mut r =
        if req.method() == Method::HEAD { empty(StatusCode::OK) } else { Response::new(full(m.content.clone())) };
    set(&mut r, "content-type", &m.media_type);
    set(&mut r, "content-length", len.to_string());
    set(&mut r, "docker-content-digest", m.digest.to_string());
    set(&mut r, "etag", format!("\"{}\"", m.digest));
    Ok(r)
}

async fn put_manifest(app: &App, name: &RepoName, reference: &Reference, req: Request<RequestBody>) -> Result {
    let content_type = header_str(req.headers(), "content-type").map(str::to_string);
    let cond = condition(req.headers());
    let headers = req.headers().clone();
    let declared = header_str(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    // A declared length over the cap is refused before any byte is read; the reservation holds
    // the body's share of the manifest memory budget until the manifest is stored.
    let (body, _reservation) = match app.manifest_budget.read(req.into_body(), declared, MAX_MANIFEST_SIZE).await {
        Ok(r) => r,
        Err(e @ ManifestReadError::TooLarge(_)) => return Err(RegistryError::TooLarge(e.to_string()).into()),
        Err(e @ ManifestReadError::OverBudget) => {
            let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", e.to_string());
            err.headers.push(("retry-after", HeaderValue::from_static("1")));
            return Err(err);
        }
        Err(ManifestReadError::Body(e)) => return Err(RegistryError::BodyRead(e.to_string()).into()),
    };
    let put = app.registry.put_manifest(name, reference, content_type.as_deref(), body, &cond).await?;
    let mut r = empty(StatusCode::CREATED);
    set(&mut r, "location", app.url(&headers, &format!("/v2/{name}/manifests/{}", put.digest)));
    set(&mut r, "docker-content-digest", put.digest.to_string());
    if let Some(subject) = put.subject {
        set(&mut r, "oci-subject", subject.to_string());
    }
    Ok(r)
}

async fn get_blob(app: &App, name: &RepoName, d: &Digest, req: &Request<RequestBody>) -> Result {
    let range = header_str(req.headers(), "range").and_then(RangeSpec::parse);
    let head = req.method() == Method::HEAD;
    if !head {
        if let Some(url) = app.registry.blob_redirect(name, d).await? {
            let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
            set(&mut r, "location", url);
            set(&mut r, "docker-content-digest", d.to_string());
            return Ok(r);
        }
    }
    let (status, content_len, content_range, body) = if head && range.is_none() {
        let size = app.registry.stat_blob(name, d).await?;
        (StatusCode::OK, size, None, None)
    } else {
        let read = app.registry.read_blob(name, d, range).await?;
        let (status, len, cr) = match read.range {
            Some((a, b)) => (StatusCode::PARTIAL_CONTENT, b - a + 1, Some(format!("bytes {a}-{b}/{}", read.size))),
            None => (StatusCode::OK, read.size, None),
        };
        (status, len, cr, (!head).then_some(read.body))
    };
    let mut r = match body {
        Some(b) => Response::new(stream(b)),
        None => empty(StatusCode::OK),
    };
    *r.status_mut() = status;
    set(&mut r, "content-type", "application/octet-stream");
    set(&mut r, "content-length", content_len.to_string());
    set(&mut r, "docker-content-digest", d.to_string());
    set(&mut r, "etag", format!("\"{d}\""));
    set(&mut r, "accept-ranges", "bytes");
    set(&mut r, "cache-control", "max-age=31536000");
    if let Some(cr) = content_range {
        set(&mut r, "content-range", cr);
    }
    Ok(r)
}

fn upload_response(
    app: &App,
    headers: &HeaderMap,
    status: StatusCode,
    name: &RepoName,
    id: &str,
    size: u64,
) -> Response<Body> {
    let mut r = empty(status);
    set(&mut r, "location", app.url(headers, &format!("/v2/{name}/blobs/uploads/{id}")));
    set(&mut r, "range", format!("0-{}", size.saturating_sub(1)));
    set(&mut r, "docker-upload-uuid", id);
    set(&mut r, "content-length", "0");
    r
}

fn blob_created(app: &App, headers: &HeaderMap, name: &RepoName, d: &Digest) -> Response<Body> {
    let mut r = empty(StatusCode::CREATED);
    set(&mut r, "location", app.url(headers, &format!("/v2/{name}/blobs/{d}")));
    set(&mut r, "docker-content-digest", d.to_string());
    set(&mut r, "content-length", "0");
    r
}

async fn start_upload(app: &App, name: &RepoName, req: Request<RequestBody>) -> Result {
    let q = query(&req);
    let headers = req.headers().clone();
    if let Some(mount) = param(&q, "mount") {
        let d = digest(mount)?;
        let from = param(&q, "from").filter(|f| !f.is_empty()).map(RepoName::parse).transpose()?;
        if app.registry.mount_blob(name, &d, from.as_ref()).await? {
            return Ok(blob_created(app, &headers, name, &d));
        }
    } else if let Some(dg) = param(&q, "digest") {
        let d = digest(dg)?;
        if let Some(size) = header_str(&headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            app.registry.admit_upload(name, size, Some(&d)).await?;
        }
        app.registry.upload_monolithic(name, &d, body_stream(req.into_body())).await?;
        return Ok(blob_created(app, &headers, name, &d));
    }
    let status = app.registry.start_upload(name).await?;
    Ok(upload_response(app, &headers, StatusCode::ACCEPTED, name, &status.id, 0))
}

/// `Content-Range: <start>-<end>` of a chunk (also accepting a `bytes ` or `bytes=` prefix).
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>> {
    let Some(v) = header_str(headers, "content-range") else { return Ok(None) };
    let spec = v.trim().trim_start_matches("bytes").trim_start_matches(['=', ' ']);
    let spec = spec.split('/').next().unwrap_or("");
    let parsed = spec.split_once('-').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    parsed.map(Some).ok_or_else(|| {
        ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", format!("invalid Content-Range {v:?}"))
    })
}

async fn patch_upload(app: &App, name: &RepoName, id: &str, req: Request<RequestBody>) -> Result {
    let headers = req.headers().clone();
    let range = content_range(&headers)?;
    match app.registry.append_upload(name, id, range, body_stream(req.into_body())).await {
        Ok(status) => Ok(upload_response(app, &headers, StatusCode::ACCEPTED, name, id, status.size)),
        Err(RegistryError::RangeNotSatisfiable { message, size }) => {
            // Tell the client where the session stands so it can resume from there.
            let mut r = upload_response(app, &headers, StatusCode::RANGE_NOT_SATISFIABLE, name, id, size);
            let err = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", message);
            let body = err.body();
            set(&mut r, "content-length", body.len().to_string());
            set(&mut r, "content-type", "application/json");
            *r.body_mut() = full(body);
            Ok(r)
        }
        Err(e) => Err(e.into()),
    }
}

async fn finish_upload(app: &App, name: &RepoName, id: &str, req: Request<RequestBody>) -> Result {
    let q = query(&req);
    let headers = req.headers().clone();
    let d = match param(&q, "digest") {
        Some(v) => digest(v)?,
        None => return Err(RegistryError::DigestInvalid("the digest query parameter is required".into()).into()),
    };
    // HTTP/2 frames a body without Content-Length or Transfer-Encoding: ask the body itself.
    let has_body = {
        use hyper::body::Body as _;
        !req.body().is_end_stream() && req.body().size_hint().exact() != Some(0)
    };
    let body = has_body.then(|| body_stream(req.into_body()));
    app.registry.complete_upload(name, id, &d, body).await?;
    Ok(blob_created(app, &headers, name, &d))
}

async fn referrers(app: &App, name: &RepoName, d: &Digest, req: &Request<RequestBody>) -> Result {
    let q = query(req);
    let at = param(&q, "artifactType").filter(|a| !a.is_empty());
    let refs = app.registry.referrers(name, d, at).await?;
    let mut r = Response::new(full(refs.index));
    set(&mut r, "content-type", "application/vnd.oci.image.index.v1+json");
    if refs.filtered {
        set(&mut r, "oci-filters-applied", "artifactType");
    }
    Ok(r)
}
