//! An event as distribution writes it (`notifications/event.go`), field for field and with its
//! JSON names and omissions, so receivers written for distribution and GitLab read Berth's
//! unchanged; and the envelope a batch travels in.

use std::borrow::Cow;

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

impl Action {
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

    /// Appends the event's JSON to `out`: byte for byte what `serde_json` writes for it (the
    /// tests hold the two together). Every string is copied as it is while a word-at-a-time
    /// check notes whether any held a byte JSON escapes; only then (a quote in a user agent, say)
    /// is the event written again by `serde_json`. Writing each string through its own escaping
    /// call was the largest single cost of a pull's event.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let t = &self.target;
        let r = &self.request;
        let mut w = JsonWriter { out, escapes: 0 };
        w.out.reserve(
            160 + self.id.len()
                + self.timestamp.len()
                + t.media_type.len()
                + t.digest.len()
                + t.repository.len()
                + t.from_repository.len()
                + t.url.len()
                + t.tag.len()
                + r.id.len()
                + r.addr.len()
                + r.host.len()
                + r.method.len()
                + r.useragent.len()
                + self.actor.name.len()
                + self.source.addr.len()
                + self.source.instance_id.len(),
        );
        w.raw(b"{\"id\":\"");
        w.value(&self.id);
        w.raw(b"\",\"timestamp\":\"");
        w.value(&self.timestamp);
        w.raw(b"\",\"action\":\"");
        w.raw(self.action.as_str().as_bytes());
        w.raw(b"\",\"target\":");
        {
            let mut o = w.object();
            o.str_nonempty(b"mediaType", &t.media_type);
            o.u64_nonzero(b"size", t.size);
            o.str_nonempty(b"digest", &t.digest);
            o.u64_nonzero(b"length", t.length);
            o.str_nonempty(b"repository", &t.repository);
            o.str_nonempty(b"fromRepository", &t.from_repository);
            o.str_nonempty(b"url", &t.url);
            o.str_nonempty(b"tag", &t.tag);
            if !t.references.is_empty() {
                o.key(b"references");
                o.w.raw(b"[");
                for (i, d) in t.references.iter().enumerate() {
                    if i > 0 {
                        o.w.raw(b",");
                    }
                    let mut ro = o.w.object();
                    ro.str_nonempty(b"mediaType", &d.media_type);
                    ro.u64_nonzero(b"size", d.size);
                    ro.str_nonempty(b"digest", &d.digest);
                    ro.close();
                }
                o.w.raw(b"]");
            }
            o.close();
        }
        w.raw(b",\"request\":{\"id\":\"");
        w.value(&r.id);
        w.raw(b"\"");
        for (key, v) in [(&b",\"addr\":\""[..], &r.addr), (b",\"host\":\"", &r.host)] {
            if !v.is_empty() {
                w.raw(key);
                w.value(v);
                w.raw(b"\"");
            }
        }
        w.raw(b",\"method\":\"");
        w.value(&r.method);
        w.raw(b"\",\"useragent\":\"");
        w.value(&r.useragent);
        w.raw(b"\"},\"actor\":");
        {
            let mut o = w.object();
            o.str_nonempty(b"name", &self.actor.name);
            o.close();
        }
        w.raw(b",\"source\":");
        {
            let mut o = w.object();
            o.str_nonempty(b"addr", &self.source.addr);
            o.str_nonempty(b"instanceID", &self.source.instance_id);
            o.close();
        }
        w.raw(b"}");
        if w.escapes != 0 {
            out.truncate(start);
            serde_json::to_writer(&mut *out, self).expect("an event serializes");
        }
    }
}

/// JSON written by copying: keys are Berth's own, string values are copied unescaped while
/// `escapes` collects whether any of them needed escaping (then the caller writes it again).
struct JsonWriter<'o> {
    out: &'o mut Vec<u8>,
    /// Nonzero once a value held a control character, `"` or `\`.
    escapes: u64,
}

