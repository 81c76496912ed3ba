//! `berth-cleanup-keep-latest`: the retention policy most registries offer. Per repository it
//! keeps the `keep` most recently created tags, never deletes a tag matching `protect`, and
//! deletes the rest once they are older than `olderthandays`.
//!
//! | config key | default | meaning |
//! |---|---|---|
//! | `keep` | 10 | newest tags always kept |
//! | `protect` | (none) | comma-separated tag patterns never deleted; `*` matches any run (`v*`, `release-*`, `latest`) |
//! | `olderthandays` | 0 | only tags created longer ago than this are deleted |

use berth_plugin_sdk::cleanup::{CleanupPolicy, Deletion, Snapshot};
use berth_plugin_sdk::{Config, InitError};

pub struct KeepLatest {
    keep: usize,
    protect: Vec<String>,
    older_than_millis: u64,
}

impl CleanupPolicy for KeepLatest {
    fn init(config: Config) -> Result<Self, InitError> {
        let keep = config.parse_or("keep", 10usize)?;
        let days = config.parse_or("olderthandays", 0u64)?;
        let protect = config
            .get_or("protect", "")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        Ok(KeepLatest { keep, protect, older_than_millis: days * 86_400_000 })
    }

    fn plan(&self, mut snapshot: Snapshot) -> Result<Vec<Deletion>, String> {
        // Newest first; ties broken by name so a plan is the same every run.
        snapshot.tags.sort_by(|a, b| b.created_millis.cmp(&a.created_millis).then_with(|| a.name.cmp(&b.name)));
        let now = snapshot.now_millis;
        Ok(snapshot
            .tags
            .into_iter()
            .skip(self.keep)
            .filter(|t| !self.protect.iter().any(|p| glob(p, &t.name)))
            .filter(|t| now.saturating_sub(t.created_millis) >= self.older_than_millis)
            .map(|t| Deletion {
                tag: t.name,
                reason: format!("keep={} olderthandays={}", self.keep, self.older_than_millis / 86_400_000),
            })
            .collect())
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|i| tail.is_char_boundary(*i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

berth_plugin_sdk::export_cleanup_policy!(KeepLatest);
berth_plugin_sdk::declare_stateless!();

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("v*", "v1.2"));
        assert!(glob("latest", "latest"));
        assert!(!glob("latest", "latest2"));
        assert!(glob("release-*-lts", "release-2024-lts"));
        assert!(!glob("v*", "x1"));
        assert!(glob("*", ""));
    }
}
