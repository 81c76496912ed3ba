//! An event as distribution writes it (`notifications/event.go`), field for field and with its
//! JSON names and omissions, so receivers written for distribution and GitLab read Berth's
//! unchanged; and the envelope a batch travels in.

use std::borrow::Cow;

use bytes::BytesMut;

use super::stamp::Stamp;
use serde::{Deserialize, Serialize};

/// The envelope's media type (distribution's `EventsMediaType`).
pub const EVENTS_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

/// A blob's media type in events, as distribution reports every blob.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    Pull,
    Delete,
    Mount,
}

const _: () = {
    let mut i = 0;
    while i < Action::ALL.len() {
        assert!(Action::ALL[i] as usize == i, "Action::ALL out of discriminant order");
        i += 1;
    }
};

impl Action {
    /// Each action at its own discriminant: tables built from it are indexed by `action as usize`
    /// (checked at compile time).
    pub const ALL: [Action; 4] = [Action::Push, Action::Pull, Action::Delete, Action::Mount];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Mount => "mount",
        }
    }
}

fn zero(n: &u64) -> bool {
    *n == 0
}

/// Event fields borrow from the request they describe (no copies on the request path) or own
/// what was computed for them; stored events deserialize borrowing from their JSON.
pub type Str<'a> = Cow<'a, str>;

fn no_str(s: &Str<'_>) -> bool {
    s.is_empty()
}

/// distribution's `Descriptor` (the fields Berth fills).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor<'a> {
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub media_type: Str<'a>,
    #[serde(default, skip_serializing_if = "zero")]
    pub size: u64,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub digest: Str<'a>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target<'a> {
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub media_type: Str<'a>,
    #[serde(default, skip_serializing_if = "zero")]
    pub size: u64,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub digest: Str<'a>,
    #[serde(default, skip_serializing_if = "zero")]
    pub length: u64,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub repository: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub from_repository: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub url: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub tag: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Descriptor<'a>>,
}

/// The request that caused the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub addr: Str<'a>,
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub host: Str<'a>,
    #[serde(borrow)]
    pub method: Str<'a>,
    #[serde(borrow)]
    pub useragent: Str<'a>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor<'a> {
    #[serde(borrow, default, skip_serializing_if = "no_str")]
    pub name: Str<'a>,
}

/// The registry instance that produced the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(default, rename = "instanceID", skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
}

/// A [`Source`] with its JSON (and the `}` that closes an event after it), written once:
/// every event repeats it.
#[derive(Debug, Clone)]
pub struct SourceJson {
    pub source: Source,
    json: Vec<u8>,
}

impl SourceJson {
    pub fn new(source: Source) -> SourceJson {
        let mut json = serde_json::to_vec(&source).expect("a source serializes");
        // Every event ends with its source.
        json.push(b'}');
        SourceJson { source, json }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    /// RFC 3339 with nanoseconds, UTC.
    #[serde(borrow)]
    pub timestamp: Str<'a>,
    pub action: Action,
    #[serde(borrow)]
    pub target: Target<'a>,
    #[serde(borrow)]
    pub request: RequestRecord<'a>,
    #[serde(borrow)]
    pub actor: Actor<'a>,
    pub source: Cow<'a, Source>,
}

impl Event<'_> {
    /// Whether an endpoint's ignore rules let the event through.
    pub fn passes(&self, ignored_media_types: &[String], ignored_actions: &[String]) -> bool {
        !ignored_actions.iter().any(|a| a == self.action.as_str())
            && !ignored_media_types.iter().any(|m| m == &self.target.media_type)
    }
}

/// The client's address in a [`Draft`]: a header's text, or the connection's peer, written
/// (as `SocketAddr`'s `Display` does) only into the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr<'a> {
    Text(&'a str),
    Peer(std::net::SocketAddr),
}

