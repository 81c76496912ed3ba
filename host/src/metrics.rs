//! Process-wide Prometheus metrics. One registry per process, so the HTTP layer, the storage
//! decorator and the plugin adapter record without being handed a handle, and the debug server
//! encodes it. Labels are bounded sets (route kinds, methods, driver ops, configured plugin
//! names), never repository names or paths.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of `encode`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    pub driver: &'static str,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub op: &'static str,
}

/// A failed plugin call: `reason` is `PluginError::kind()` (trap, deadline, memory_cap, init...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFailureLabels {
    pub plugin: String,
    pub op: &'static str,
    pub reason: &'static str,
}

/// An authentication or authorization outcome (`allowed`, `denied`, `invalid_token`,
/// `failed_login`, `throttled`, `challenged`): never a user or repository.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub outcome: &'static str,
}

/// A cleanup policy's tags by result (`deleted`, `would_delete`, `skipped`, `failed`), and its
/// repositories that failed (`repository_failed`). Policy names come from the configuration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CleanupLabels {
    pub policy: String,
    pub result: &'static str,
}

/// One notification endpoint (a configured name: bounded by the configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

/// A client connection's state (`active`: a request head arriving or a request being served;
/// `idle`: neither).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionStateLabels {
    pub state: &'static str,
}

/// Why the server closed a connection itself: `header_timeout`, `idle` or `shed`
/// (`connections::Closed::label`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionClosedLabels {
    pub reason: &'static str,
}

/// Garbage collection: totals over every run of this process, and the last run's figures.
pub struct GcMetrics {
    pub runs: Counter,
    pub failures: Counter,
    pub blobs_swept: Counter,
    pub manifests_swept: Counter,
    pub bytes_freed: Counter,
    pub last_blobs_marked: Gauge,
    pub last_manifests_marked: Gauge,
    pub last_duration: Gauge<f64, AtomicU64>,
    pub last_end: Gauge<f64, AtomicU64>,
}

impl GcMetrics {
    fn register(registry: &mut Registry) -> GcMetrics {
        let m = GcMetrics {
            runs: Counter::default(),
            failures: Counter::default(),
            blobs_swept: Counter::default(),
            manifests_swept: Counter::default(),
            bytes_freed: Counter::default(),
            last_blobs_marked: Gauge::default(),
            last_manifests_marked: Gauge::default(),
            last_duration: Gauge::default(),
            last_end: Gauge::default(),
        };
        registry.register("gc_runs", "Garbage collection runs finished (dry runs included)", m.runs.clone());
        registry.register("gc_failures", "Garbage collection runs that failed or were refused", m.failures.clone());
        registry.register("gc_blobs_swept", "Blobs deleted by garbage collection", m.blobs_swept.clone());
        registry.register(
            "gc_manifests_swept",
            "Manifest revisions deleted by garbage collection",
            m.manifests_swept.clone(),
        );
        registry.register_with_unit(
            "gc_freed",
            "Blob bytes freed by garbage collection",
            Unit::Bytes,
            m.bytes_freed.clone(),
        );
        registry.register("gc_last_blobs_marked", "Blobs the last run kept", m.last_blobs_marked.clone());
        registry.register("gc_last_manifests_marked", "Manifests the last run kept", m.last_manifests_marked.clone());
        registry.register_with_unit(
            "gc_last_duration",
            "Duration of the last run",
            Unit::Seconds,
            m.last_duration.clone(),
        );
        registry.register("gc_last_end_timestamp_seconds", "When the last run ended (Unix time)", m.last_end.clone());
        m
    }
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histograms<RouteLabels>,
    pub request_bytes: Family<RouteLabels, Counter>,
    pub response_bytes: Family<RouteLabels, Counter>,
    pub in_flight: Gauge,
    /// Set from the open connections when metrics are read (`connections::publish`).
    pub connections: Family<ConnectionStateLabels, Gauge>,
    pub connections_refused: Counter,
    pub connections_closed: Family<ConnectionClosedLabels, Counter>,
    pub storage_duration: Histograms<StorageLabels>,
    pub storage_errors: Family<StorageLabels, Counter>,
    /// Object store downloads that went on with a new request after the service's answer failed,
    /// ended early or was let go of while the client stalled (`storage::resume`).
    pub storage_reads_resumed: Counter,
    pub plugin_duration: Histograms<PluginLabels>,
    pub plugin_failures: Family<PluginFailureLabels, Counter>,
    pub auth_outcomes: Family<AuthLabels, Counter>,
    pub tokens_issued: Counter,
    pub cleanup: Family<CleanupLabels, Counter>,
    pub events_queued: Family<EndpointLabels, Counter>,
    pub events_delivered: Family<EndpointLabels, Counter>,
    pub events_failed: Family<EndpointLabels, Counter>,
    pub events_dropped: Family<EndpointLabels, Counter>,
    pub events_pending: Family<EndpointLabels, Gauge>,
    pub outbox_events: Gauge,
    pub gc: GcMetrics,
    /// Requests answered since start (for `/debug/vars`, without summing the families).
    served: AtomicU64,
    started: Instant,
    registry: Registry,
}

