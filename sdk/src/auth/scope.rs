//! Scopes as the distribution token spec writes them (`repository:library/alpine:pull,push`,
//! `registry:catalog:*`) and the action sets a policy narrows them with.

use std::fmt;
use std::str::FromStr;

use super::Scope;

/// A set of actions a policy allows on a resource: some of `pull`, `push`, `delete`, or `*`
/// (every action, including ones this type has no name for). A bit set, so a policy can keep
/// one per rule and narrow requests with it without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Actions(u8);

impl Actions {
    /// Nothing.
    pub const NONE: Actions = Actions(0);
    /// `pull`: read manifests, blobs, tags and referrers.
    pub const PULL: Actions = Actions(1);
    /// `push`: upload blobs and manifests.
    pub const PUSH: Actions = Actions(2);
    /// `delete`: delete manifests, blobs and uploads.
    pub const DELETE: Actions = Actions(4);
    /// `*`: every action, named or not; the only set that covers a requested `*` (the catalog's).
    pub const ALL: Actions = Actions(8 | 7);

    const NAMES: [(&'static str, Actions); 4] =
        [("pull", Actions::PULL), ("push", Actions::PUSH), ("delete", Actions::DELETE), ("*", Actions::ALL)];

    /// Parses a comma-separated list (`pull,push`, `*`; empty = none); spaces around names are
    /// ignored. An unknown name is an error, so a typo in a policy's config fails at load time.
    pub fn parse(list: &str) -> Result<Actions, String> {
        let mut set = Actions::NONE;
        if list.trim().is_empty() {
            return Ok(set);
        }
        for name in list.split(',').map(str::trim) {
            match Actions::NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, a)) => set = set | *a,
                None if name.is_empty() => return Err(format!("empty action in {list:?}")),
                None => return Err(format!("unknown action {name:?} (pull, push, delete or *)")),
            }
        }
        Ok(set)
    }

    /// True when the set holds no action.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every action of `other` is in the set.
    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether one requested action (`pull`, `*`, ...) is allowed: a named action by its bit, a
    /// `*` or a name this type does not know only by [`Actions::ALL`].
    pub fn covers(self, action: &str) -> bool {
        match action {
            "pull" => self.contains(Actions::PULL),
            "push" => self.contains(Actions::PUSH),
            "delete" => self.contains(Actions::DELETE),
            _ => self == Actions::ALL,
        }
    }
}

impl std::ops::BitOr for Actions {
    type Output = Actions;
    fn bitor(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }
}

impl FromStr for Actions {
    type Err = String;
    fn from_str(s: &str) -> Result<Actions, String> {
        Actions::parse(s)
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Actions::ALL {
            return f.write_str("*");
        }
        let names = Actions::NAMES[..3].iter().filter(|(_, a)| self.contains(*a)).map(|(n, _)| *n);
        f.write_str(&names.collect::<Vec<_>>().join(","))
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actions({self})")
    }
}

/// Why a scope string did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeParseError(String);

impl fmt::Display for ScopeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScopeParseError {}

impl Scope {
    /// A scope of any kind.
    pub fn new(kind: impl Into<String>, name: impl Into<String>, actions: &[&str]) -> Scope {
        Scope { kind: kind.into(), name: name.into(), actions: actions.iter().map(|a| a.to_string()).collect() }
    }

    /// `repository:<name>:<actions>`.
    pub fn repository(name: impl Into<String>, actions: &[&str]) -> Scope {
        Scope::new("repository", name, actions)
    }

    /// `registry:catalog:*`, what `GET /v2/_catalog` needs.
    pub fn catalog() -> Scope {
        Scope::new("registry", "catalog", &["*"])
    }

    /// True for a `repository` scope.
    pub fn is_repository(&self) -> bool {
        self.kind == "repository"
    }

    /// True for `registry:catalog:...`.
    pub fn is_catalog(&self) -> bool {
        self.kind == "registry" && self.name == "catalog"
    }