impl Addr<'_> {
    pub fn to_text(&self) -> Str<'_> {
        match self {
            Addr::Text(s) => Cow::Borrowed(s),
            Addr::Peer(p) => Cow::Owned(p.to_string()),
        }
    }
}

/// A content URL in a [`Draft`], as distribution's: `{scheme}://{host}/v2/{repository}/{kind}/
/// {digest}`, or only the path when there is no host to name. Written only into the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    /// Scheme and host.
    pub origin: Option<(&'a str, &'a str)>,
    pub repository: &'a str,
    /// `manifests` or `blobs`.
    pub kind: &'static str,
    pub digest: &'a str,
}

impl Url<'_> {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some((scheme, host)) = self.origin {
            out.extend([scheme, "://", host]);
        }
        out.extend(["/v2/", self.repository, "/", self.kind, "/", self.digest]);
        out
    }
}

/// `"k":` as it is written: a number's key, whole (one copy instead of three).
macro_rules! key {
    ($k:literal) => {
        concat!("\"", $k, "\":").as_bytes()
    };
}

/// `"k":"`: a string's key and its value's opening quote.
macro_rules! str_key {
    ($k:literal) => {
        concat!("\"", $k, "\":\"").as_bytes()
    };
}

/// An event as a request makes it, borrowing everything from the request and its answer:
/// written straight into the JSON the outbox keeps ([`Draft::write_json`]), with no copy of
/// its strings, no URL or address built first, and no allocation. The target's URL (none for
/// a delete) and the request's address are `url` and `addr`, written only into the JSON.
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    pub action: Action,
    pub target: DraftTarget<'a>,
    pub url: Option<Url<'a>>,
    pub request: DraftRequest<'a>,
    pub addr: Addr<'a>,
    pub actor: &'a str,
}

/// A [`Target`] as a request drafts it: borrowed only (no drop glue, and a third smaller).
#[derive(Debug, Clone, Copy, Default)]
pub struct DraftTarget<'a> {
    pub media_type: &'a str,
    pub size: u64,
    pub digest: &'a str,
    pub length: u64,
    pub repository: &'a str,
    pub from_repository: &'a str,
    pub tag: &'a str,
    pub references: &'a [Descriptor<'a>],
}

/// A [`RequestRecord`] as a request drafts it (its `addr` is [`Draft::addr`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DraftRequest<'a> {
    pub id: &'a str,
    pub host: &'a str,
    pub method: &'a str,
    pub useragent: &'a str,
}