impl<'o> JsonWriter<'o> {
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    #[inline(always)]
    fn value(&mut self, s: &str) {
        self.escapes |= escape_bits(s.as_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    #[inline(always)]
    fn object(&mut self) -> JsonObject<'_, 'o> {
        self.raw(b"{");
        JsonObject { w: self, first: true }
    }
}

/// An object being written whose fields may each be left out.
struct JsonObject<'w, 'o> {
    w: &'w mut JsonWriter<'o>,
    first: bool,
}

impl JsonObject<'_, '_> {
    #[inline(always)]
    fn key(&mut self, k: &[u8]) {
        if !self.first {
            self.w.raw(b",");
        }
        self.first = false;
        self.w.raw(b"\"");
        self.w.raw(k);
        self.w.raw(b"\":");
    }

    #[inline(always)]
    fn str_nonempty(&mut self, k: &[u8], v: &str) {
        if !v.is_empty() {
            self.key(k);
            self.w.raw(b"\"");
            self.w.value(v);
            self.w.raw(b"\"");
        }
    }

    #[inline(always)]
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
/// bytes at a time with no branch per byte; the last few bytes are padded with a harmless one.
#[inline(always)]
fn escape_bits(s: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is below `n` (n <= 0x80) iff its high bit is set in the result.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * n as u64) & !x & HIGHS;
    let zero = |x: u64| below(x, 1);
    let word = |x: u64| below(x, 0x20) | zero(x ^ (ONES * b'"' as u64)) | zero(x ^ (ONES * b'\\' as u64));
    let mut chunks = s.chunks_exact(8);
    let mut found = 0;
    for c in &mut chunks {
        found |= word(u64::from_le_bytes(c.try_into().expect("eight bytes")));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [b'a'; 8];
        last[..rest.len()].copy_from_slice(rest);
        found |= word(u64::from_le_bytes(last));
    }
    found
}

/// Whether `s` holds a byte JSON must escape.
#[cfg(test)]
fn needs_escape(s: &[u8]) -> bool {
    escape_bits(s) != 0
}

/// `2026-01-02T03:04:05.123456789Z`: UTC with nanoseconds, as Berth's events always were
/// (written directly: a general-purpose formatter cost more than the rest of the timestamp).
pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000000000Z";
    // Each field right-aligned in its place, digits from the last.
    let mut put = |end: usize, mut n: u64, width: usize| {
        for i in (end - width..end).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(4, y.clamp(0, 9999) as u64, 4);
    put(7, m as u64, 2);
    put(10, day as u64, 2);
    put(13, rem / 3600, 2);
    put(16, rem % 3600 / 60, 2);
    put(19, rem % 60, 2);
    put(29, d.subsec_nanos() as u64, 9);
    String::from_utf8(out.to_vec()).expect("ASCII digits")
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
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
    fn timestamps_as_chrono_writes_them() {
        use std::time::{Duration, UNIX_EPOCH};
        for secs in [0u64, 951_782_400, 1_709_164_800, 1_767_225_599, 4_102_444_800, 1_800_000_000] {
            for nanos in [0u32, 1, 999_999_999, 123_456_789] {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                let want = chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                assert_eq!(rfc3339_nanos(t), want);
            }
        }
    }

    #[test]
    fn the_hand_written_json_is_serdes_byte_for_byte() {
        let bare = event();
        let mut full = event();
        full.action = Action::Mount;
        full.target = Target {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 7,
            digest: "sha256:abc".into(),
            length: 7,
            repository: "team/app".into(),
            from_repository: "base/img".into(),
            url: "https://r.example/v2/team/app/manifests/sha256:abc".into(),
            tag: "v1.0".into(),
            references: vec![
                Descriptor { media_type: "c".into(), size: 2, digest: "sha256:c".into() },
                Descriptor::default(),
            ],
        };
        full.request = RequestRecord {
            id: "id-1".into(),
            addr: "10.0.0.1:4000".into(),
            host: "r.example".into(),
            method: "GET".into(),
            useragent: "skopeo/1.0 \"quoted\" \\ tab\t nul\u{0} é ☃".into(),
        };
        let mut plain = full.clone();
        plain.request.useragent = "skopeo/1.0 é ☃".into();
        plain.actor = Actor { name: "alice".into() };
        full.actor = Actor { name: "alice\n".into() };
        for e in [bare, plain, full] {
            let mut mine = Vec::new();
            e.write_json(&mut mine);
            assert_eq!(String::from_utf8(mine.clone()).unwrap(), serde_json::to_string(&e).unwrap());
            let back: Event<'_> = serde_json::from_slice(&mine).unwrap();
            assert_eq!(back, e);
        }
    }
}
