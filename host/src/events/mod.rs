//! Notifications: every push, pull, delete and mount becomes an event in distribution's
//! envelope, written to a durable outbox and delivered from there to each endpoint by its own
//! task, at least once and in order.
//!
//! - `record`: the event and the envelope, field for field as distribution writes them;
//! - `stamp`: an event's id and time;
//! - `listener`: request → event, in one place at the API boundary;
//! - `outbox`: the redb log, group commit, bounds, cursors;
//! - `endpoint`: one endpoint's delivery task (batches, threshold, growing backoff);
//! - `sink`, `webhook`, `plugin_sink`: where a batch goes.
//!
//! Pushes, deletes and mounts are on stable storage before the client's answer (journaled, and
//! flushed by the request's own storage sync when the journal is on the data's filesystem, else
//! by a sync shared with every concurrent request); pulls are written with the next sync, at most
//! `notifications.outbox.pullflush` later, which is what a crash can lose of them.

pub mod endpoint;
pub mod journal;
pub mod listener;
pub mod outbox;
pub mod plugin_sink;
pub mod record;
pub mod sink;
pub mod stamp;
pub mod webhook;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use smallvec::SmallVec;

use crate::config::{Config, Endpoint};
use crate::plugins::{NotificationKind, PluginSpec, Swap};
use endpoint::{EndpointState, Policy};
use listener::{Context, Observed};
use outbox::{Flush, Limits, Outbox, OutboxError, Position};
use record::{Action, Source, SourceJson};
use sink::Sink;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    #[error("notifications.endpoints {endpoint}: {source}")]
    Plugin { endpoint: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("notifications.outbox.directory is required unless storage is the filesystem")]
    NoDirectory,
    #[error("notifications: at most {max} enabled endpoints", max = outbox::MAX_ENDPOINTS)]
    TooMany,
}

pub struct Notifier {
    outbox: Arc<Outbox>,
    endpoints: Vec<Arc<EndpointState>>,
    source: SourceJson,
    include_references: bool,
    /// Per action (`Action as usize`), the endpoints that do not ignore it (bit `i`: endpoint
    /// `i`): with no media type ignored (nearly always), every event's mask without asking each
    /// endpoint's filter ([`Outbox::wanted_by`]); else what a request may cause, before its
    /// media type is known.
    action_masks: [u64; 4],
    /// Some endpoint ignores a media type: an event's mask also depends on its media type.
    media_filters: bool,
    dir: PathBuf,
    /// Whether the storage driver's sync flushes the outbox's journal (same filesystem), so
    /// that a push's event rides on the push's own sync (`attach_storage`).
    storage_syncs_journal: AtomicBool,
}

/// A drafted event as the outbox appends it: stamped and written into its record.
struct Drafted<'a> {
    draft: &'a record::Draft<'a>,
    mask: u64,
    source: &'a SourceJson,
    /// `draft.json_len(source)`.
    json_len: usize,
}

impl outbox::Append for Drafted<'_> {
    fn action(&self) -> Action {
        self.draft.action
    }

    fn media_type(&self) -> &str {
        self.draft.target.media_type
    }

    fn mask(&self) -> u64 {
        self.mask
    }

    fn json_len(&self) -> usize {
        self.json_len
    }

    fn write_json(&self, out: &mut bytes::BytesMut) {
        self.draft.write_json(&stamp::Stamp::now(), self.source, self.json_len, out)
    }
}

/// `hostname:port` of the registry, as distribution's `source.addr`.
fn source_addr(config: &Config) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if ok {
        let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..n]).into_owned()
    } else {
        String::new()
    };
    format!("{host}:{}", config.http.addr.port())
}

/// Whether `ignore.actions` names `a` (the one test for both `wants` and `may_want`).
fn ignores_action(actions: &[String], a: Action) -> bool {
    actions.iter().any(|x| x == a.as_str())
}

/// Per action, the endpoints (bit `i`: `enabled[i]`) that do not ignore it: what `wants`
/// answers for every media type when no endpoint ignores one ([`ignores_media_types`]).
fn masks_by_action(enabled: &[&Endpoint]) -> [u64; 4] {
    Action::ALL.map(|a| {
        enabled
            .iter()
            .enumerate()
            .filter(|(_, e)| !ignores_action(&e.ignore.actions, a))
            .fold(0, |m, (i, _)| m | 1 << i)
    })
}

/// Whether some endpoint ignores a media type (`ignoredmediatypes` or `ignore.mediatypes`).
fn ignores_media_types(enabled: &[&Endpoint]) -> bool {
    enabled.iter().any(|e| !e.ignoredmediatypes.is_empty() || !e.ignore.mediatypes.is_empty())
}

/// Whether an endpoint wants events like this one.
fn wants(e: &Endpoint) -> impl Fn(Action, &str) -> bool + Send + Sync + 'static {
    let actions = e.ignore.actions.clone();
    let media: Vec<String> = e.ignoredmediatypes.iter().chain(&e.ignore.mediatypes).cloned().collect();
    move |a, mt| !ignores_action(&actions, a) && !media.iter().any(|m| m == mt)
}