impl<'a> Draft<'a> {
    /// The event it becomes with `stamp` and `source` (what its JSON says).
    pub fn to_event(&self, stamp: &'a Stamp, source: &'a Source) -> Event<'a> {
        let t = &self.target;
        let target = Target {
            media_type: Cow::Borrowed(t.media_type),
            size: t.size,
            digest: Cow::Borrowed(t.digest),
            length: t.length,
            repository: Cow::Borrowed(t.repository),
            from_repository: Cow::Borrowed(t.from_repository),
            url: self.url.map_or(Cow::Borrowed(""), |u| Cow::Owned(u.to_text())),
            tag: Cow::Borrowed(t.tag),
            references: t.references.to_vec(),
        };
        let r = &self.request;
        let request = RequestRecord {
            id: Cow::Borrowed(r.id),
            addr: Cow::Owned(self.addr.to_text().into_owned()),
            host: Cow::Borrowed(r.host),
            method: Cow::Borrowed(r.method),
            useragent: Cow::Borrowed(r.useragent),
        };
        Event {
            id: Cow::Borrowed(stamp.id()),
            timestamp: Cow::Borrowed(stamp.time()),
            action: self.action,
            target,
            request,
            actor: Actor { name: Cow::Borrowed(self.actor) },
            source: Cow::Borrowed(source),
        }
    }

    /// The most bytes its JSON takes unless a string needs escaping: every key, quote and
    /// separator, both numbers, and each string as it is.
    pub fn json_len(&self, source: &SourceJson) -> usize {
        let t = &self.target;
        let r = &self.request;
        let strings = [
            t.media_type,
            t.digest,
            t.repository,
            t.from_repository,
            t.tag,
            r.id,
            r.host,
            r.method,
            r.useragent,
            self.actor,
        ];
        let url = self.url.map_or(0, |u| {
            u.origin.map_or(0, |(s, h)| s.len() + h.len() + 3) + u.repository.len() + u.kind.len() + u.digest.len() + 6
        });
        let addr = match self.addr {
            Addr::Text(a) => a.len(),
            Addr::Peer(_) => 64,
        };
        let references: usize = t.references.iter().map(|d| 64 + d.media_type.len() + d.digest.len()).sum();
        512 + strings.iter().map(|s| s.len()).sum::<usize>() + url + addr + references + source.json.len()
    }

    /// Appends the event's JSON to `out`: byte for byte what `serde_json` writes for
    /// [`to_event`](Self::to_event) (the tests hold the two together). Strings a client sent
    /// are copied as they are while a word-at-a-time check notes whether any held a byte JSON
    /// escapes; only then (a quote in a user agent, say) is the event written again by
    /// `serde_json`. What Berth validated is copied unchecked (`JsonWriter::valid`).
    /// `bound` is [`json_len`](Self::json_len)'s answer, asked once by the caller.
    pub fn write_json(&self, stamp: &Stamp, source: &SourceJson, bound: usize, out: &mut BytesMut) {
        let t = &self.target;
        let r = &self.request;
        let start = out.len();
        // Written into zeroed room in place (no capacity check per piece); what is left over is
        // cut off at the end.
        out.resize(start + bound, 0);
        let mut w = JsonWriter { buf: &mut out[start..], at: 0, escapes: 0 };
        w.raw(b"{\"id\":\"");
        w.raw(stamp.id_bytes());
        w.raw(b"\",\"timestamp\":\"");
        w.raw(stamp.time_bytes());
        w.raw(b"\",\"action\":\"");
        w.raw(self.action.as_str().as_bytes());
        w.raw(b"\",\"target\":{");
        {
            let mut o = JsonObject { w: &mut w, first: true };
            o.str_nonempty(str_key!("mediaType"), t.media_type);
            o.u64_nonzero(key!("size"), t.size);
            o.valid_nonempty(str_key!("digest"), t.digest);
            o.u64_nonzero(key!("length"), t.length);
            o.valid_nonempty(str_key!("repository"), t.repository);
            o.str_nonempty(str_key!("fromRepository"), t.from_repository);
            if let Some(u) = &self.url {
                o.key(str_key!("url"));
                if let Some((scheme, host)) = u.origin {
                    o.w.value(scheme);
                    o.w.raw(b"://");
                    o.w.value(host);
                }
                o.w.raw(b"/v2/");
                o.w.valid(u.repository);
                o.w.raw(b"/");
                o.w.raw(u.kind.as_bytes());
                o.w.raw(b"/");
                o.w.valid(u.digest);
                o.w.raw(b"\"");
            }
            o.valid_nonempty(str_key!("tag"), t.tag);
            if !t.references.is_empty() {
                o.key(b"\"references\":[");
                for (i, d) in t.references.iter().enumerate() {
                    if i > 0 {
                        o.w.raw(b",");
                    }
                    let mut ro = o.w.object();
                    ro.str_nonempty(str_key!("mediaType"), &d.media_type);
                    ro.u64_nonzero(key!("size"), d.size);
                    ro.str_nonempty(str_key!("digest"), &d.digest);
                    ro.close();
                }
                o.w.raw(b"]");
            }
            o.close();
        }
        // Each piece closes the string before it: one copy where there were two.
        w.raw(b",\"request\":{\"id\":\"");
        w.valid(r.id);
        match self.addr {
            Addr::Text("") => {}
            Addr::Text(a) => {
                w.raw(b"\",\"addr\":\"");
                w.value(a);
            }
            Addr::Peer(p) => {
                w.raw(b"\",\"addr\":\"");
                write_peer(&mut w, p);
            }
        }
        if !r.host.is_empty() {
            w.raw(b"\",\"host\":\"");
            w.value(r.host);
        }
        w.raw(b"\",\"method\":\"");
        w.valid(r.method);
        w.raw(b"\",\"useragent\":\"");
        w.value(r.useragent);
        if self.actor.is_empty() {
            w.raw(b"\"},\"actor\":{},\"source\":");
        } else {
            w.raw(b"\"},\"actor\":{\"name\":\"");
            w.value(self.actor);
            w.raw(b"\"},\"source\":");
        }
        // The source's object and the event's closing brace.
        w.raw(&source.json);
        let (written, escapes) = (w.at, w.escapes);
        if escapes != 0 || written > bound {
            out.truncate(start);
            self.write_json_escaped(stamp, source, out);
        } else {
            out.truncate(start + written);
        }
    }
}

