//! `gc`: garbage collection inside the running server, on a schedule (off by default), and the
//! grace period every run (scheduled, `POST /admin/gc`, `berth garbage-collect`) honours.

use std::time::Duration;

use serde::Deserialize;

use super::{duration, ConfigError, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Gc {
    /// Time between scheduled runs (`24h`); absent or zero: no scheduled runs.
    #[serde(deserialize_with = "optional_duration")]
    pub schedule: Option<Duration>,
    /// Scheduled runs also delete manifests no tag reaches (`--delete-untagged`).
    pub deleteuntagged: bool,
    /// Scheduled runs only report what they would delete.
    pub dryrun: bool,
    /// Content written less than this long before a run starts is never deleted by it.
    #[serde(with = "duration")]
    pub graceperiod: Duration,
}

impl Default for Gc {
    fn default() -> Self {
        Gc { schedule: None, deleteuntagged: false, dryrun: false, graceperiod: Duration::from_secs(3600) }
    }
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = duration::deserialize(d)?;
    Ok((!v.is_zero()).then_some(v))
}

impl Section for Gc {
    fn problems(&self, out: &mut Vec<ConfigError>) {
        if self.schedule.is_some_and(|s| s < Duration::from_secs(1)) {
            out.push(ConfigError::new("gc.schedule", "must be at least 1s (or 0 for no scheduled runs)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::load;

    #[test]
    fn off_by_default_and_parsed() {
        let c = load("", &[]).unwrap().config.gc;
        assert_eq!(c.schedule, None);
        assert_eq!(c.graceperiod, Duration::from_secs(3600));
        let c = load("gc: {schedule: 24h, deleteuntagged: true, graceperiod: 0}\n", &[]).unwrap().config.gc;
        assert_eq!(c.schedule, Some(Duration::from_secs(86400)));
        assert!(c.deleteuntagged);
        assert_eq!(c.graceperiod, Duration::ZERO);
        let c = load("", &[("BERTH_GC_SCHEDULE", "90s"), ("BERTH_GC_GRACEPERIOD", "500ms")]).unwrap().config.gc;
        assert_eq!(c.schedule, Some(Duration::from_secs(90)));
        assert_eq!(c.graceperiod, Duration::from_millis(500));
        assert_eq!(load("gc: {schedule: 10ms}\n", &[]).unwrap_err().key, "gc.schedule");
        assert_eq!(load("gc: {graceperiod: soon}\n", &[]).unwrap_err().key, "gc.graceperiod");
    }
}
