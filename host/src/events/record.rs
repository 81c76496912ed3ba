//! An event as distribution writes it (`notifications/event.go`), field for field and with its
//! JSON names and omissions, so receivers written for distribution and GitLab read Berth's
//! unchanged; and the envelope a batch travels in.

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

/// distribution's `Descriptor` (the fields Berth fills).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "zero")]
    pub length: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Descriptor>,
}

/// The request that caused the event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub method: String,
    pub useragent: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
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
pub struct Event {
    pub id: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub timestamp: String,
    pub action: Action,
    pub target: Target,
    pub request: RequestRecord,
    pub actor: Actor,
    pub source: Source,
}

impl Event {
    /// Whether an endpoint's ignore rules let the event through.
    pub fn passes(&self, ignored_media_types: &[String], ignored_actions: &[String]) -> bool {
        !ignored_actions.iter().any(|a| a == self.action.as_str())
            && !ignored_media_types.iter().any(|m| m == &self.target.media_type)
    }
}

/// `{"events":[...]}` from events already serialized one by one (as the outbox stores them).
pub fn envelope<'a>(events: impl IntoIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let size: usize = events.clone().into_iter().map(|e| e.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(b"{\"events\":[");
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_names_and_omissions() {
        let e = Event {
            id: "i".into(),
            timestamp: "2026-01-01T00:00:00.000000001Z".into(),
            action: Action::Delete,
            target: Target { digest: "sha256:x".into(), repository: "r".into(), ..Default::default() },
            request: RequestRecord { id: "q".into(), method: "DELETE".into(), ..Default::default() },
            actor: Actor::default(),
            source: Source { addr: "h:5000".into(), instance_id: "u".into() },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id":"i","timestamp":"2026-01-01T00:00:00.000000001Z","action":"delete",
                "target":{"digest":"sha256:x","repository":"r"},
                "request":{"id":"q","method":"DELETE","useragent":""},"actor":{},
                "source":{"addr":"h:5000","instanceID":"u"}})
        );
        let env = envelope([br#"{"a":1}"#.as_slice(), br#"{"b":2}"#.as_slice()]);
        assert_eq!(env, br#"{"events":[{"a":1},{"b":2}]}"#);
        assert!(!e.passes(&[], &["delete".into()]));
        assert!(e.passes(&["application/octet-stream".into()], &["pull".into()]));
    }
}