impl Draft<'_> {
    /// [`write_json`](Self::write_json) for an event with a string JSON escapes (a quote in a
    /// user agent, say): rare, so kept out of the code every event runs through.
    #[cold]
    #[inline(never)]
    fn write_json_escaped(&self, stamp: &Stamp, source: &SourceJson, out: &mut BytesMut) {
        serde_json::to_writer(bytes::BufMut::writer(out), &self.to_event(stamp, &source.source))
            .expect("an event serializes");
    }
}

/// `ip:port` as `SocketAddr`'s `Display` writes it; an IPv4 peer without the formatting
/// machinery (every pull's event names its client).
fn write_peer(w: &mut JsonWriter<'_>, peer: std::net::SocketAddr) {
    match peer {
        std::net::SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    w.raw(b".");
                }
                w.raw(digits.format(octet).as_bytes());
            }
            w.raw(b":");
            w.raw(digits.format(v4.port()).as_bytes());
        }
        std::net::SocketAddr::V6(_) => w.raw(peer.to_string().as_bytes()),
    }
}

/// JSON written by copying into room made for it: keys are Berth's own, string values are
/// copied unescaped while `escapes` collects whether any of them needed escaping (then the
/// caller writes the event again). A piece that would not fit is counted, not written: `at`
/// past the room's end tells the caller to write it again as well.
struct JsonWriter<'o> {
    buf: &'o mut [u8],
    at: usize,
    /// Nonzero once a value held a control character, `"` or `\`.
    escapes: u64,
}

impl<'o> JsonWriter<'o> {
    #[inline]
    fn raw(&mut self, b: &[u8]) {
        if let Some(room) = self.buf.get_mut(self.at..self.at + b.len()) {
            room.copy_from_slice(b);
        }
        self.at += b.len();
    }

    #[inline(never)]
    fn value(&mut self, s: &str) {
        self.escapes |= escape_bits(s.as_bytes());
        self.raw(s.as_bytes());
    }

    /// A value Berth validated before the event was made (a repository name, a tag, a digest,
    /// a method, its own request id): their grammars hold nothing JSON escapes, so they are
    /// copied unchecked.
    #[inline]
    fn valid(&mut self, s: &str) {
        debug_assert_eq!(escape_bits(s.as_bytes()), 0, "{s:?} is not a validated name");
        self.raw(s.as_bytes());
    }

    fn object(&mut self) -> JsonObject<'_, 'o> {
        self.raw(b"{");
        JsonObject { w: self, first: true }
    }
}

/// An object being written whose fields may each be left out. Each kind of field is written by
/// a function of its own, called for every field of that kind, not inlined: inlined, they made
/// `write_json` 17 KB of code (now 4 KB), and a manifest GET already runs through more code than
/// the 32 KiB instruction cache holds (callgrind: about 1,800 misses per GET). The GET figure did
/// not move measurably either way.
struct JsonObject<'w, 'o> {
    w: &'w mut JsonWriter<'o>,
    first: bool,
}

