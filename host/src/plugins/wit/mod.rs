//! The WIT versions this host loads. A component names the version of `berth:plugin` it was
//! built against in its export names (`berth:plugin/lifecycle@0.1.0`); the loader reads it and
//! refuses one this host has no bindings for, naming both versions. Bindings live in one
//! module per frozen version (`since_v0_1_0`), so adding `0.2.0` keeps `0.1.x` plugins
//! loading.

pub mod since_v0_1_0;

/// The bindings of the newest version, which the adapters are written against.
pub use since_v0_1_0 as latest;

/// The package every plugin interface belongs to.
pub const PACKAGE: &str = "berth:plugin";

/// A version of the package this host can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    /// `0.1.x`: `wit/` as of this release.
    V0_1,
}

impl WitVersion {
    /// Every version this host loads, oldest first.
    pub const ALL: [WitVersion; 1] = [WitVersion::V0_1];

    /// The range a component's version must fall in, as shown to users.
    pub fn range(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "0.1.x",
        }
    }

    /// Which supported version (if any) a component's package version belongs to. Semver
    /// rules: before 1.0 the minor version breaks compatibility, after it the major.
    pub fn of(v: &semver::Version) -> Option<WitVersion> {
        match (v.major, v.minor) {
            (0, 1) => Some(WitVersion::V0_1),
            _ => None,
        }
    }

    /// The supported ranges, for messages: `0.1.x`.
    pub fn supported() -> String {
        WitVersion::ALL.iter().map(|v| v.range()).collect::<Vec<_>>().join(", ")
    }
}

/// The interface and version of an export name such as `berth:plugin/storage-driver@0.1.0`;
/// None for exports of other packages.
pub fn parse_export(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    Some(match rest.split_once('@') {
        Some((iface, version)) => (iface, Some(version)),
        None => (rest, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        assert_eq!(WitVersion::of(&v("0.1.0")), Some(WitVersion::V0_1));
        assert_eq!(WitVersion::of(&v("0.1.7")), Some(WitVersion::V0_1));
        assert_eq!(WitVersion::of(&v("0.2.0")), None);
        assert_eq!(WitVersion::of(&v("1.0.0")), None);
        assert_eq!(parse_export("berth:plugin/storage-driver@0.1.0"), Some(("storage-driver", Some("0.1.0"))));
        assert_eq!(parse_export("berth:plugin/lifecycle"), Some(("lifecycle", None)));
        assert_eq!(parse_export("wasi:cli/run@0.2.0"), None);
    }
}