/// 0.5 ms to ~16 s: a manifest HEAD to a large blob upload's final PUT.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 0.1 ms to ~13 s: a cached stat to an object store's multipart commit.
fn operation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            in_flight: Gauge::default(),
            connections: Family::default(),
            connections_refused: Counter::default(),
            connections_closed: Family::default(),
            storage_duration: Family::new_with_constructor(operation_histogram),
            storage_errors: Family::default(),
            storage_reads_resumed: Counter::default(),
            plugin_duration: Family::new_with_constructor(operation_histogram),
            plugin_failures: Family::default(),
            auth_outcomes: Family::default(),
            tokens_issued: Counter::default(),
            cleanup: Family::default(),
            events_queued: Family::default(),
            events_delivered: Family::default(),
            events_failed: Family::default(),
            events_dropped: Family::default(),
            events_pending: Family::default(),
            outbox_events: Gauge::default(),
            gc: GcMetrics::register(&mut registry),
            served: AtomicU64::new(0),
            started: Instant::now(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route kind, method and status",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response head (blob bodies stream after), by route kind and method",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register_with_unit(
            "http_request_body",
            "Request body bytes (as streamed for uploads, else Content-Length)",
            Unit::Bytes,
            m.request_bytes.clone(),
        );
        registry.register_with_unit(
            "http_response_body",
            "Response body bytes, counted as streamed",
            Unit::Bytes,
            m.response_bytes.clone(),
        );
        registry.register("http_requests_in_flight", "Requests being handled", m.in_flight.clone());
        registry.register(
            "http_connections",
            "Open client connections: active (a request arriving or being served) or idle",
            m.connections.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections refused at http.maxconnections with none idle to close",
            m.connections_refused.clone(),
        );
        registry.register(
            "http_connections_closed",
            "Connections the server closed: header_timeout, idle (http.timeouts) or shed for a newcomer",
            m.connections_closed.clone(),
        );
        registry.register_with_unit(
            "storage_operation_duration",
            "Storage driver operation latency, by driver and operation",
            Unit::Seconds,
            m.storage_duration.clone(),
        );
        registry.register(
            "storage_operation_errors",
            "Storage driver operations that failed (not counting not-found answers)",
            m.storage_errors.clone(),
        );
        registry.register(
            "storage_reads_resumed",
            "Object store downloads that went on with a ranged request after the service's answer failed, ended early or was let go of while the client stalled",
            m.storage_reads_resumed.clone(),
        );
        registry.register_with_unit(
            "plugin_call_duration",
            "Plugin guest call latency, by plugin and operation",
            Unit::Seconds,
            m.plugin_duration.clone(),
        );
        registry.register(
            "plugin_call_failures",
            "Plugin calls that trapped, timed out or could not instantiate (the instance is discarded)",
            m.plugin_failures.clone(),
        );
        registry.register(
            "auth_outcomes",
            "Authentication and authorization outcomes of requests and token requests",
            m.auth_outcomes.clone(),
        );
        registry.register("auth_tokens_issued", "Tokens issued by Berth's token endpoint", m.tokens_issued.clone());
        registry.register(
            "cleanup_tags",
            "Tags cleanup policies deleted, would delete (dry runs), skipped or failed to delete, and repositories whose run failed",
            m.cleanup.clone(),
        );
        registry.register("events_queued", "Events written to the outbox for an endpoint", m.events_queued.clone());
        registry.register("events_delivered", "Events an endpoint accepted", m.events_delivered.clone());
        registry.register("events_failed", "Events in deliveries that failed (retried)", m.events_failed.clone());
        registry.register(
            "events_dropped",
            "Events an endpoint never got: the outbox bound was reached, or its plugin dropped them",
            m.events_dropped.clone(),
        );
        registry.register(
            "events_pending",
            "Events in the outbox an endpoint has not taken yet",
            m.events_pending.clone(),
        );
        registry.register("outbox_events", "Events held in the notification outbox", m.outbox_events.clone());
        Metrics { registry, ..m }
    }

    /// Records one answered request (at its response head).
    pub fn record_request(&self, labels: RouteLabels, status: u16, seconds: f64) {
        self.served.fetch_add(1, Ordering::Relaxed);
        let RouteLabels { route, method } = labels;
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
        self.request_duration.get_or_create(&labels).observe(seconds);
    }

    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub fn uptime_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The OpenMetrics text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// A bounded label for an HTTP method.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The value of one sample in the exposition (`name{labels}` exactly as encoded), 0 if absent.
#[cfg(test)]
pub(crate) fn sample(series: &str) -> f64 {
    get()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).map(|v| v.parse().unwrap()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_and_labels() {
        let m = get();
        m.record_request(RouteLabels { route: "blob", method: "GET" }, 200, 0.01);
        m.storage_duration.get_or_create(&StorageLabels { driver: "filesystem", op: "stat" }).observe(0.001);
        let text = m.encode();
        assert!(text.contains(r#"berth_http_requests_total{route="blob",method="GET",status="200"}"#), "{text}");
        assert!(text.contains("berth_http_request_duration_seconds_bucket{"), "{text}");
        assert!(text.contains(r#"berth_storage_operation_duration_seconds_count{driver="filesystem",op="stat"}"#));
        assert!(m.requests_served() >= 1);
    }
}