impl JsonObject<'_, '_> {
    /// `k` is the key as written, quoted and with its colon (`key!`, `str_key!`).
    #[inline]
    fn key(&mut self, k: &[u8]) {
        if !self.first {
            self.w.raw(b",");
        }
        self.first = false;
        self.w.raw(k);
    }

    #[inline(never)]
    fn str_nonempty(&mut self, k: &[u8], v: &str) {
        if !v.is_empty() {
            self.key(k);
            self.w.value(v);
            self.w.raw(b"\"");
        }
    }

    #[inline(never)]
    fn valid_nonempty(&mut self, k: &[u8], v: &str) {
        if !v.is_empty() {
            self.key(k);
            self.w.valid(v);
            self.w.raw(b"\"");
        }
    }

    #[inline(never)]
    fn u64_nonzero(&mut self, k: &[u8], v: u64) {
        if v != 0 {
            self.key(k);
            self.w.raw(itoa::Buffer::new().format(v).as_bytes());
        }
    }

    fn close(self) {
        self.w.raw(b"}");
    }
}

/// Nonzero iff `s` holds a byte JSON must escape (a control character, `"` or `\`), eight
/// bytes at a time with no branch per byte; the last word overlaps the one before it, so no
/// byte is copied to pad it. Strings shorter than a word are looked at byte by byte.
#[inline(always)]
fn escape_bits(s: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is below `n` (n <= 0x80) iff its high bit is set in the result.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * n as u64) & !x & HIGHS;
    let zero = |x: u64| below(x, 1);
    let word = |x: u64| below(x, 0x20) | zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64));
    let load = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"));
    if s.len() < 8 {
        return s.iter().fold(0, |f, &b| f | u64::from(b < 0x20 || b == b'"' || b == b'\\'));
    }
    let mut found = 0;
    let mut at = 0;
    while at + 8 <= s.len() {
        found |= word(load(at));
        at += 8;
    }
    if at < s.len() {
        found |= word(load(s.len() - 8));
    }
    found
}

/// Whether `s` holds a byte JSON must escape.
#[cfg(test)]
fn needs_escape(s: &[u8]) -> bool {
    escape_bits(s) != 0
}

