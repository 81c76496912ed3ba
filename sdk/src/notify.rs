//! Notification sinks: receive registry events (distribution's envelope, delivered at least
//! once and in order from a durable outbox, off the request path). Each `Event` has typed
//! fields and `json`, the event exactly as distribution's webhook carries it. `Ok` means
//! delivered; `SinkError::Retryable` (or a trap, or running past the deadline) makes the host
//! send the batch again later; `SinkError::Fatal` drops it, counted.
//!
//! ```ignore
//! use berth_plugin_sdk::notify::{Event, NotificationSink, SinkError};
//! use berth_plugin_sdk::{log, Config, InitError};
//!
//! struct LogSink;
//! impl NotificationSink for LogSink {
//!     fn init(_: Config) -> Result<Self, InitError> { Ok(LogSink) }
//!     fn deliver(&self, events: Vec<Event>) -> Result<(), SinkError> {
//!         for e in events { log::info(format!("{:?} {}", e.action, e.target.repository)); }
//!         Ok(())
//!     }
//! }
//! berth_plugin_sdk::export_notification_sink!(LogSink);
//! ```

pub use crate::bindings::notify::exports::berth::plugin::notification_sink::{Action, Event, SinkError, Target};
pub use crate::bindings::common::berth::plugin::types::Descriptor;
pub use crate::{Config, InitError};

/// A notification sink.
pub trait NotificationSink: Sized + 'static {
    /// Builds the sink from its `config` map in Berth's configuration.
    fn init(config: Config) -> Result<Self, InitError>;

    /// Delivers a batch. [`SinkError::Retryable`] makes the host retry the batch with backoff;
    /// [`SinkError::Fatal`] drops it (counted, never retried).
    fn deliver(&self, events: Vec<Event>) -> Result<(), SinkError>;
}

/// Exports a [`NotificationSink`] (world `notification-sink-plugin`). Use once, at the crate
/// root.
#[macro_export]
macro_rules! export_notification_sink {
    ($sink:ty) => {
        const _: () = {
            type __BerthNotificationSinkExport = $crate::__private::NotifyAdapter<$sink>;
            $crate::bindings::lifecycle::__export_lifecycle!(
                __BerthNotificationSinkExport with_types_in $crate::bindings::lifecycle
            );
            $crate::bindings::notify::__export_notification_sink!(
                __BerthNotificationSinkExport with_types_in $crate::bindings::notify
            );
        };
    };
}
