//! `berth-cleanup-gitlab`: GitLab's cleanup policy ("expiration policy"), with GitLab's keys and
//! in GitLab's documented order, so a project's policy moves to Berth unchanged:
//!
//! 1. collect the repository's tags;
//! 2. exclude `latest`;
//! 3. keep only the tags matching `name_regex` (the tags to expire; none when it is unset);
//! 4. exclude the tags matching `name_regex_keep`;
//! 5. order the rest by creation time, newest first (ties: the name sorting last first);
//! 6. exclude the `keep_n` newest;
//! 7. exclude the tags newer than `older_than` (a tag exactly `older_than` old is kept);
//! 8. delete what is left.
//!
//! Regexes are anchored at both ends, as GitLab anchors them (`\A(?:regex)\z`): `v.*` matches
//! `v1` but not `xv1`. They are the `regex` crate's syntax, which like GitLab's RE2 has no
//! backreferences or lookaround and runs in linear time.
//!
//! | key | GitLab's | default | meaning |
//! |---|---|---|---|
//! | `name_regex` (or `name_regex_delete`) | yes | (none: nothing expires) | tags to expire |
//! | `name_regex_keep` | yes | (none) | tags never expired |
//! | `keep_n` | yes | (none) | newest matching tags kept |
//! | `older_than` | yes | (none) | `7d`, `14d`, `30d`, `90d`; any `<n>` + `s`/`m`/`h`/`d`/`w` |
//!
//! Keys come from the policy's `settings` in Berth's configuration, over the plugin's own
//! `config` (so one plugin serves several policies).

use berth_plugin_sdk::cleanup::{CleanupPolicy, Deletion, Snapshot, TagInfo};
use berth_plugin_sdk::{Config, InitError};
use regex::Regex;

/// The plugin's own `config`: defaults for every policy it serves.
pub struct GitLab {
    defaults: Config,
}

/// One policy's settings, parsed.
#[derive(Debug)]
struct Policy {
    name_regex: Option<Regex>,
    name_regex_keep: Option<Regex>,
    keep_n: Option<usize>,
    older_than_millis: Option<u64>,
    /// The settings as written, for the reason shown beside each deletion.
    summary: String,
}

impl Policy {
    fn parse(config: &Config) -> Result<Policy, InitError> {
        let regex = |key: &str| -> Result<Option<Regex>, InitError> {
            config
                .get(key)
                .map(|r| Regex::new(&format!(r"\A(?:{r})\z")).map_err(|e| InitError::invalid(key, e.to_string())))
                .transpose()
        };
        let delete_key = if config.get("name_regex_delete").is_some() { "name_regex_delete" } else { "name_regex" };
        let older_than_millis = config
            .get("older_than")
            .map(|v| duration_millis(v).ok_or_else(|| InitError::invalid("older_than", format!("{v:?}: want e.g. 7d, 14d, 30d, 90d"))))
            .transpose()?;
        let keep_n = config.parse::<usize>("keep_n")?;
        let mut summary = Vec::new();
        for key in [delete_key, "name_regex_keep", "keep_n", "older_than"] {
            if let Some(v) = config.get(key) {
                summary.push(format!("{key}={v}"));
            }
        }
        Ok(Policy {
            name_regex: regex(delete_key)?,
            name_regex_keep: regex("name_regex_keep")?,
            keep_n,
            older_than_millis,
            summary: summary.join(" "),
        })
    }

    /// GitLab's steps, in GitLab's order.
    fn plan(&self, now_millis: u64, tags: Vec<TagInfo>) -> Vec<Deletion> {
        let Some(expire) = &self.name_regex else { return Vec::new() };
        let mut candidates: Vec<TagInfo> = tags
            .into_iter()
            .filter(|t| t.name != "latest")
            .filter(|t| expire.is_match(&t.name))
            .filter(|t| !self.name_regex_keep.as_ref().is_some_and(|k| k.is_match(&t.name)))
            .collect();
        candidates.sort_by(|a, b| b.created_millis.cmp(&a.created_millis).then_with(|| b.name.cmp(&a.name)));
        candidates
            .into_iter()
            .skip(self.keep_n.unwrap_or(0))
            .filter(|t| self.older_than_millis.is_none_or(|age| t.created_millis < now_millis.saturating_sub(age)))
            .map(|t| Deletion { tag: t.name, reason: self.summary.clone() })
            .collect()
    }
}

/// `7d`, `14d`, `30d`, `90d` (GitLab's choices), or any whole number of seconds, minutes,
/// hours, days or weeks.
fn duration_millis(v: &str) -> Option<u64> {
    let v = v.trim();
    let unit = v.chars().last()?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().ok()?;
    let per = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(per)
}

impl CleanupPolicy for GitLab {
    fn init(config: Config) -> Result<Self, InitError> {
        Policy::parse(&config)?;
        Ok(GitLab { defaults: config })
    }

    fn plan(&self, snapshot: Snapshot) -> Result<Vec<Deletion>, String> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for key in ["name_regex", "name_regex_delete", "name_regex_keep", "keep_n", "older_than"] {
            let value = snapshot.settings.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            if let Some(v) = value.or_else(|| self.defaults.get(key)) {
                entries.push((key.to_string(), v.to_string()));
            }
        }
        let policy = Policy::parse(&Config::new(entries)).map_err(|e| match e {
            InitError::InvalidConfig((key, problem)) => format!("invalid setting {key}: {problem}"),
            InitError::Failed(why) => why,
        })?;
        Ok(policy.plan(snapshot.now_millis, snapshot.tags))
    }
}

berth_plugin_sdk::export_cleanup_policy!(GitLab);
berth_plugin_sdk::declare_stateless!();

#[cfg(test)]
mod tests {
    use super::duration_millis;

    #[test]
    fn durations() {
        assert_eq!(duration_millis("7d"), Some(7 * 86_400_000));
        assert_eq!(duration_millis("90d"), Some(90 * 86_400_000));
        assert_eq!(duration_millis("2w"), Some(14 * 86_400_000));
        assert_eq!(duration_millis("d"), None);
        assert_eq!(duration_millis("7y"), None);
        assert_eq!(duration_millis(""), None);
    }
}
