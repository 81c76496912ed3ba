//! `cleanup`: retention policies, each run by a `cleanup-policy` plugin over the repositories
//! its globs match, on a cadence and on demand (`berth cleanup`, `POST /admin/cleanup`).
//!
//! ```yaml
//! cleanup:
//!   policies:
//!     - name: ci-images
//!       plugin: gitlab              # a plugin under `plugins:` (world cleanup-policy-plugin)
//!       repositories: ["ci/**"]     # `*` stays within a path component, `**` crosses them
//!       settings: {name_regex: ".*", keep_n: 10, older_than: 14d}
//!       cadence: 1d                 # 1d, 7d, 14d, 1month, 3month (GitLab's), or 12h...
//!       enabled: true
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Deserializer};

use super::plugins::{string_map, valid_name};
use super::{ConfigError, Section};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cleanup {
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// The `cleanup-policy` plugin that decides, by its name under `plugins`.
    pub plugin: String,
    /// Repository globs the policy covers (default: every repository).
    #[serde(default = "every_repository")]
    pub repositories: Vec<String>,
    /// Handed to the plugin with each repository (GitLab's `keep_n`, `older_than`, ...).
    #[serde(default, deserialize_with = "string_map")]
    pub settings: BTreeMap<String, String>,
    /// How often the server runs it; none: only on demand.
    #[serde(default, deserialize_with = "cadence")]
    pub cadence: Option<Duration>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn every_repository() -> Vec<String> {
    vec!["**".into()]
}

fn yes() -> bool {
    true
}

/// A repository glob: `*` and `?` stay within one path component, `**` spans any number.
pub fn repository_glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build().map(|g: Glob| g.compile_matcher())
}

/// GitLab's cadences (`1d`, `7d`, `14d`, `1month`, `3month`; a month is 30 days), or any
/// Go-style duration (`12h`).
pub fn parse_cadence(s: &str) -> Option<Duration> {
    const DAY: u64 = 86_400;
    let s = s.trim();
    let days = |n: &str, per: u64| n.parse::<u64>().ok().filter(|n| *n > 0).map(|n| Duration::from_secs(n * per * DAY));
    if let Some(n) = s.strip_suffix("month") {
        return days(n, 30);
    }
    if let Some(n) = s.strip_suffix('d') {
        return days(n, 1);
    }
    if let Some(n) = s.strip_suffix('w') {
        return days(n, 7);
    }
    super::duration::parse(s).filter(|d| !d.is_zero())
}

fn cadence<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
    parse_cadence(&text).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!("{text:?} is not a cadence like 1d, 7d, 14d, 1month, 3month or 12h"))
    })
}

impl Cleanup {
    /// The policies the server runs on their cadence.
    pub fn scheduled(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter().filter(|p| p.enabled && p.cadence.is_some())
    }

    /// Every plugin a policy names.
    pub fn plugins(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.plugin.as_str())
    }
}

impl Section for Cleanup {
    fn problems(&self, out: &mut Vec<ConfigError>) {
        for (i, p) in self.policies.iter().enumerate() {
            let key = |k: &str| format!("cleanup.policies[{i}].{k}");
            if !valid_name(&p.name) {
                out.push(ConfigError::new(key("name"), "must be made of [A-Za-z0-9._-]"));
            } else if self.policies[..i].iter().any(|o| o.name == p.name) {
                out.push(ConfigError::new(key("name"), format!("{:?} names two policies", p.name)));
            }
            if p.repositories.is_empty() {
                out.push(ConfigError::new(key("repositories"), "must name at least one glob (`**` for all)"));
            }
            for g in &p.repositories {
                if let Err(e) = repository_glob(g) {
                    out.push(ConfigError::new(key("repositories"), format!("{g:?}: {e}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load;

    #[test]
    fn gitlab_cadences() {
        assert_eq!(parse_cadence("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_cadence("14d"), Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_cadence("1month"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_cadence("3month"), Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_cadence("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_cadence("0d"), None);
        assert_eq!(parse_cadence("soon"), None);
    }

    #[test]
    fn policies_section() {
        let l = load(
            "plugins: {gitlab: {path: g.wasm}}\ncleanup:\n  policies:\n    - {name: ci, plugin: gitlab, repositories: [\"ci/*\"], settings: {keep_n: 5, name_regex: \".*\"}, cadence: 7d}\n    - {name: all, plugin: gitlab, enabled: false}\n",
            &[],
        )
        .unwrap();
        let c = &l.config.cleanup;
        assert_eq!(c.policies[0].settings["keep_n"], "5");
        assert_eq!(c.policies[0].cadence, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.policies[1].repositories, vec!["**".to_string()]);
        assert_eq!(c.scheduled().count(), 1);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(load("cleanup: {policies: [{name: a, plugin: p, cadence: sometimes}]}\n", &[]).is_err());
        let e = load("cleanup: {policies: [{name: a, plugin: p}, {name: a, plugin: p}]}\n", &[]).unwrap_err();
        assert_eq!(e.key, "cleanup.policies[1].name");
        let e = load("cleanup: {policies: [{name: a, plugin: p, repositories: [\"a/[\"]}]}\n", &[]).unwrap_err();
        assert_eq!(e.key, "cleanup.policies[0].repositories");
    }

    #[test]
    fn globs_stay_within_components() {
        let g = repository_glob("team/*").unwrap();
        assert!(g.is_match("team/app"));
        assert!(!g.is_match("team/sub/app"));
        assert!(repository_glob("team/**").unwrap().is_match("team/sub/app"));
        assert!(repository_glob("**").unwrap().is_match("a/b/c"));
    }
}
