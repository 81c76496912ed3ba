//! Turns a served request into its event, in one place at the API boundary (as distribution's
//! `notifications/listener.go` decorates a repository): `observe` notes what a request is about
//! before it runs, `event` shapes the event from the registry's answer. Handlers know nothing
//! of events.

use std::borrow::Cow;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::record::{Action, Addr, Descriptor, Draft, DraftRequest, DraftTarget, Url, BLOB_MEDIA_TYPE};
use crate::registry::{Digest, Reference, Registry, RepoName};

/// What a request that may cause an event is about (references borrowed from its path).
#[derive(Debug, Clone)]
enum About<'a> {
    ManifestGet(&'a str),
    ManifestPut(&'a str),
    /// The reference, and (by digest) the tags that pointed at it, found before the delete.
    ManifestDelete(&'a str, Vec<String>),
    BlobGet(&'a str),
    BlobDelete(&'a str),
    /// `PUT` of an upload session: the digest comes back in the answer.
    UploadFinish,
    /// `POST .../blobs/uploads/` with `mount` (and `from`) or a monolithic `digest`.
    Mount {
        from: String,
    },
    Monolithic,
}

impl About<'_> {
    /// The action of the event this request causes if it succeeds, and its media type when that
    /// is known before the answer (blobs have one; a manifest's comes with it).
    fn wanted(&self) -> (Action, Option<&'static str>) {
        match self {
            About::ManifestGet(_) => (Action::Pull, None),
            About::ManifestPut(_) => (Action::Push, None),
            About::ManifestDelete(..) | About::BlobDelete(_) => (Action::Delete, Some("")),
            About::BlobGet(_) => (Action::Pull, Some(BLOB_MEDIA_TYPE)),
            About::UploadFinish | About::Monolithic => (Action::Push, Some(BLOB_MEDIA_TYPE)),
            About::Mount { .. } => (Action::Mount, Some(BLOB_MEDIA_TYPE)),
        }
    }
}

/// The request headers an event is made of, copied (a few dozen bytes, kept inline: cloning
/// each `HeaderValue` and dropping it again cost more on every pull than the copy).
#[derive(Debug, Clone)]
struct Headers {
    /// The values one after another, inline when they fit (a host and a user agent nearly
    /// always do), else on the heap.
    text: Text,
    /// Where each header's value ends in `text` (in the order `of` reads them), each starting
    /// where the one before it ends.
    ends: [u16; 6],
}

/// A request noted before it runs, borrowing its path and id (no copies on every pull).
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    about: About<'a>,
    repository: &'a str,
    id: &'a str,
    method: Method,
    headers: Headers,
    peer: Option<std::net::SocketAddr>,
    /// URLs in events: None relative, else absolute with this scheme unless forwarded.
    absolute: Option<&'static str>,
}

/// The request facts the API layer hands over.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub peer: Option<std::net::SocketAddr>,
    /// Absolute URLs in events (not `http.relativeurls`), and whether this listener is TLS.
    pub absolute_urls: bool,
    pub tls: bool,
}

/// A header value's text when it is ASCII (as `HeaderValue::to_str`, which a header's bytes
/// otherwise pass: no control character but a tab), else none. `is_ascii` looks at a word at
/// a time; `to_str` and `str::from_utf8` at each byte, on every pull's few headers.
fn text(v: Option<&HeaderValue>) -> &str {
    match v.map(HeaderValue::as_bytes) {
        // SAFETY: ASCII is UTF-8.
        Some(b) if b.is_ascii() => unsafe { std::str::from_utf8_unchecked(b) },
        _ => "",
    }
}

// Names looked up by value, not parsed from a string at each lookup.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// The answer's headers an event reads.
struct Answered<'h> {
    digest: &'h str,
    content_type: &'h str,
    content_length: &'h str,
    content_range: &'h str,
}

impl<'h> Answered<'h> {
    fn of(h: &'h HeaderMap) -> Answered<'h> {
        let [content_length, content_type, digest, content_range] =
            first_values(h, [&CONTENT_LENGTH, &CONTENT_TYPE, &DOCKER_CONTENT_DIGEST, &CONTENT_RANGE]).map(text);
        Answered { digest, content_type, content_length, content_range }
    }
}

/// The first value of each of `names`, in one pass over a message's few headers (a lookup
/// each hashed every name, on every pull).
fn first_values<'h, const N: usize>(h: &'h HeaderMap, names: [&HeaderName; N]) -> [Option<&'h HeaderValue>; N] {
    let mut out = [None; N];
    for (name, value) in h {
        if let Some(i) = names.iter().position(|n| *n == name) {
            out[i].get_or_insert(value);
        }
    }
    out
}

