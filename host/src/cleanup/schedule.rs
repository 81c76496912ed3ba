//! Each policy with a `cadence` runs in the server on that cadence. When it last ran is kept
//! in storage (`/berth/cleanup/<policy>/lastrun`, milliseconds since the epoch), so a restart
//! neither runs every policy at once nor puts them off by a whole cadence, and every server on
//! the same storage shares the record. A policy seen for the first time runs one cadence later.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{Cleanup, Options};
use crate::api::App;

fn state_path(policy: &str) -> String {
    format!("/berth/cleanup/{policy}/lastrun")
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// When `policy` last ran (or was first scheduled), if storage says.
async fn last_run(app: &App, policy: &str) -> Option<SystemTime> {
    let b = app.registry.driver().get_content(&state_path(policy)).await.ok()?;
    let ms: u64 = std::str::from_utf8(&b).ok()?.trim().parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

async fn set_last_run(app: &App, policy: &str, at: SystemTime) {
    let body = Bytes::from(millis(at).to_string());
    if let Err(e) = app.registry.driver().put_content(&state_path(policy), body).await {
        tracing::warn!(policy, error = %e, "cleanup: cannot record the run time; the next run is still one cadence away");
    }
}

/// Starts one task per scheduled policy; each ends when the app is dropped.
pub fn spawn_schedules(app: &Arc<App>, cleanup: Arc<Cleanup>) {
    for p in &cleanup.policies {
        let (Some(cadence), true) = (p.config.cadence, p.config.enabled) else { continue };
        let name = p.config.name.clone();
        let app: Weak<App> = Arc::downgrade(app);
        let cleanup = cleanup.clone();
        tokio::spawn(async move {
            loop {
                let Some(a) = app.upgrade() else { return };
                let last = match last_run(&a, &name).await {
                    Some(t) => t,
                    None => {
                        let now = SystemTime::now();
                        set_last_run(&a, &name, now).await;
                        now
                    }
                };
                let wait = (last + cadence).duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                drop(a);
                tokio::time::sleep(wait).await;
                let Some(a) = app.upgrade() else { return };
                let started = SystemTime::now();
                let options = Options { policy: Some(name.clone()), ..Options::default() };
                if let Err(e) = cleanup.run(&a.registry, &options).await {
                    tracing::error!(policy = %name, error = %e, "scheduled cleanup failed; next try in one cadence");
                }
                set_last_run(&a, &name, started).await;
            }
        });
    }
}
