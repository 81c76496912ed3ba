use std::fmt::Display;
use std::str::FromStr;

use crate::InitError;

/// The plugin's `config` map from Berth's configuration, handed to `init`.
///
/// ```yaml
/// plugins:
///   storage-fs:
///     path: ...
///     config: {root: /data, sync_dirs: "true"}
/// ```
///
/// Values are strings; [`Config::parse`] converts them and reports bad values as
/// [`InitError::InvalidConfig`] naming the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Wraps the key/value pairs the host passed.
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }

    /// The value of `key` (the last one if it appears twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or `default`.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`, or an `invalid-config` error saying it is missing.
    pub fn require(&self, key: &str) -> Result<&str, InitError> {
        self.get(key).ok_or_else(|| InitError::invalid(key, "missing"))
    }

    /// `key` parsed as `T`, `None` if absent, an `invalid-config` error if it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, InitError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.get(key)
            .map(|v| v.trim().parse::<T>().map_err(|e| InitError::invalid(key, format!("{v:?}: {e}"))))
            .transpose()
    }

    /// `key` parsed as `T`, or `default` if absent.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, InitError>
    where
        T: FromStr,
        T::Err: Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// Refuses keys not in `known`, so a typo in Berth's config fails loudly at load time.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), InitError> {
        match self.entries.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            Some((k, _)) => Err(InitError::invalid(k.clone(), format!("unknown key (known: {})", known.join(", ")))),
            None => Ok(()),
        }
    }

    /// All pairs, in the order the host passed them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Config::new(entries)
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Config {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        Config::new(iter.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let c: Config = [("root", "/data"), ("n", "12"), ("n", "13"), ("bad", "x")].into_iter().collect();
        assert_eq!(c.get("root"), Some("/data"));
        assert_eq!(c.get("nope"), None);
        assert_eq!(c.get_or("nope", "d"), "d");
        assert_eq!(c.parse::<u32>("n").unwrap(), Some(13));
        assert_eq!(c.parse_or::<u32>("missing", 7).unwrap(), 7);
        assert!(matches!(c.parse::<u32>("bad"), Err(InitError::InvalidConfig((k, _))) if k == "bad"));
        assert!(matches!(c.require("nope"), Err(InitError::InvalidConfig((k, _))) if k == "nope"));
        assert!(c.deny_unknown(&["root", "n", "bad"]).is_ok());
        assert!(c.deny_unknown(&["root"]).is_err());
    }
}