/// The first of a comma-separated header's values (a proxy chain's first hop), without
/// spaces or tabs around it (a byte search: this runs on every pull's host).
fn first_of(v: &str) -> &str {
    // A header value holds no other whitespace than spaces and tabs.
    v[..v.bytes().position(|b| b == b',').unwrap_or(v.len())].trim_ascii()
}

impl Headers {
    // Indices of the headers kept, in the order `of` reads them.
    const HOST: usize = 0;
    const USER_AGENT: usize = 1;
    const FORWARDED_FOR: usize = 2;
    const REAL_IP: usize = 3;
    const FORWARDED_PROTO: usize = 4;
    const FORWARDED_HOST: usize = 5;

    /// The first value of each (what does not fit in 64 KiB in all is left out).
    fn of(h: &HeaderMap) -> Headers {
        let names = [
            &http::header::HOST,
            &http::header::USER_AGENT,
            &X_FORWARDED_FOR,
            &X_REAL_IP,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
        ];
        let values = first_values(h, names).map(text);
        let total: usize = values.iter().map(|v| v.len()).sum();
        let mut text = match total {
            0..=INLINE => Text::Inline([0; INLINE]),
            _ => Text::Heap(vec![0; total.min(u16::MAX as usize)].into_boxed_slice()),
        };
        let buf = text.bytes_mut();
        let mut ends = [0u16; 6];
        let mut at = 0;
        for (i, v) in values.iter().enumerate() {
            // Most are absent (the proxy headers): no call to copy nothing.
            if v.is_empty() {
                ends[i] = at as u16;
                continue;
            }
            if let Some(room) = buf.get_mut(at..at + v.len()) {
                room.copy_from_slice(v.as_bytes());
                at += v.len();
            }
            ends[i] = at as u16;
        }
        Headers { text, ends }
    }

    /// The value of header `i`, empty when the request had none.
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let b = &self.text.bytes()[start..self.ends[i] as usize];
        debug_assert!(b.is_ascii());
        // SAFETY: `text` holds only what `text()` let through: ASCII.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

/// What request headers' values fit in [`Headers`] without an allocation.
const INLINE: usize = 192;

#[derive(Debug, Clone)]
enum Text {
    Inline([u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Inline(b) => b,
            Text::Heap(b) => b,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Text::Inline(b) => b,
            Text::Heap(b) => b,
        }
    }
}

/// The client's address as distribution reports it: the first `X-Forwarded-For` hop, else
/// `X-Real-Ip`, else the peer.
fn remote_addr(h: &Headers, peer: Option<std::net::SocketAddr>) -> Addr<'_> {
    let first = first_of(h.get(Headers::FORWARDED_FOR));
    if !first.is_empty() {
        return Addr::Text(first);
    }
    let real = h.get(Headers::REAL_IP);
    if !real.is_empty() {
        return Addr::Text(real);
    }
    peer.map_or(Addr::Text(""), Addr::Peer)
}

fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == key).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// The event-worthy part of a request, from its route kind (see `api::routes`): manifest,
/// blob and upload requests that change or read content; `HEAD` never (as distribution).
/// None as well when no endpoint may want its event (`may_want`, the action and, when known
/// before the answer, the media type).
pub fn observe<'a>(
    kind: &str,
    repository: Option<&'a str>,
    reference: Option<&'a str>,
    id: &'a str,
    f: RequestFacts<'_>,
    may_want: impl Fn(Action, Option<&str>) -> bool,
) -> Option<Observed<'a>> {
    let repository = repository?;
    let about = match (kind, f.method) {
        ("manifest", &Method::GET) => About::ManifestGet(reference?),
        ("manifest", &Method::PUT) => About::ManifestPut(reference?),
        ("manifest", &Method::DELETE) => About::ManifestDelete(reference?, Vec::new()),
        ("blob", &Method::GET) => About::BlobGet(reference?),
        ("blob", &Method::DELETE) => About::BlobDelete(reference?),
        ("upload", &Method::PUT) => About::UploadFinish,
        ("upload-start", &Method::POST) => {
            let q = f.query.unwrap_or("");
            if query_param(q, "mount").is_some() {
                About::Mount { from: query_param(q, "from").unwrap_or_default() }
            } else if query_param(q, "digest").is_some() {
                About::Monolithic
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let (action, media_type) = about.wanted();
    if !may_want(action, media_type) {
        return None;
    }
    Some(Observed {
        about,
        repository,
        id,
        method: f.method.clone(),
        headers: Headers::of(f.headers),
        peer: f.peer,
        absolute: f.absolute_urls.then_some(if f.tls { "https" } else { "http" }),
    })
}

impl<'a> Observed<'a> {
    /// What must be read before the request runs: the tags a manifest deleted by digest
    /// takes with it (distribution reports a tag delete for each).
    pub async fn prepare(&mut self, registry: &Registry) {
        let About::ManifestDelete(reference, tags) = &mut self.about else { return };
        let (Ok(repo), Ok(Reference::Digest(d))) = (RepoName::parse(self.repository), Reference::parse(reference))
        else {
            return;
        };
        let Ok(page) = registry.list_tags(&repo, None, None).await else { return };
        for t in page.items {
            let Ok(tag) = crate::registry::Tag::parse(&t) else { continue };
            if registry.resolve_tag(&repo, &tag).await.ok().flatten().as_ref() == Some(&d) {
                tags.push(t);
            }
        }
    }

    /// Pulls may wait for a later sync; everything else is durable before the answer.
    pub fn durable(&self) -> bool {
        !matches!(self.about, About::ManifestGet(_) | About::BlobGet(_))
    }

    /// The content's URL, as distribution's: absolute from the (forwarded) scheme and host.
    fn url(&self, kind: &'static str, digest: &'a str) -> Url<'_> {
        let h = &self.headers;
        let non_empty = |i| Some(first_of(h.get(i))).filter(|s| !s.is_empty());
        // No host to name: distribution's would be unusable too; a path is better.
        let origin = self.absolute.and_then(|own| {
            let host = non_empty(Headers::FORWARDED_HOST).or_else(|| non_empty(Headers::HOST))?;
            Some((non_empty(Headers::FORWARDED_PROTO).unwrap_or(own), host))
        });
        Url { origin, repository: self.repository, kind, digest }
    }

    /// The event of this request: `action` on `target`, at `url`.
    fn draft(&'a self, action: Action, target: DraftTarget<'a>, url: Option<Url<'a>>, actor: &'a str) -> Draft<'a> {
        Draft {
            action,
            target,
            url,
            request: DraftRequest {
                id: self.id,
                host: self.headers.get(Headers::HOST),
                method: self.method.as_str(),
                useragent: self.headers.get(Headers::USER_AGENT),
            },
            addr: remote_addr(&self.headers, self.peer),
            actor,
        }
    }
}

/// Everything an event is made of besides the request.
pub struct Context<'a> {
    pub registry: &'a Registry,
    pub include_references: bool,
}

fn references(content: &[u8]) -> Vec<Descriptor<'static>> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else { return Vec::new() };
    let one = |d: &serde_json::Value| Descriptor {
        media_type: Cow::Owned(d["mediaType"].as_str().unwrap_or("").to_string()),
        size: d["size"].as_u64().unwrap_or(0),
        digest: Cow::Owned(d["digest"].as_str().unwrap_or("").to_string()),
    };
    let mut out = Vec::new();
    if v["config"].is_object() {
        out.push(one(&v["config"]));
    }
    for key in ["layers", "manifests", "blobs"] {
        if let Some(a) = v[key].as_array() {
            out.extend(a.iter().map(one));
        }
    }
    out
}

/// What a request's event needs once the answer is known (matched at once where it is made,
/// never kept: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Shape<'a> {
    /// No event: the request failed, or caused nothing (a mount that fell back to an upload).
    Nothing,
    /// The answer said everything.
    Ready(Made<'a>),
    /// The registry must be read first.
    Read(Pending<'a>),
}

/// An event that needs a registry read before it can be drafted: what [`events_now`] leaves
/// to [`events_after_read`].
pub enum Pending<'a> {
    /// A blob event whose size a stat tells (a push, a mount, a redirected pull).
    StatBlob { action: Action, digest: &'a str, from: &'a str },
    /// A manifest event that reads what was stored: a push (its media type may come from the
    /// body), or any when references are wanted.
    ReadManifest { put: bool, reference: &'a str, digest: &'a str },
}

