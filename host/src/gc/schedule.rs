//! Garbage collection inside the server: the journal its writes go through, runs on demand
//! (`POST /admin/gc`) and on `gc.schedule`, one at a time in this process (the storage lock
//! keeps other processes out).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Journal, Options, Quiet, Report};
use crate::api::App;
use crate::config::Gc;

/// Storage requests in flight at once for a run inside the server: it shares the machine with
/// the requests the server is there for.
const SERVER_CONCURRENCY: usize = 4;
/// The share of the time a run inside the server works; it rests the rest.
const SERVER_PACE: f64 = 0.25;

pub struct Service {
    pub journal: Arc<Journal>,
    pub config: Gc,
    read_only: bool,
    running: tokio::sync::Mutex<()>,
}

impl Service {
    pub fn new(config: Gc, read_only: bool) -> Arc<Service> {
        Arc::new(Service { journal: Arc::new(Journal::default()), config, read_only, running: Default::default() })
    }

    /// Options of a run: the configured grace period, the caller's flags.
    pub fn options(&self, dry_run: bool, delete_untagged: bool) -> Options {
        Options {
            dry_run,
            delete_untagged,
            grace: self.config.graceperiod,
            concurrency: SERVER_CONCURRENCY,
            pace: SERVER_PACE,
        }
    }

    /// Runs one collection now, unless one is running (here or elsewhere on the storage).
    pub async fn run(&self, app: &App, opts: &Options) -> Result<Report, super::GcError> {
        if self.read_only && !opts.dry_run {
            return Err(super::GcError::ReadOnly);
        }
        let Ok(_one) = self.running.try_lock() else {
            let held = super::lock::read(app.registry.driver()).await.ok().flatten();
            return Err(super::GcError::Locked {
                owner: held.as_ref().map_or("this server".into(), |r| format!("run {} in this server", r.run)),
                expires: std::time::SystemTime::now() + super::lock::TTL,
            });
        };
        super::run(&app.registry, opts, Some(&self.journal), &Quiet).await
    }

    /// Runs on `gc.schedule` for as long as the application lives.
    pub fn spawn_schedule(self: &Arc<Self>, app: Weak<App>) {
        let Some(every) = self.config.schedule else { return };
        if self.read_only {
            tracing::warn!("gc.schedule: the registry is read-only; no scheduled garbage collection");
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + every, every.max(Duration::from_secs(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (Some(svc), Some(app)) = (me.upgrade(), app.upgrade()) else { return };
                let opts = svc.options(svc.config.dryrun, svc.config.deleteuntagged);
                if let Err(e) = svc.run(&app, &opts).await {
                    tracing::warn!(error = %e, "scheduled garbage collection did not run");
                }
            }
        });
    }
}
