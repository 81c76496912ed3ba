//! `compatibility`: what older clients need, off unless asked for.

use serde::Deserialize;

use super::Section;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Compatibility {
    pub schema1: Schema1,
}

impl Section for Compatibility {}

/// Signed Docker schema 1 manifests (distribution 2.x's `compatibility.schema1.enabled`); when
/// off, a schema 1 manifest is refused with `MANIFEST_INVALID`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Schema1 {
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;

    #[test]
    fn schema1_is_off_unless_enabled() {
        assert!(!load("", &[]).unwrap().config.compatibility.schema1.enabled);
        let c = load("compatibility:\n  schema1:\n    enabled: true\n", &[]).unwrap().config;
        assert!(c.compatibility.schema1.enabled);
        let e = load("compatibility:\n  schema1:\n    enabled: sometimes\n", &[]).unwrap_err();
        assert_eq!(e.key, "compatibility.schema1.enabled", "{e}");
    }
}