/// What an event is made of besides the request: its action, its target, the target's URL.
type Made<'a> = (Action, DraftTarget<'a>, Option<Url<'a>>);

/// A blob's event.
fn blob<'a>(o: &'a Observed<'a>, action: Action, digest: &'a str, size: u64, from: &'a str) -> Made<'a> {
    let target = DraftTarget {
        media_type: BLOB_MEDIA_TYPE,
        size,
        digest,
        length: size,
        repository: o.repository,
        from_repository: from,
        ..Default::default()
    };
    (action, target, Some(o.url("blobs", digest)))
}

/// A manifest's event.
fn manifest<'a>(
    o: &'a Observed<'a>,
    action: Action,
    reference: &'a str,
    digest: &'a str,
    media_type: &'a str,
    size: u64,
    references: &'a [Descriptor<'a>],
) -> Made<'a> {
    let target = DraftTarget {
        media_type,
        size,
        digest,
        length: size,
        repository: o.repository,
        tag: tag_of(reference),
        references,
        ..Default::default()
    };
    (action, target, Some(o.url("manifests", digest)))
}

/// The event as far as the answer shapes it, in distribution's terms.
fn shape<'a>(o: &'a Observed<'a>, status: StatusCode, answered: &Answered<'a>, include_references: bool) -> Shape<'a> {
    let digest = answered.digest;
    match &o.about {
        About::ManifestGet(reference) | About::ManifestPut(reference) => {
            let put = matches!(o.about, About::ManifestPut(_));
            if status != if put { StatusCode::CREATED } else { StatusCode::OK } {
                return Shape::Nothing;
            }
            if put || include_references {
                return Shape::Read(Pending::ReadManifest { put, reference, digest });
            }
            // A pull's answer says all an event needs.
            let size = answered.content_length.parse().unwrap_or(0);
            Shape::Ready(manifest(o, Action::Pull, reference, digest, answered.content_type, size, &[]))
        }
        About::ManifestDelete(reference, _) => {
            if status != StatusCode::ACCEPTED {
                return Shape::Nothing;
            }
            let mut t = DraftTarget { repository: o.repository, ..Default::default() };
            match tag_of(reference) {
                "" => t.digest = reference,
                tag => t.tag = tag,
            }
            Shape::Ready((Action::Delete, t, None))
        }
        About::BlobDelete(digest) => {
            if status != StatusCode::ACCEPTED {
                return Shape::Nothing;
            }
            let t = DraftTarget { digest, repository: o.repository, ..Default::default() };
            Shape::Ready((Action::Delete, t, None))
        }
        About::BlobGet(digest) => {
            let size = match status {
                StatusCode::OK => answered.content_length.parse().unwrap_or(0),
                StatusCode::PARTIAL_CONTENT => {
                    answered.content_range.rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0)
                }
                StatusCode::TEMPORARY_REDIRECT => {
                    return Shape::Read(Pending::StatBlob { action: Action::Pull, digest, from: "" })
                }
                _ => return Shape::Nothing,
            };
            Shape::Ready(blob(o, Action::Pull, digest, size, ""))
        }
        About::UploadFinish | About::Monolithic | About::Mount { .. } => {
            if status != StatusCode::CREATED || digest.is_empty() {
                return Shape::Nothing;
            }
            let (action, from) = match &o.about {
                About::Mount { from } => (Action::Mount, from.as_str()),
                _ => (Action::Push, ""),
            };
            Shape::Read(Pending::StatBlob { action, digest, from })
        }
    }
}