impl Notifier {
    /// Opens the outbox and starts a delivery task per enabled endpoint (loading the plugins
    /// they name, each handed to `loaded` with its name so that a reload can swap it). None
    /// when no endpoint is enabled: requests then pay nothing.
    pub async fn start(
        config: &Config,
        mut loaded: impl FnMut(&str, Arc<Swap<NotificationKind>>),
    ) -> Result<Option<Arc<Notifier>>, NotifyError> {
        let enabled: Vec<&Endpoint> = config.notifications.enabled().collect();
        if enabled.is_empty() {
            return Ok(None);
        }
        if enabled.len() > outbox::MAX_ENDPOINTS {
            return Err(NotifyError::TooMany);
        }
        let dir = config.outbox_dir().ok_or(NotifyError::NoDirectory)?;
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        for e in &enabled {
            let sink: Arc<dyn Sink> = match &e.plugin {
                Some(name) => {
                    let plugin_err = |source: Box<dyn std::error::Error + Send + Sync>| NotifyError::Plugin {
                        endpoint: e.name.clone(),
                        source,
                    };
                    let spec = PluginSpec::from_config(config, name).map_err(|err| plugin_err(Box::new(err)))?;
                    let swap = Swap::<NotificationKind>::load(spec).await.map_err(|err| plugin_err(Box::new(err)))?;
                    let p = swap.current();
                    tracing::info!(endpoint = %e.name, plugin = %p.name(), sha256 = %p.sha256, "notification sink plugin loaded");
                    let swap = Arc::new(swap);
                    loaded(name, swap.clone());
                    Arc::new(plugin_sink::PluginSink(swap))
                }
                None => Arc::new(webhook::Webhook::new(e)?),
            };
            sinks.push(sink);
        }
        let positions: Vec<Arc<Position>> =
            enabled.iter().map(|e| Arc::new(Position::new(e.name.clone(), wants(e)))).collect();
        let o = &config.notifications.outbox;
        let limits = Limits { max_events: o.maxevents, max_bytes: o.maxbytes, lazy_flush: o.pullflush };
        let open_dir = dir.clone();
        let outbox = tokio::task::spawn_blocking(move || Outbox::open(&open_dir, positions, limits))
            .await
            .map_err(|e| OutboxError::Write(e.to_string()))??;
        let outbox = Arc::new(outbox);
        let mut endpoints = Vec::new();
        for (i, (e, sink)) in enabled.iter().zip(sinks).enumerate() {
            let target = e.plugin.clone().unwrap_or_else(|| e.url.clone());
            let state = Arc::new(EndpointState::new(e.name.clone(), i, sink.kind(), target));
            tokio::spawn(endpoint::run(outbox.clone(), state.clone(), sink, Policy::of(e)));
            endpoints.push(state);
        }
        let (events, bytes) = outbox.size();
        tracing::info!(dir = %dir.display(), endpoints = endpoints.len(), held = events, bytes, "notifications on");
        Ok(Some(Arc::new(Notifier {
            outbox,
            endpoints,
            source: SourceJson::new(Source {
                addr: source_addr(config),
                instance_id: uuid::Uuid::new_v4().to_string(),
            }),
            include_references: config.notifications.events.includereferences,
            action_masks: masks_by_action(&enabled),
            media_filters: ignores_media_types(&enabled),
            dir,
            storage_syncs_journal: AtomicBool::new(false),
        })))
    }

    /// Whether some endpoint may want an event with `action` and `media_type` (None: not known
    /// before the answer, any). Asked before a request runs, so that a request whose event every
    /// endpoint ignores (distribution's example ignores pulls and blobs) costs nothing.
    pub fn may_want(&self, action: Action, media_type: Option<&str>) -> bool {
        match media_type {
            Some(mt) => self.wanted_by(action, mt) != 0,
            None => self.action_masks[action as usize] != 0,
        }
    }

    /// The endpoints that want an event with `action` and `media_type` (bit `i`: endpoint `i`).
    fn wanted_by(&self, action: Action, media_type: &str) -> u64 {
        if self.media_filters {
            self.outbox.wanted_by(action, media_type)
        } else {
            self.action_masks[action as usize]
        }
    }

    /// Notes whether `driver`'s sync also flushes the outbox's journal.
    pub fn attach_storage(&self, driver: &dyn crate::storage::StorageDriver) {
        let covers = driver.sync_covers(&self.dir);
        tracing::debug!(covers, "event journal flushed by the storage's own sync");
        self.storage_syncs_journal.store(covers, Ordering::Relaxed);
    }

