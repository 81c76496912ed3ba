//! `admission`: which admission-policy plugins a write must pass, per repository glob.
//!
//! ```yaml
//! admission:
//!   chains:
//!     - repository: "prod/**"          # `*` and `?` within a path segment, `**` across segments
//!       plugins: [immutable-tags, rules]
//!   failopen: [advisory]               # plugins whose failure allows (default: it denies)
//! ```
//!
//! Every chain whose glob matches a repository contributes its plugins, in order, each once;
//! all of them must allow.

use serde::Deserialize;

use super::{ConfigError, Section};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admission {
    pub chains: Vec<Chain>,
    /// Plugins whose failure (a trap, the deadline, the memory cap) lets the write through
    /// instead of denying it; for advisory policies only.
    pub failopen: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// A repository-name glob.
    pub repository: String,
    /// Names under `plugins`, each an `admission-policy-plugin`.
    pub plugins: Vec<String>,
}

impl Admission {
    /// Every plugin named by a chain, each once, in order of first mention.
    pub fn plugin_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.chains {
            for p in &c.plugins {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        out
    }
}

impl Section for Admission {
    fn problems(&self, out: &mut Vec<ConfigError>) {
        for (i, c) in self.chains.iter().enumerate() {
            if c.repository.is_empty() {
                out.push(ConfigError::new(format!("admission.chains[{i}].repository"), "must not be empty"));
            } else if let Err(e) = super::repository_glob(&c.repository) {
                out.push(ConfigError::new(format!("admission.chains[{i}].repository"), e.to_string()));
            }
            if c.plugins.is_empty() {
                out.push(ConfigError::new(format!("admission.chains[{i}].plugins"), "must name at least one plugin"));
            }
        }
        for name in &self.failopen {
            if !self.plugin_names().contains(name) {
                out.push(ConfigError::new("admission.failopen", format!("{name:?} is in no admission chain")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;

    #[test]
    fn chains_and_failopen() {
        let l = load(
            "plugins:\n  a: {path: a.wasm}\n  b: {path: b.wasm}\nadmission:\n  chains:\n    - {repository: 'prod/**', plugins: [a, b]}\n    - {repository: '*', plugins: [b]}\n  failopen: [b]\n",
            &[],
        )
        .unwrap();
        let a = &l.config.admission;
        assert_eq!(a.chains.len(), 2);
        assert_eq!(a.plugin_names(), ["a", "b"]);
        assert_eq!(a.failopen, ["b"]);
    }

    #[test]
    fn env_override_sets_chains() {
        let l = load(
            "plugins:\n  x: {path: x.wasm}\n",
            &[("BERTH_ADMISSION_CHAINS", "[{repository: '**', plugins: [x]}]")],
        )
        .unwrap();
        assert_eq!(l.config.admission.chains[0].plugins, ["x"]);
    }

    #[test]
    fn problems_name_the_key() {
        let e = load("admission:\n  chains:\n    - {repository: '', plugins: [a]}\n", &[]).unwrap_err();
        assert_eq!(e.key, "admission.chains[0].repository", "{e}");
        let e = load("admission:\n  chains:\n    - {repository: 'a/[', plugins: [a]}\n", &[]).unwrap_err();
        assert_eq!(e.key, "admission.chains[0].repository", "{e}");
        let e = load("admission:\n  chains:\n    - {repository: a, plugins: [a]}\n  failopen: [z]\n", &[]).unwrap_err();
        assert_eq!(e.key, "admission.failopen", "{e}");
    }
}