/// The first event, then (a manifest deleted by digest) a tag delete for each tag it took, in
/// distribution's order, handed to `emit` where they were drafted (a draft is some 440 bytes:
/// returned, it was copied a few times on every pull).
fn with_tag_deletes<'a, R>(
    o: &'a Observed<'a>,
    first: Option<Made<'a>>,
    actor: &'a str,
    emit: impl FnOnce(&[Draft<'_>]) -> R,
) -> R {
    let Some((action, target, url)) = first else { return emit(&[]) };
    let first = o.draft(action, target, url, actor);
    let About::ManifestDelete(_, tags) = &o.about else { return emit(std::slice::from_ref(&first)) };
    let mut all = vec![first];
    for tag in tags {
        let t = DraftTarget { repository: o.repository, tag, ..Default::default() };
        all.push(o.draft(Action::Delete, t, None, actor));
    }
    emit(&all)
}

/// The events a successful request caused, in distribution's order (none for a failed
/// request, or one that caused nothing, such as a mount that fell back to an upload), handed
/// to `emit` when its answer says all they need (a pull, a delete); else what is left to
/// read. Kept out of the asynchronous path, whose state every request's future carries and
/// moves.
pub fn events_now<'a, R>(
    o: &'a Observed<'a>,
    status: StatusCode,
    answer: &'a HeaderMap,
    actor: &'a str,
    include_references: bool,
    emit: impl FnOnce(&[Draft<'_>]) -> R,
) -> Result<R, Pending<'a>> {
    let first = match shape(o, status, &Answered::of(answer), include_references) {
        Shape::Nothing => None,
        Shape::Ready(made) => Some(made),
        Shape::Read(pending) => return Err(pending),
    };
    Ok(with_tag_deletes(o, first, actor, emit))
}

/// The events of a [`Pending`] request, once the registry was read, handed to `emit`.
pub async fn events_after_read<'a, R>(
    o: &'a Observed<'a>,
    pending: Pending<'a>,
    actor: &'a str,
    cx: &Context<'a>,
    emit: impl FnOnce(&[Draft<'_>]) -> R,
) -> R {
    let repo = || RepoName::parse(o.repository).ok();
    match pending {
        Pending::StatBlob { action, digest, from } => {
            let size = match (Digest::parse(digest).ok(), repo()) {
                (Some(d), Some(repo)) => cx.registry.stat_blob(&repo, &d).await.unwrap_or(0),
                _ => 0,
            };
            with_tag_deletes(o, Some(blob(o, action, digest, size, from)), actor, emit)
        }
        Pending::ReadManifest { put, reference, digest } => {
            // What the events borrow is kept here until they are handed on.
            let read = async {
                let d = Digest::parse(digest).ok()?;
                cx.registry.get_manifest(&repo()?, &Reference::Digest(d)).await.ok()
            };
            let Some(m) = read.await else { return with_tag_deletes(o, None, actor, emit) };
            let refs = if cx.include_references { references(&m.content) } else { Vec::new() };
            let action = if put { Action::Push } else { Action::Pull };
            let made = manifest(o, action, reference, digest, &m.media_type, m.content.len() as u64, &refs);
            with_tag_deletes(o, Some(made), actor, emit)
        }
    }
}

/// A manifest reference that is a tag (the request succeeded, so it is a valid tag or
/// digest, and only a digest has a colon).
fn tag_of(reference: &str) -> &str {
    if reference.contains(':') {
        ""
    } else {
        reference
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_address_as_distribution() {
        let mut h = HeaderMap::new();
        let peer = Some("10.0.0.1:4000".parse().unwrap());
        assert_eq!(remote_addr(&Headers::of(&h), peer), Addr::Peer(peer.unwrap()));
        assert_eq!(remote_addr(&Headers::of(&h), None), Addr::Text(""));
        h.insert("x-real-ip", "9.9.9.9".parse().unwrap());
        assert_eq!(remote_addr(&Headers::of(&h), peer), Addr::Text("9.9.9.9"));
        h.insert("x-forwarded-for", " 1.2.3.4 , 5.6.7.8".parse().unwrap());
        assert_eq!(remote_addr(&Headers::of(&h), peer), Addr::Text("1.2.3.4"));
    }

    #[test]
    fn urls_from_the_forwarded_or_own_scheme_and_host() {
        let mut h = HeaderMap::new();
        h.insert("host", "r.example:5000".parse().unwrap());
        let get = Method::GET;
        let d = "sha256:00";
        let url = |h: &HeaderMap, absolute: bool| {
            let f =
                RequestFacts { method: &get, headers: h, query: None, peer: None, absolute_urls: absolute, tls: true };
            let o = observe("manifest", Some("a/b"), Some("t"), "id", f, |_, _| true).unwrap();
            o.url("manifests", d).to_text()
        };
        assert_eq!(url(&h, true), "https://r.example:5000/v2/a/b/manifests/sha256:00");
        assert_eq!(url(&h, false), "/v2/a/b/manifests/sha256:00");
        h.insert("x-forwarded-proto", "http, https".parse().unwrap());
        h.insert("x-forwarded-host", "front.example".parse().unwrap());
        assert_eq!(url(&h, true), "http://front.example/v2/a/b/manifests/sha256:00");
        assert_eq!(url(&HeaderMap::new(), true), "/v2/a/b/manifests/sha256:00", "no host to name");
    }

    #[test]
    fn the_first_of_each_header_as_a_lookup_finds_it() {
        let mut h = HeaderMap::new();
        h.append("host", "a:5000".parse().unwrap());
        h.append("user-agent", "one".parse().unwrap());
        h.append("user-agent", "two".parse().unwrap());
        h.append("X-Forwarded-Host", "b".parse().unwrap());
        h.append("accept", "x".parse().unwrap());
        let got = Headers::of(&h);
        assert_eq!(got.get(Headers::HOST), "a:5000");
        assert_eq!(got.get(Headers::USER_AGENT), "one");
        assert_eq!(got.get(Headers::FORWARDED_HOST), "b");
        assert_eq!(got.get(Headers::FORWARDED_FOR), "");
        assert_eq!((got.get(Headers::REAL_IP), got.get(Headers::FORWARDED_PROTO)), ("", ""));
        // Longer than fits inline: on the heap, whole.
        let long = "a".repeat(INLINE);
        h.insert("x-forwarded-for", format!("{long}, 10.0.0.1").parse().unwrap());
        let got = Headers::of(&h);
        assert!(matches!(got.text, Text::Heap(_)));
        assert_eq!(got.get(Headers::FORWARDED_FOR), format!("{long}, 10.0.0.1"));
        assert_eq!((got.get(Headers::HOST), got.get(Headers::FORWARDED_HOST)), ("a:5000", "b"));
    }

    fn facts<'a>(method: &'a Method, headers: &'a HeaderMap, query: Option<&'a str>) -> RequestFacts<'a> {
        RequestFacts { method, headers, query, peer: None, absolute_urls: true, tls: false }
    }

    #[test]
    fn a_request_no_endpoint_wants_an_event_of_is_not_observed() {
        let h = HeaderMap::new();
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let cases: [(&str, Method, Option<&str>, (Action, Option<&str>)); 7] = [
            ("manifest", Method::GET, None, (Action::Pull, None)),
            ("manifest", Method::PUT, None, (Action::Push, None)),
            ("manifest", Method::DELETE, None, (Action::Delete, Some(""))),
            ("blob", Method::GET, None, (Action::Pull, Some(BLOB_MEDIA_TYPE))),
            ("blob", Method::DELETE, None, (Action::Delete, Some(""))),
            ("upload", Method::PUT, None, (Action::Push, Some(BLOB_MEDIA_TYPE))),
            ("upload-start", Method::POST, Some("mount=x&from=a/b"), (Action::Mount, Some(BLOB_MEDIA_TYPE))),
        ];
        for (kind, method, query, want) in cases {
            let asked = std::cell::Cell::new(None);
            let refused = observe(kind, Some("a/b"), Some(d), "id", facts(&method, &h, query), |a, mt| {
                asked.set(Some((a, mt.map(str::to_string))));
                false
            });
            assert!(refused.is_none(), "{kind} {method}");
            assert_eq!(asked.take(), Some((want.0, want.1.map(str::to_string))), "{kind} {method}");
            let observed = observe(kind, Some("a/b"), Some(d), "id", facts(&method, &h, query), |_, _| true);
            assert!(observed.is_some(), "{kind} {method}");
        }
        // A HEAD causes no event: the question is not even asked.
        assert!(observe("manifest", Some("a/b"), Some("t"), "id", facts(&Method::HEAD, &h, None), |_, _| panic!())
            .is_none());
    }

    #[test]
    fn references_of_an_image_and_an_index() {
        let image = br#"{"config":{"mediaType":"c","size":2,"digest":"sha256:c"},"layers":[{"mediaType":"l","size":3,"digest":"sha256:l"}]}"#;
        let r = references(image);
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], Descriptor { media_type: "l".into(), size: 3, digest: "sha256:l".into() });
        assert!(references(b"not json").is_empty());
    }
}