/// `{"events":[...]}` from events already serialized one by one (as the outbox stores them).
pub fn envelope<'a>(out: &mut Vec<u8>, events: impl IntoIterator<Item = &'a [u8]> + Clone) {
    let size: usize = events.clone().into_iter().map(|e| e.len() + 1).sum();
    out.clear();
    out.reserve(size + 16);
    out.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_check_finds_every_byte_json_escapes_wherever_it_is() {
        let scalar = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(needs_escape(&s), scalar(&s), "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(!needs_escape("grüße/ünïcode-repository-name".as_bytes()));
    }

    fn event<'a>() -> Event<'a> {
        Event {
            id: "i".into(),
            timestamp: "2026-01-01T00:00:00.000000001Z".into(),
            action: Action::Delete,
            target: Target { digest: "sha256:x".into(), repository: "r".into(), ..Default::default() },
            request: RequestRecord { id: "q".into(), method: "DELETE".into(), ..Default::default() },
            actor: Actor::default(),
            source: Cow::Owned(Source { addr: "h:5000".into(), instance_id: "u".into() }),
        }
    }

    #[test]
    fn distribution_names_and_omissions() {
        let e = event();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"i","timestamp":"2026-01-01T00:00:00.000000001Z","action":"delete",
                "target":{"digest":"sha256:x","repository":"r"},
                "request":{"id":"q","method":"DELETE","useragent":""},"actor":{},
                "source":{"addr":"h:5000","instanceID":"u"}})
        );
        let mut env = b"the last batch".to_vec();
        envelope(&mut env, [br#"{"a":1}"#.as_slice(), br#"{"b":2}"#.as_slice()]);
        assert_eq!(env, br#"{"events":[{"a":1},{"b":2}]}"#);
        assert!(!e.passes(&[], &["delete".into()]));
        assert!(e.passes(&["application/octet-stream".into()], &["pull".into()]));
    }

    #[test]
    fn a_piece_that_does_not_fit_is_counted_not_written() {
        let mut room = [0u8; 4];
        let mut w = JsonWriter { buf: &mut room, at: 0, escapes: 0 };
        w.raw(b"abc");
        w.raw(b"def");
        w.value("\"");
        assert_eq!((w.at, w.escapes != 0), (7, true));
        assert_eq!(&room, b"abc\0");
    }

    #[test]
    fn peers_as_display_writes_them() {
        for a in ["127.0.0.1:5000", "10.200.3.45:65535", "0.0.0.0:0", "[::1]:5000", "[fe80::1%2]:80"] {
            let a: std::net::SocketAddr = a.parse().unwrap();
            let mut out = vec![0; 64];
            let mut w = JsonWriter { buf: &mut out, at: 0, escapes: 0 };
            write_peer(&mut w, a);
            let n = w.at;
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), a.to_string());
        }
    }

    fn draft<'a>() -> Draft<'a> {
        Draft {
            action: Action::Delete,
            target: DraftTarget { digest: "sha256:x", repository: "r", ..Default::default() },
            url: None,
            request: DraftRequest { id: "q", method: "DELETE", ..Default::default() },
            addr: Addr::Text(""),
            actor: "",
        }
    }

    #[test]
    fn the_hand_written_json_is_serdes_byte_for_byte() {
        let source = SourceJson::new(Source { addr: "h:5000".into(), instance_id: "u\"\n".into() });
        let no_source = SourceJson::new(Source::default());
        let references =
            [Descriptor { media_type: "c".into(), size: 2, digest: "sha256:c".into() }, Descriptor::default()];
        let bare = draft();
        let mut full = draft();
        full.action = Action::Mount;
        full.target = DraftTarget {
            media_type: "application/vnd.oci.image.manifest.v1+json",
            size: 7,
            digest: "sha256:abc",
            length: 7,
            repository: "team/app",
            from_repository: "base/img",
            tag: "v1.0",
            references: &references,
            ..Default::default()
        };
        full.url = Some(Url {
            origin: Some(("https", "r.example:5000")),
            repository: "team/app",
            kind: "manifests",
            digest: "sha256:abc",
        });
        full.request = DraftRequest { id: "id-1", host: "r.example", method: "GET", useragent: "skopeo/1.0 é ☃" };
        full.addr = Addr::Peer("10.0.0.1:4000".parse().unwrap());
        full.actor = "alice";
        let mut path_only = full.clone();
        path_only.url = Some(Url { origin: None, ..path_only.url.unwrap() });
        path_only.addr = Addr::Text("1.2.3.4");
        let mut escaped = full.clone();
        escaped.request.useragent = "skopeo/1.0 \"quoted\" \\ tab\t nul\u{0} é ☃";
        escaped.actor = "alice\n";
        let mut escaped_host = full.clone();
        escaped_host.url = Some(Url { origin: Some(("http", "h\"ost")), ..full.url.unwrap() });
        let mut v6 = full.clone();
        v6.addr = Addr::Peer("[::1]:5000".parse().unwrap());
        let stamp = Stamp::now();
        for (i, d) in [bare, full, path_only, escaped, escaped_host, v6].into_iter().enumerate() {
            for src in [&source, &no_source] {
                let mut mine = BytesMut::from(&b"["[..]);
                d.write_json(&stamp, src, d.json_len(src), &mut mine);
                let e = d.to_event(&stamp, &src.source);
                assert_eq!(
                    String::from_utf8(mine[1..].to_vec()).unwrap(),
                    serde_json::to_string(&e).unwrap(),
                    "case {i}"
                );
                let back: Event<'_> = serde_json::from_slice(&mine[1..]).unwrap();
                assert_eq!(back, e, "case {i}");
            }
        }
    }
}
