//! `catalog`: how many repositories one `/v2/_catalog` page may hold (distribution 3's
//! `catalog.maxentries`), so no request makes the registry list every name at once.

use serde::Deserialize;

use super::{ConfigError, Section};

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Catalog {
    /// The page size without `n`, and the most any page holds: a larger `n` is clamped and the
    /// `Link` header leads on from there.
    pub maxentries: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog { maxentries: 1000 }
    }
}

impl Section for Catalog {
    fn problems(&self, out: &mut Vec<ConfigError>) {
        if self.maxentries == 0 {
            out.push(ConfigError::new("catalog.maxentries", "must be at least 1"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::load;

    #[test]
    fn maxentries_defaults_to_1000() {
        assert_eq!(load("", &[]).unwrap().config.catalog.maxentries, 1000);
        assert_eq!(load("catalog: {maxentries: 50}\n", &[]).unwrap().config.catalog.maxentries, 50);
    }

    #[test]
    fn maxentries_zero_is_refused() {
        assert_eq!(load("catalog: {maxentries: 0}\n", &[]).unwrap_err().key, "catalog.maxentries");
    }
}
