//! Who gets which actions: the user's own namespace, everything else, anonymous callers, admins.

use berth_plugin_sdk::auth::{Actions, Scope};
use berth_plugin_sdk::{Config, InitError};

/// The grant table, from the config keys `own`, `others`, `anonymous` and `admins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub own: Actions,
    pub others: Actions,
    pub anonymous: Actions,
    pub admins: Vec<String>,
}

impl Grants {
    pub fn from_config(config: &Config) -> Result<Grants, InitError> {
        let actions = |key: &str, default: &str| {
            Actions::parse(config.get_or(key, default)).map_err(|problem| InitError::invalid(key, problem))
        };
        let admins =
            config.get_or("admins", "").split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
        Ok(Grants {
            own: actions("own", "pull,push,delete")?,
            others: actions("others", "pull")?,
            anonymous: actions("anonymous", "")?,
            admins,
        })
    }

    /// The actions `user` (`None`: anonymous) may take on `scope`'s resource. Only admins get
    /// the catalog (or any non-repository resource); a signed-in user never gets less than an
    /// anonymous caller.
    pub fn allowed(&self, user: Option<&str>, scope: &Scope) -> Actions {
        if let Some(user) = user {
            if self.admins.iter().any(|a| a == user) {
                return Actions::ALL;
            }
        }
        if !scope.is_repository() {
            return Actions::NONE;
        }
        match user {
            None => self.anonymous,
            Some(user) if owns(user, &scope.name) => self.own | self.anonymous,
            Some(_) => self.others | self.anonymous,
        }
    }

    /// `requested`, each scope narrowed to what `user` may do, refused scopes left out.
    pub fn narrow(&self, user: Option<&str>, requested: Vec<Scope>) -> Vec<Scope> {
        requested
            .into_iter()
            .filter_map(|s| {
                let allowed = self.allowed(user, &s);
                s.narrowed(allowed)
            })
            .collect()
    }
}

/// `alice` owns `alice` and everything under `alice/` (not `alice2`). A plain prefix test, so a
/// user name with `*` in it is not a pattern.
fn owns(user: &str, repository: &str) -> bool {
    repository.strip_prefix(user).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(pairs: &[(&str, &str)]) -> Grants {
        Grants::from_config(&pairs.iter().copied().collect()).unwrap()
    }

    fn repo(name: &str, actions: &[&str]) -> Scope {
        Scope::repository(name, actions)
    }

    #[test]
    fn defaults() {
        let g = grants(&[]);
        let all = &["pull", "push", "delete"];
        assert_eq!(g.narrow(Some("alice"), vec![repo("alice", all)]), vec![repo("alice", all)]);
        assert_eq!(g.narrow(Some("alice"), vec![repo("alice/app/web", all)]), vec![repo("alice/app/web", all)]);
        assert_eq!(g.narrow(Some("alice"), vec![repo("alice2/app", all)]), vec![repo("alice2/app", &["pull"])]);
        assert_eq!(g.narrow(Some("alice"), vec![repo("bob/app", &["push"])]), vec![]);
        assert_eq!(g.narrow(Some("alice"), vec![Scope::catalog()]), vec![]);
        assert_eq!(g.narrow(None, vec![repo("alice/app", &["pull"])]), vec![]);
        // `*` on one's own namespace needs `own = *`.
        assert_eq!(g.narrow(Some("alice"), vec![repo("alice/x", &["*"])]), vec![]);
    }

    #[test]
    fn configured() {
        let g = grants(&[("own", "*"), ("others", ""), ("anonymous", "pull"), ("admins", "root, ops")]);
        assert_eq!(g.narrow(Some("alice"), vec![repo("alice/x", &["*"])]), vec![repo("alice/x", &["*"])]);
        assert_eq!(g.narrow(None, vec![repo("bob/x", &["pull", "push"])]), vec![repo("bob/x", &["pull"])]);
        // Not less than anonymous, though `others` is empty.
        assert_eq!(g.narrow(Some("alice"), vec![repo("bob/x", &["pull", "push"])]), vec![repo("bob/x", &["pull"])]);
        let many = vec![repo("bob/x", &["pull", "push", "delete"]), Scope::catalog()];
        assert_eq!(g.narrow(Some("ops"), many.clone()), many);
        assert_eq!(g.narrow(None, vec![Scope::catalog()]), vec![]);
    }

    #[test]
    fn bad_actions_refuse_init() {
        let err = Grants::from_config(&[("own", "pull,pish")].into_iter().collect()).unwrap_err();
        assert!(matches!(err, InitError::InvalidConfig((k, _)) if k == "own"));
    }
}
