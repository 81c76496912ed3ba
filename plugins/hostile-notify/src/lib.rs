//! `berth-hostile-notify`: a notification sink that misbehaves once, for the tests that show a
//! faulty sink loses nothing. On its first delivery (no `tripped` file yet in its granted
//! directory `/state`) it records that it tripped and then, by config `mode`:
//!
//! | `mode` | first delivery |
//! |---|---|
//! | `trap` | panics (a trap) |
//! | `loop` | spins forever (cut off at its deadline) |
//! | `error` | answers `retryable` |
//!
//! Every later delivery appends the events as JSON lines to `/state/events.jsonl`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use berth_plugin_sdk::notify::{Event, NotificationSink, SinkError};
use berth_plugin_sdk::{Config, InitError};

pub struct Hostile {
    mode: String,
}

impl NotificationSink for Hostile {
    fn init(config: Config) -> Result<Self, InitError> {
        let mode = config.require("mode")?.to_string();
        if !["trap", "loop", "error"].contains(&mode.as_str()) {
            return Err(InitError::invalid("mode", "trap, loop or error"));
        }
        Ok(Hostile { mode })
    }

    fn deliver(&self, events: Vec<Event>) -> Result<(), SinkError> {
        let io = |e: std::io::Error| SinkError::Retryable(e.to_string());
        if !Path::new("/state/tripped").exists() {
            std::fs::write("/state/tripped", self.mode.as_bytes()).map_err(io)?;
            match self.mode.as_str() {
                "trap" => panic!("hostile-notify: trap on purpose"),
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                _ => return Err(SinkError::Retryable("hostile-notify: failing on purpose".into())),
            }
        }
        let mut f = OpenOptions::new().create(true).append(true).open("/state/events.jsonl").map_err(io)?;
        for e in &events {
            writeln!(f, "{}", e.json).map_err(io)?;
        }
        Ok(())
    }
}

berth_plugin_sdk::export_notification_sink!(Hostile);
