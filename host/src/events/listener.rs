//! Turns a served request into its event, in one place at the API boundary (as distribution's
//! `notifications/listener.go` decorates a repository): `observe` notes what a request is about
//! before it runs, `event` shapes the event from the registry's answer. Handlers know nothing
//! of events.

use http::{HeaderMap, Method, StatusCode};

use super::record::{Action, Actor, Descriptor, Event, RequestRecord, Source, Target, BLOB_MEDIA_TYPE};
use crate::registry::{Digest, Reference, Registry, RepoName};

/// What a request that may cause an event is about.
#[derive(Debug, Clone)]
enum About {
    ManifestGet(String),
    ManifestPut(String),
    /// The reference, and (by digest) the tags that pointed at it, found before the delete.
    ManifestDelete(String, Vec<String>),
    BlobGet(String),
    BlobDelete(String),
    /// `PUT` of an upload session: the digest comes back in the answer.
    UploadFinish,
    /// `POST .../blobs/uploads/` with `mount` (and `from`) or a monolithic `digest`.
    Mount {
        from: String,
    },
    Monolithic,
}

/// A request noted before it runs.
#[derive(Debug, Clone)]
pub struct Observed {
    about: About,
    repository: String,
    request: RequestRecord,
    /// `scheme://host` for absolute URLs; None: relative.
    origin: Option<String>,
}

/// The request facts the API layer hands over.
pub struct RequestFacts<'a> {
    pub id: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub peer: Option<std::net::SocketAddr>,
    pub origin: Option<String>,
}

