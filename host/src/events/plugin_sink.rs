//! A `notification-sink-plugin` as a `Sink`, over `Pool<NotificationKind>` (deadline, memory
//! cap, discarding a failed instance and metrics are the pool's). The plugin answers
//! delivered, retry or drop; a trap, a deadline or a broken instance is a retry, so nothing
//! acknowledged is lost to a faulty plugin.

use std::sync::Arc;

use async_trait::async_trait;

use super::outbox::Stored;
use super::record::{Action, Event};
use super::sink::{Sink, SinkError};
use crate::plugins::wit::latest::notification::exports::berth::plugin::notification_sink as wit;
use crate::plugins::wit::latest::types::Descriptor;
use crate::plugins::{NotificationKind, Swap};

pub struct PluginSink(pub Arc<Swap<NotificationKind>>);

fn non_empty(s: std::borrow::Cow<'_, str>) -> Option<String> {
    (!s.is_empty()).then(|| s.into_owned())
}

fn millis(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339).map(|t| t.timestamp_millis().max(0) as u64).unwrap_or(0)
}

/// The typed record of one stored event.
fn to_wit(s: &Stored) -> Result<wit::Event, String> {
    let e: Event = serde_json::from_slice(&s.json).map_err(|e| format!("event {}: {e}", s.seq))?;
    let t = e.target;
    Ok(wit::Event {
        id: e.id.into_owned(),
        timestamp_millis: millis(&e.timestamp),
        timestamp: e.timestamp.into_owned(),
        action: match e.action {
            Action::Push => wit::Action::Push,
            Action::Pull => wit::Action::Pull,
            Action::Delete => wit::Action::Delete,
            Action::Mount => wit::Action::Mount,
        },
        target: wit::Target {
            media_type: t.media_type.into_owned(),
            digest: t.digest.into_owned(),
            size: t.size,
            length: t.length,
            repository: t.repository.into_owned(),
            from_repository: non_empty(t.from_repository),
            url: non_empty(t.url),
            tag: non_empty(t.tag),
            references: t
                .references
                .into_iter()
                .map(|d| Descriptor {
                    media_type: d.media_type.into_owned(),
                    digest: d.digest.into_owned(),
                    size: d.size,
                })
                .collect(),
        },
        request_id: e.request.id.into_owned(),
        request_addr: e.request.addr.into_owned(),
        request_host: e.request.host.into_owned(),
        request_method: e.request.method.into_owned(),
        request_user_agent: e.request.useragent.into_owned(),
        actor: non_empty(e.actor.name),
        source_addr: e.source.addr.clone(),
        source_instance_id: e.source.instance_id.clone(),
        json: String::from_utf8_lossy(&s.json).into_owned(),
    })
}

#[async_trait]
impl Sink for PluginSink {
    fn kind(&self) -> &'static str {
        "plugin"
    }

    async fn deliver(&self, events: &[Stored]) -> Result<(), SinkError> {
        let batch = events.iter().map(to_wit).collect::<Result<Vec<_>, _>>().map_err(SinkError::Drop)?;
        let p = self.0.current();
        let answer = p
            .call("deliver", |i| {
                Box::pin(
                    async move { i.bindings.berth_plugin_notification_sink().call_deliver(&mut i.store, &batch).await },
                )
            })
            .await
            .map_err(|f| SinkError::Retry(f.to_string()))?;
        answer.map_err(|e| match e {
            wit::SinkError::Retryable(m) => SinkError::Retry(format!("plugin {}: {m}", p.name())),
            wit::SinkError::Fatal(m) => SinkError::Drop(format!("plugin {}: {m}", p.name())),
        })
    }
}