    /// Parses `type:name:actions` as distribution does: the type up to the first `:`, the actions
    /// after the last, the name in between (so a name with a registry port,
    /// `repository:host:5000/app:pull`, keeps its colon).
    pub fn parse(s: &str) -> Result<Scope, ScopeParseError> {
        let bad = |why: &str| ScopeParseError(format!("scope {s:?}: {why} (expected type:name:actions)"));
        let (kind, rest) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(|| bad("no actions"))?;
        if kind.is_empty() || name.is_empty() {
            return Err(bad("empty type or name"));
        }
        let actions: Vec<String> = actions.split(',').filter(|a| !a.is_empty()).map(String::from).collect();
        if actions.is_empty() {
            return Err(bad("no actions"));
        }
        Ok(Scope { kind: kind.to_string(), name: name.to_string(), actions })
    }

    /// Whether the scope lists `action` or `*`.
    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == "*")
    }

    /// This requested scope narrowed to the `allowed` actions: the requested actions that
    /// `allowed` [covers](Actions::covers), in their order, or `None` when none is left (leave
    /// the scope out of the decision). A requested `*` survives only `Actions::ALL`.
    pub fn narrowed(mut self, allowed: Actions) -> Option<Scope> {
        if allowed.is_empty() {
            return None;
        }
        self.actions.retain(|a| allowed.covers(a));
        (!self.actions.is_empty()).then_some(self)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

impl FromStr for Scope {
    type Err = ScopeParseError;
    fn from_str(s: &str) -> Result<Scope, ScopeParseError> {
        Scope::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_and_format() {
        assert_eq!(Actions::parse("pull").unwrap(), Actions::PULL);
        assert_eq!(Actions::parse("pull, push").unwrap(), Actions::PULL | Actions::PUSH);
        assert_eq!(Actions::parse("*").unwrap(), Actions::ALL);
        assert_eq!(Actions::parse("pull,*").unwrap(), Actions::ALL);
        assert!(Actions::parse("pul").is_err());
        assert_eq!(Actions::parse(" ").unwrap(), Actions::NONE);
        assert!(Actions::parse("pull,").is_err());
        assert_eq!((Actions::PULL | Actions::DELETE).to_string(), "pull,delete");
        assert_eq!(Actions::ALL.to_string(), "*");
        assert_eq!(Actions::NONE.to_string(), "");
        assert!((Actions::PULL | Actions::PUSH | Actions::DELETE) != Actions::ALL);
    }

    #[test]
    fn covers() {
        let pull_push = Actions::PULL | Actions::PUSH;
        assert!(pull_push.covers("pull") && pull_push.covers("push"));
        assert!(!pull_push.covers("delete"));
        assert!(!pull_push.covers("*"));
        let named = Actions::PULL | Actions::PUSH | Actions::DELETE;
        assert!(!named.covers("*"), "every named action is still not `*`");
        assert!(!named.covers("metadata-read"));
        assert!(Actions::ALL.covers("*") && Actions::ALL.covers("metadata-read") && Actions::ALL.covers("delete"));
        assert!(!Actions::NONE.covers("pull"));
    }

    #[test]
    fn scope_round_trip() {
        let s = Scope::parse("repository:library/alpine:pull,push").unwrap();
        assert_eq!(s, Scope::repository("library/alpine", &["pull", "push"]));
        assert_eq!(s.to_string(), "repository:library/alpine:pull,push");
        assert_eq!(Scope::parse("registry:catalog:*").unwrap(), Scope::catalog());
        assert!(Scope::catalog().is_catalog() && !Scope::catalog().is_repository());
        let port = Scope::parse("repository:host:5000/app:pull").unwrap();
        assert_eq!((port.name.as_str(), port.actions.as_slice()), ("host:5000/app", &["pull".to_string()][..]));
        for bad in ["", "repository", "repository:x", ":x:pull", "repository::pull", "repository:x:"] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        assert!("repository:a:pull".parse::<Scope>().is_ok());
    }

    #[test]
    fn narrowing() {
        let req = || Scope::repository("a/b", &["pull", "push"]);
        assert_eq!(req().narrowed(Actions::PULL), Some(Scope::repository("a/b", &["pull"])));
        assert_eq!(req().narrowed(Actions::ALL), Some(req()));
        assert_eq!(req().narrowed(Actions::DELETE), None);
        assert_eq!(req().narrowed(Actions::NONE), None);
        assert_eq!(Scope::catalog().narrowed(Actions::PULL | Actions::PUSH | Actions::DELETE), None);
        assert_eq!(Scope::catalog().narrowed(Actions::ALL), Some(Scope::catalog()));
        assert!(Scope::repository("x", &["*"]).allows("delete"));
        assert!(!req().allows("delete"));
    }
}