    /// How the event of `observed` is made durable, when the request will (`storage_syncs`)
    /// or will not end with a storage sync after the event is recorded.
    pub fn flush_for(&self, observed: &Observed<'_>, storage_syncs: bool) -> Flush {
        if !observed.durable() {
            Flush::Lazy
        } else if storage_syncs && self.storage_syncs_journal.load(Ordering::Relaxed) {
            Flush::WithStorage
        } else {
            Flush::Now
        }
    }

    /// Records the events of a request whose answer says all they need (pulls, deletes)
    /// without waiting: appended when this returns, durable when the result's `durable` says.
    /// What needs the registry read first is handed back for [`record`](Self::record).
    pub fn record_now<'a>(
        &self,
        observed: &'a Observed<'a>,
        status: http::StatusCode,
        answer: &'a http::HeaderMap,
        actor: &'a str,
        flush: Flush,
    ) -> Result<Result<outbox::Appended, OutboxError>, listener::Pending<'a>> {
        listener::events_now(observed, status, answer, actor, self.include_references, |events| {
            self.append(events, flush)
        })
    }

    /// Records the events [`record_now`](Self::record_now) left, once the registry was read,
    /// made durable as `flush` says.
    pub async fn record<'a>(
        &self,
        observed: &'a Observed<'a>,
        pending: listener::Pending<'a>,
        actor: &'a str,
        registry: &crate::registry::Registry,
        flush: Flush,
    ) -> Result<(), OutboxError> {
        let cx = Context { registry, include_references: self.include_references };
        let appended = listener::events_after_read(observed, pending, actor, &cx, |events| self.append(events, flush));
        appended.await?.durable().await
    }

    /// Appends each event some endpoint wants to the outbox, its JSON written in place.
    fn append(&self, events: &[record::Draft<'_>], flush: Flush) -> Result<outbox::Appended, OutboxError> {
        let mut wanted: SmallVec<[Drafted<'_>; 1]> = SmallVec::new();
        for draft in events {
            let mask = self.wanted_by(draft.action, draft.target.media_type);
            if mask != 0 {
                wanted.push(Drafted { draft, mask, source: &self.source, json_len: draft.json_len(&self.source) });
            }
        }
        self.outbox.push(&wanted, flush)
    }

    /// Per endpoint: pending, delivered, failed, dropped, last error and success (`/debug/vars`).
    pub fn report(&self) -> Value {
        let (events, bytes) = self.outbox.size();
        let endpoints: serde_json::Map<String, Value> =
            self.endpoints.iter().map(|e| (e.name.clone(), e.report(&self.outbox))).collect();
        json!({
            "outbox": {"directory": self.dir, "events": events, "bytes": bytes, "head": self.outbox.head()},
            "endpoints": endpoints,
        })
    }

    /// The newest `n` events recorded (at most 100), oldest first, and the oldest ones still
    /// waiting in the outbox for some endpoint: for debugging a receiver.
    pub fn tail(&self, n: usize) -> Value {
        let recent: Vec<Value> = self.outbox.recent(n).iter().filter_map(|j| serde_json::from_slice(j).ok()).collect();
        let waiting: Vec<Value> =
            self.outbox.tail(n).into_iter().map(|(seq, e)| json!({"seq": seq, "event": e})).collect();
        json!({ "events": recent, "waiting": waiting })
    }

    /// Writes what waits for the next sync (pull events, cursors): at shutdown.
    pub fn close(&self) {
        self.outbox.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(actions: &[&str], media: &[&str], ignored: &[&str]) -> Endpoint {
        let mut e = Endpoint::default();
        e.ignore.actions = actions.iter().map(|s| s.to_string()).collect();
        e.ignore.mediatypes = media.iter().map(|s| s.to_string()).collect();
        e.ignoredmediatypes = ignored.iter().map(|s| s.to_string()).collect();
        e
    }

    #[test]
    fn masks_by_action_answer_as_each_endpoints_filter() {
        let (a, b, c) =
            (endpoint(&["pull"], &[], &[]), endpoint(&[], &[], &[]), endpoint(&["pull", "delete"], &[], &[]));
        let enabled = [&a, &b, &c];
        assert!(!ignores_media_types(&enabled));
        let masks = masks_by_action(&enabled);
        for action in Action::ALL {
            for mt in ["", record::BLOB_MEDIA_TYPE, "application/vnd.oci.image.manifest.v1+json"] {
                let by_filter =
                    enabled.iter().enumerate().filter(|(_, e)| wants(e)(action, mt)).fold(0, |m, (i, _)| m | 1 << i);
                assert_eq!(masks[action as usize], by_filter, "{action:?} {mt}");
            }
        }
        assert_eq!(masks[Action::Pull as usize], 0b010);
        assert_eq!(masks[Action::Push as usize], 0b111);
        // A media type ignored, in either key: the filters must be asked.
        assert!(ignores_media_types(&[&a, &endpoint(&[], &["x"], &[])]));
        assert!(ignores_media_types(&[&endpoint(&[], &[], &["x"]), &b]));
    }
}
