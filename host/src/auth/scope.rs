//! Scopes: what a request needs (`repository:<name>:pull,push`) and what a token or a policy
//! grants, in the token specification's spelling, as distribution computes them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One resource and the actions wanted on (or granted for) it. Also the shape of one entry of a
/// token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The action that covers every action of a resource.
pub const ALL_ACTIONS: &str = "*";

impl Scope {
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope { kind: "repository".into(), name: name.into(), actions: actions.iter().map(|a| a.to_string()).collect() }
    }

    pub fn catalog() -> Scope {
        Scope { kind: "registry".into(), name: "catalog".into(), actions: vec![ALL_ACTIONS.into()] }
    }

    /// Parses `type:name:actions` (the token endpoint's `scope` parameter). The name may hold
    /// colons only in a resource class (`repository(plugin):name`), so the type ends at the first
    /// colon and the actions start after the last one.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let kind = kind.split('(').next().unwrap_or(kind);
        let actions: Vec<String> =
            actions.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
        Some(Scope { kind: kind.into(), name: name.into(), actions })
    }

    fn same_resource(&self, other: &Scope) -> bool {
        self.kind == other.kind && self.name == other.name
    }

    fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == ALL_ACTIONS)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// Whether `granted` covers every action of every scope in `needed`.
pub fn covers(granted: &[Scope], needed: &[Scope]) -> bool {
    needed.iter().all(|n| n.actions.iter().all(|a| granted.iter().any(|g| g.same_resource(n) && g.allows(a))))
}

/// `granted` narrowed to what `requested` asked for: only requested resources, only requested
/// actions (a `*` grant yields the requested actions; a `*` request is met only by a `*` grant).
/// Whatever a policy answers, nothing more than the request survives this.
pub fn narrow(granted: &[Scope], requested: &[Scope]) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    for r in requested {
        let actions: Vec<String> =
            r.actions.iter().filter(|a| granted.iter().any(|g| g.same_resource(r) && g.allows(a))).cloned().collect();
        if actions.is_empty() {
            continue;
        }
        match out.iter_mut().find(|o| o.same_resource(r)) {
            Some(o) => {
                for a in actions {
                    if !o.actions.contains(&a) {
                        o.actions.push(a);
                    }
                }
            }
            None => out.push(Scope { kind: r.kind.clone(), name: r.name.clone(), actions }),
        }
    }
    out
}

/// The challenge's `scope` parameter: every scope, space-separated.
pub fn join(scopes: &[Scope]) -> String {
    scopes.iter().map(Scope::to_string).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(s, Scope::repository("team/app", &["pull", "push"]));
        assert_eq!(s.to_string(), "repository:team/app:pull,push");
        assert_eq!(Scope::parse("registry:catalog:*").unwrap(), Scope::catalog());
        assert_eq!(Scope::parse("repository(plugin):a/b:pull").unwrap(), Scope::repository("a/b", &["pull"]));
        assert!(Scope::parse("repository").is_none());
        assert!(Scope::parse("repository::pull").is_none());
    }

    #[test]
    fn coverage_needs_every_action_on_the_same_resource() {
        let granted = [Scope::repository("a", &["pull"]), Scope::repository("b", &["*"])];
        assert!(covers(&granted, &[Scope::repository("a", &["pull"])]));
        assert!(!covers(&granted, &[Scope::repository("a", &["pull", "push"])]));
        assert!(covers(&granted, &[Scope::repository("b", &["pull", "push", "delete"])]));
        assert!(!covers(&granted, &[Scope::repository("c", &["pull"])]));
        assert!(!covers(&granted, &[Scope::catalog()]));
        assert!(covers(&[Scope::catalog()], &[Scope::catalog()]));
        assert!(covers(&granted, &[]));
    }

    #[test]
    fn narrowing_never_adds() {
        let requested = [Scope::repository("a", &["pull", "push"]), Scope::catalog()];
        let over = [
            Scope::repository("a", &["*"]),
            Scope::repository("other", &["*"]),
            Scope::repository("*", &["*"]),
            Scope { kind: "registry".into(), name: "catalog".into(), actions: vec!["pull".into()] },
        ];
        assert_eq!(narrow(&over, &requested), [Scope::repository("a", &["pull", "push"])]);
        assert_eq!(narrow(&[], &requested), []);
        assert_eq!(narrow(&[Scope::catalog()], &requested), [Scope::catalog()]);
    }
}
