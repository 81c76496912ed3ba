//! `berth-notify-file`: an audit trail. Every event is appended to a file as one line of JSON
//! (the event exactly as a webhook receives it), and the file is synced before the batch is
//! reported delivered, so what Berth counts as delivered is on disk.
//!
//! | config key | default | meaning |
//! |---|---|---|
//! | `path` | (required) | the file, inside a directory granted to the plugin (`grants.dirs`), e.g. `/audit/events.jsonl` |
//!
//! A write that fails (disk full, directory not granted) is `retryable`: the host keeps the
//! events and tries again with backoff.

use std::fs::OpenOptions;
use std::io::Write;

use berth_plugin_sdk::notify::{Event, NotificationSink, SinkError};
use berth_plugin_sdk::{Config, InitError};

pub struct FileSink {
    path: String,
}

impl NotificationSink for FileSink {
    fn init(config: Config) -> Result<Self, InitError> {
        config.deny_unknown(&["path"])?;
        let path = config.require("path")?.to_string();
        Ok(FileSink { path })
    }

    fn deliver(&self, events: Vec<Event>) -> Result<(), SinkError> {
        let mut lines = Vec::with_capacity(events.len() * 512);
        for e in &events {
            lines.extend_from_slice(e.json.as_bytes());
            lines.push(b'\n');
        }
        let retry = |what: &str, e: std::io::Error| SinkError::Retryable(format!("{what} {}: {e}", self.path));
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| retry("open", e))?;
        f.write_all(&lines).map_err(|e| retry("write", e))?;
        f.sync_data().map_err(|e| retry("sync", e))?;
        Ok(())
    }
}

berth_plugin_sdk::export_notification_sink!(FileSink);