fn header(h: &HeaderMap, k: &str) -> String {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// The client's address as distribution reports it: the first `X-Forwarded-For` hop, else
/// `X-Real-Ip`, else the peer.
fn remote_addr(h: &HeaderMap, peer: Option<std::net::SocketAddr>) -> String {
    let first = header(h, "x-forwarded-for").split(',').next().unwrap_or("").trim().to_string();
    if !first.is_empty() {
        return first;
    }
    let real = header(h, "x-real-ip");
    if !real.is_empty() {
        return real;
    }
    peer.map(|p| p.to_string()).unwrap_or_default()
}

fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == key).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// The event-worthy part of a request, from its route kind (see `api::routes`): manifest,
/// blob and upload requests that change or read content; `HEAD` never (as distribution).
pub fn observe(kind: &str, repository: Option<&str>, reference: Option<&str>, f: RequestFacts<'_>) -> Option<Observed> {
    let repository = repository?.to_string();
    let about = match (kind, f.method) {
        ("manifest", &Method::GET) => About::ManifestGet(reference?.to_string()),
        ("manifest", &Method::PUT) => About::ManifestPut(reference?.to_string()),
        ("manifest", &Method::DELETE) => About::ManifestDelete(reference?.to_string(), Vec::new()),
        ("blob", &Method::GET) => About::BlobGet(reference?.to_string()),
        ("blob", &Method::DELETE) => About::BlobDelete(reference?.to_string()),
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
    Some(Observed {
        about,
        repository,
        request: RequestRecord {
            id: f.id.to_string(),
            addr: remote_addr(f.headers, f.peer),
            host: header(f.headers, "host"),
            method: f.method.to_string(),
            useragent: header(f.headers, "user-agent"),
        },
        origin: f.origin,
    })
}

impl Observed {
    /// What must be read before the request runs: the tags a manifest deleted by digest
    /// takes with it (distribution reports a tag delete for each).
    pub async fn prepare(&mut self, registry: &Registry) {
        let About::ManifestDelete(reference, tags) = &mut self.about else { return };
        let (Ok(repo), Ok(Reference::Digest(d))) = (RepoName::parse(&self.repository), Reference::parse(reference))
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

    fn url(&self, what: &str, digest: &str) -> String {
        let path = format!("/v2/{}/{what}/{digest}", self.repository);
        match &self.origin {
            Some(o) => format!("{o}{path}"),
            None => path,
        }
    }
}

/// Everything an event is made of besides the request.
pub struct Context<'a> {
    pub registry: &'a Registry,
    pub source: &'a Source,
    pub include_references: bool,
}

fn references(content: &[u8]) -> Vec<Descriptor> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else { return Vec::new() };
    let one = |d: &serde_json::Value| Descriptor {
        media_type: d["mediaType"].as_str().unwrap_or("").to_string(),
        size: d["size"].as_u64().unwrap_or(0),
        digest: d["digest"].as_str().unwrap_or("").to_string(),
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

fn new_event(action: Action, target: Target, o: &Observed, actor: &str, source: &Source) -> Event {
    Event {
        // From the thread's generator, not a system call per event.
        id: uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        action,
        target,
        request: o.request.clone(),
        actor: Actor { name: actor.to_string() },
        source: source.clone(),
    }
}

/// The events a successful request caused, in distribution's order (none for a failed
/// request, or one that caused nothing, such as a mount that fell back to an upload).
pub async fn events(o: &Observed, status: StatusCode, answer: &HeaderMap, actor: &str, cx: &Context<'_>) -> Vec<Event> {
    let Some(first) = event(o, status, answer, actor, cx).await else { return Vec::new() };
    let mut out = vec![first];
    if let About::ManifestDelete(_, tags) = &o.about {
        for tag in tags {
            let t = Target { repository: o.repository.clone(), tag: tag.clone(), ..Default::default() };
            out.push(new_event(Action::Delete, t, o, actor, cx.source));
        }
    }
    out
}

async fn event(o: &Observed, status: StatusCode, answer: &HeaderMap, actor: &str, cx: &Context<'_>) -> Option<Event> {
    let repo = RepoName::parse(&o.repository).ok()?;
    let answered_digest = header(answer, "docker-content-digest");
    let blob = |digest: &str, size: u64, from: String| Target {
        media_type: BLOB_MEDIA_TYPE.to_string(),
        size,
        digest: digest.to_string(),
        length: size,
        repository: o.repository.clone(),
        from_repository: from,
        url: o.url("blobs", digest),
        ..Default::default()
    };
    let stat = |digest: &str| {
        let d = Digest::parse(digest).ok();
        let repo = repo.clone();
        async move {
            match d {
                Some(d) => cx.registry.stat_blob(&repo, &d).await.unwrap_or(0),
                None => 0,
            }
        }
    };
    let (action, target) = match &o.about {
        About::ManifestGet(reference) | About::ManifestPut(reference) => {
            let put = matches!(o.about, About::ManifestPut(_));
            if status != if put { StatusCode::CREATED } else { StatusCode::OK } {
                return None;
            }
            // A pull's answer says all an event needs unless references are wanted; a push
            // reads back what was stored (its media type may come from the body).
            let (media_type, size, references) = if !put && !cx.include_references {
                let size = header(answer, "content-length").parse().unwrap_or(0);
                (header(answer, "content-type"), size, Vec::new())
            } else {
                let d = Digest::parse(&answered_digest).ok()?;
                let m = cx.registry.get_manifest(&repo, &Reference::Digest(d)).await.ok()?;
                let refs = if cx.include_references { references(&m.content) } else { Vec::new() };
                (m.media_type.clone(), m.content.len() as u64, refs)
            };
            let tag = match Reference::parse(reference) {
                Ok(Reference::Tag(t)) => t.to_string(),
                _ => String::new(),
            };
            let target = Target {
                media_type,
                size,
                digest: answered_digest.clone(),
                length: size,
                repository: o.repository.clone(),
                url: o.url("manifests", &answered_digest),
                tag,
                references,
                ..Default::default()
            };
            (if put { Action::Push } else { Action::Pull }, target)
        }
        About::ManifestDelete(reference, _) => {
            if status != StatusCode::ACCEPTED {
                return None;
            }
            let mut t = Target { repository: o.repository.clone(), ..Default::default() };
            match Reference::parse(reference).ok()? {
                Reference::Tag(tag) => t.tag = tag.to_string(),
                Reference::Digest(d) => t.digest = d.to_string(),
            }
            (Action::Delete, t)
        }
        About::BlobDelete(digest) => {
            if status != StatusCode::ACCEPTED {
                return None;
            }
            (Action::Delete, Target { digest: digest.clone(), repository: o.repository.clone(), ..Default::default() })
        }
        About::BlobGet(digest) => {
            let size = match status {
                StatusCode::OK => header(answer, "content-length").parse().unwrap_or(0),
                StatusCode::PARTIAL_CONTENT => {
                    header(answer, "content-range").rsplit('/').next().and_then(|s| s.parse().ok()).unwrap_or(0)
                }
                StatusCode::TEMPORARY_REDIRECT => stat(digest).await,
                _ => return None,
            };
            (Action::Pull, blob(digest, size, String::new()))
        }
        About::UploadFinish | About::Monolithic | About::Mount { .. } => {
            if status != StatusCode::CREATED || answered_digest.is_empty() {
                return None;
            }
            let size = stat(&answered_digest).await;
            let (action, from) = match &o.about {
                About::Mount { from } => (Action::Mount, from.clone()),
                _ => (Action::Push, String::new()),
            };
            (action, blob(&answered_digest, size, from))
        }
    };
    Some(new_event(action, target, o, actor, cx.source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_address_as_distribution() {
        let mut h = HeaderMap::new();
        let peer = Some("10.0.0.1:4000".parse().unwrap());
        assert_eq!(remote_addr(&h, peer), "10.0.0.1:4000");
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        assert_eq!(remote_addr(&h, peer), "1.2.3.4");
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
