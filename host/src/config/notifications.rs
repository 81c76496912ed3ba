//! `notifications`: where registry events go (distribution's `notifications.endpoints`, as the
//! GitLab administration guide writes them), which plugin sinks receive them, and the bounds
//! of the durable outbox they wait in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{duration, resolve, ConfigError, Section};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Notifications {
    pub endpoints: Vec<Endpoint>,
    /// distribution's `notifications.events`.
    pub events: EventsOptions,
    pub outbox: Outbox,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EventsOptions {
    /// Manifest events list the manifest's references (layers, config, children).
    pub includereferences: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub name: String,
    /// A webhook: events are POSTed here. Exactly one of `url` and `plugin`.
    pub url: String,
    /// A `notification-sink` plugin (by its name under `plugins`) instead of a webhook.
    pub plugin: Option<String>,
    /// Sent with every request; each header may carry several values.
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive failures before the endpoint backs off.
    pub threshold: u32,
    /// The first pause once `threshold` is reached; it doubles with every further failure.
    #[serde(with = "duration")]
    pub backoff: Duration,
    /// The longest pause between attempts.
    #[serde(with = "duration")]
    pub maxbackoff: Duration,
    pub disabled: bool,
    /// Events whose target has one of these media types are not sent.
    pub ignoredmediatypes: Vec<String>,
    pub ignore: Ignore,
    /// A PEM bundle of CAs to trust for an `https` URL instead of the system store.
    pub cafile: Option<PathBuf>,
    /// The most events in one delivery.
    pub batch: usize,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            name: String::new(),
            url: String::new(),
            plugin: None,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            threshold: 10,
            backoff: Duration::from_secs(1),
            maxbackoff: Duration::from_secs(60),
            disabled: false,
            ignoredmediatypes: Vec::new(),
            ignore: Ignore::default(),
            cafile: None,
            batch: 100,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Ignore {
    pub mediatypes: Vec<String>,
    /// `push`, `pull`, `delete`, `mount`.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Outbox {
    /// Where the outbox file lives; default `<rootdirectory>/_berth/` for the filesystem
    /// driver. Required with any other driver (a local disk beside the registry).
    pub directory: Option<PathBuf>,
    /// The most events kept for endpoints that have not taken them; the oldest go first.
    pub maxevents: u64,
    /// The most bytes of events kept (as stored).
    pub maxbytes: u64,
    /// Pull events are written at most this long after they happen (one sync for all of
    /// them): the window a crash can lose pull events in. Pushes, deletes and mounts are
    /// durable before the client's answer.
    #[serde(with = "duration")]
    pub pullflush: Duration,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox { directory: None, maxevents: 100_000, maxbytes: 256 << 20, pullflush: Duration::from_secs(1) }
    }
}

pub const ACTIONS: [&str; 4] = ["push", "pull", "delete", "mount"];

impl Notifications {
    /// Endpoints that receive events.
    pub fn enabled(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| !e.disabled)
    }

    /// Plugins named by endpoints (enabled or not).
    pub fn plugins(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().filter_map(|e| e.plugin.as_deref())
    }
}

impl Section for Notifications {
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(d) = &mut self.outbox.directory {
            resolve(base, d);
        }
        for e in &mut self.endpoints {
            if let Some(c) = &mut e.cafile {
                resolve(base, c);
            }
        }
    }

    fn problems(&self, out: &mut Vec<ConfigError>) {
        let mut names: Vec<&str> = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = |k: &str| format!("notifications.endpoints[{i}].{k}");
            if e.name.is_empty() {
                out.push(ConfigError::new(key("name"), "is required"));
            } else if names.contains(&e.name.as_str()) {
                out.push(ConfigError::new(key("name"), format!("{:?} is used by another endpoint", e.name)));
            }
            names.push(&e.name);
            match (&e.plugin, e.url.is_empty()) {
                (Some(_), false) => out.push(ConfigError::new(key("url"), "give either url or plugin, not both")),
                (None, true) => out.push(ConfigError::new(key("url"), "is required (or plugin)")),
                (None, false) => match e.url.parse::<http::Uri>() {
                    Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
                    _ => out.push(ConfigError::new(key("url"), format!("{:?} is not an http(s) URL", e.url))),
                },
                (Some(_), true) => {}
            }
            for h in e.headers.keys() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    out.push(ConfigError::new(key("headers"), format!("{h:?} is not a header name")));
                }
            }
            if e.threshold == 0 {
                out.push(ConfigError::new(key("threshold"), "must be at least 1"));
            }
            if e.timeout.is_zero() {
                out.push(ConfigError::new(key("timeout"), "must be more than 0"));
            }
            if e.batch == 0 {
                out.push(ConfigError::new(key("batch"), "must be at least 1"));
            }
            for a in &e.ignore.actions {
                if !ACTIONS.contains(&a.as_str()) {
                    out.push(ConfigError::new(
                        key("ignore.actions"),
                        format!("{a:?} is not one of {}", ACTIONS.join(", ")),
                    ));
                }
            }
        }
        if self.outbox.maxevents == 0 {
            out.push(ConfigError::new("notifications.outbox.maxevents", "must be at least 1"));
        }
        if self.outbox.maxbytes < 4096 {
            out.push(ConfigError::new("notifications.outbox.maxbytes", "must be at least 4096"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;
    use std::time::Duration;

    #[test]
    fn endpoints_as_the_guide_writes_them() {
        let yaml = "notifications:\n  endpoints:\n    - name: alistener\n      disabled: false\n      url: https://my.listener.com/event\n      headers: {Authorization: [secret]}\n      timeout: 500\n      threshold: 5\n      backoff: 1s\n      ignoredmediatypes: [application/octet-stream]\n      ignore: {mediatypes: [a/b], actions: [pull]}\n";
        let c = load(yaml, &[]).unwrap().config;
        let e = &c.notifications.endpoints[0];
        assert_eq!(e.name, "alistener");
        assert_eq!(e.headers["Authorization"], ["secret"]);
        assert_eq!(e.timeout, Duration::from_millis(500));
        assert_eq!(e.backoff, Duration::from_secs(1));
        assert_eq!(e.threshold, 5);
        assert_eq!(e.ignore.actions, ["pull"]);
        assert_eq!(c.notifications.outbox.maxevents, 100_000);
    }

    #[test]
    fn bad_endpoints_are_named() {
        let yaml = "notifications:\n  endpoints:\n    - {name: a, url: 'ftp://x'}\n    - {name: a, url: 'http://x', ignore: {actions: [bogus]}}\n";
        let e = load(yaml, &[]).unwrap_err();
        assert_eq!(e.key, "notifications.endpoints[0].url");
        let c = crate::config::Config::check(
            &{
                let d = tempfile::tempdir().unwrap().keep();
                let p = d.join("c.yml");
                std::fs::write(&p, yaml).unwrap();
                p
            },
            [],
        )
        .unwrap_err();
        let keys: Vec<String> = c.into_iter().map(|e| e.key).collect();
        assert!(keys.contains(&"notifications.endpoints[1].name".to_string()), "{keys:?}");
        assert!(keys.contains(&"notifications.endpoints[1].ignore.actions".to_string()), "{keys:?}");
    }
}
