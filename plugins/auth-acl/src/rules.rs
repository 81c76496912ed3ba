//! The rule list from the config key `rules`: `<who> <target> <actions>` per line, first match
//! wins. Parsed once at `init` into plain data, so matching a scope allocates nothing.

use berth_plugin_sdk::auth::{glob_match, Actions, Scope};

use crate::groups::Groups;

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `*`: anyone, with or without an identity.
    Anyone,
    /// `anonymous`: callers without an identity.
    Anonymous,
    /// `authenticated`: any identity.
    Authenticated,
    /// `user:NAME` or a bare `NAME`.
    User(String),
    /// `group:NAME`, resolved to its members at `init`.
    Group(Vec<String>),
}

impl Who {
    fn parse(word: &str, groups: &Groups) -> Result<Who, String> {
        Ok(match word {
            "*" => Who::Anyone,
            "anonymous" => Who::Anonymous,
            "authenticated" => Who::Authenticated,
            _ => match word.split_once(':') {
                Some(("user", name)) if !name.is_empty() => Who::User(name.to_string()),
                Some(("group", name)) => match groups.members(name) {
                    Some(members) => Who::Group(members.to_vec()),
                    None => return Err(format!("group {name:?} is not defined in `groups`")),
                },
                Some(_) => {
                    return Err(format!(
                        "who {word:?}: expected user:NAME, group:NAME, NAME, authenticated, anonymous or *"
                    ))
                }
                None => Who::User(word.to_string()),
            },
        })
    }

    /// Whether the rule applies to `caller` (`None`: anonymous).
    pub fn matches(&self, caller: Option<&str>) -> bool {
        match self {
            Who::Anyone => true,
            Who::Anonymous => caller.is_none(),
            Who::Authenticated => caller.is_some(),
            Who::User(name) => caller == Some(name.as_str()),
            Who::Group(members) => caller.is_some_and(|c| members.iter().any(|m| m == c)),
        }
    }
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `catalog` (or `registry:catalog`): `registry:catalog:*`.
    Catalog,
    /// A repository-name glob (see `glob_match`), optionally written `repository:GLOB`.
    Repositories(String),
}

impl Target {
    fn parse(word: &str) -> Result<Target, String> {
        match word {
            "catalog" | "registry:catalog" => Ok(Target::Catalog),
            _ => {
                let glob = word.strip_prefix("repository:").unwrap_or(word);
                let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/*".contains(c);
                match glob.chars().find(|c| !ok(*c)) {
                    None if !glob.is_empty() => Ok(Target::Repositories(glob.to_string())),
                    None => Err("empty target".into()),
                    Some(c) => Err(format!(
                        "target {word:?}: {c:?} never appears in a repository name (a-z 0-9 . _ - /, and * or ** as wildcards)"
                    )),
                }
            }
        }
    }

    fn matches(&self, scope: &Scope) -> bool {
        match self {
            Target::Catalog => scope.is_catalog(),
            Target::Repositories(glob) => scope.is_repository() && glob_match(glob, &scope.name),
        }
    }
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub who: Who,
    pub target: Target,
    pub actions: Actions,
}

/// The rules in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// Parses the rule text; an error names the 1-based line (`line 3: ...`).
    pub fn parse(text: &str, groups: &Groups) -> Result<Rules, String> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split_once('#').map_or(line, |(rule, _comment)| rule).trim();
            if line.is_empty() {
                continue;
            }
            rules.push(Rule::parse(line, groups).map_err(|problem| format!("line {}: {problem}", i + 1))?);
        }
        Ok(Rules(rules))
    }

    /// The actions the first rule that applies to `caller` and `scope` allows; none when no rule
    /// does.
    pub fn allowed(&self, caller: Option<&str>, scope: &Scope) -> Actions {
        self.0.iter().find(|r| r.who.matches(caller) && r.target.matches(scope)).map_or(Actions::NONE, |r| r.actions)
    }

    /// `requested`, each scope narrowed by the first rule that applies, refused scopes left out.
    pub fn narrow(&self, caller: Option<&str>, requested: Vec<Scope>) -> Vec<Scope> {
        requested
            .into_iter()
            .filter_map(|s| {
                let allowed = self.allowed(caller, &s);
                s.narrowed(allowed)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Rule {
    fn parse(line: &str, groups: &Groups) -> Result<Rule, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [who, target, actions] = words[..] else {
            return Err(format!("{line:?}: expected <who> <target> <actions>"));
        };
        let who = Who::parse(who, groups)?;
        let target = Target::parse(target)?;
        let actions = match actions {
            // A deny rule: it matches, so later rules are not consulted.
            "-" | "none" => Actions::NONE,
            list => Actions::parse(list)?,
        };
        if target == Target::Catalog && !(actions == Actions::ALL || actions.is_empty()) {
            return Err(format!("the catalog takes actions * (what GET /v2/_catalog asks for), not {actions}"));
        }
        Ok(Rule { who, target, actions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Groups {
        Groups::parse("team-a=alice,bob; admins=root").unwrap()
    }

    const RULES: &str = "
        # who           target      actions
        group:admins    **          *
        group:admins    catalog     *
        mallory         **          none       # locked out, whatever comes later
        group:team-a    team-a      pull,push
        group:team-a    team-a/**   pull,push,delete
        user:carol      team-a/*    pull
        authenticated   public/**   pull,push
        anonymous       private/**  -
        *               **          pull
    ";

    fn repo(name: &str, actions: &[&str]) -> Scope {
        Scope::repository(name, actions)
    }

    #[test]
    fn parses() {
        let rules = Rules::parse(RULES, &groups()).unwrap();
        assert_eq!(rules.len(), 9);
        assert_eq!(
            rules.0[3],
            Rule {
                who: Who::Group(vec!["alice".into(), "bob".into()]),
                target: Target::Repositories("team-a".into()),
                actions: Actions::PULL | Actions::PUSH,
            }
        );
        assert_eq!(rules.0[2].who, Who::User("mallory".into()));
        assert_eq!(rules.0[2].actions, Actions::NONE);
        assert_eq!(rules.0[1].target, Target::Catalog);
        assert_eq!(Rules::parse("", &groups()).unwrap().len(), 0);
        let explicit = Rules::parse("user:x repository:catalog pull\n* registry:catalog *", &groups()).unwrap();
        assert_eq!(explicit.0[0].target, Target::Repositories("catalog".into()));
        assert_eq!(explicit.0[1].target, Target::Catalog);
    }

    #[test]
    fn refuses_with_line_numbers() {
        let err = |text: &str| Rules::parse(text, &groups()).unwrap_err();
        assert!(err("* ** pull\n\nalice team-a").starts_with("line 3: "), "{}", err("* ** pull\n\nalice team-a"));
        assert!(err("alice team-a pull extra").starts_with("line 1: "));
        assert!(err("alice team-a pul").contains("unknown action"));
        assert!(err("group:nobody ** pull").contains("not defined"));
        assert!(err("role:x ** pull").contains("expected user:NAME"));
        assert!(err("user: ** pull").contains("expected user:NAME"));
        assert!(err("alice Team-A/** pull").contains("'T'"));
        assert!(err("alice catalog pull").contains("catalog takes actions *"));
        assert!(err("# fine\nalice x pull,,push").starts_with("line 2: "));
    }

    #[test]
    fn first_match_wins() {
        let rules = Rules::parse(RULES, &groups()).unwrap();
        let all = &["pull", "push", "delete"];
        let narrow = |who: Option<&str>, scopes: Vec<Scope>| rules.narrow(who, scopes);

        assert_eq!(
            narrow(Some("root"), vec![repo("x/y", all), Scope::catalog()]),
            vec![repo("x/y", all), Scope::catalog()]
        );
        assert_eq!(narrow(Some("alice"), vec![repo("team-a", all)]), vec![repo("team-a", &["pull", "push"])]);
        assert_eq!(narrow(Some("alice"), vec![repo("team-a/app/web", all)]), vec![repo("team-a/app/web", all)]);
        assert_eq!(narrow(Some("alice"), vec![Scope::catalog()]), vec![]);
        assert_eq!(
            narrow(Some("carol"), vec![repo("team-a/app", &["pull", "push"])]),
            vec![repo("team-a/app", &["pull"])]
        );
        // carol's rule is one segment deep; deeper falls through to `*`.
        assert_eq!(narrow(Some("carol"), vec![repo("team-a/app/web", &["push"])]), vec![]);
        assert_eq!(
            narrow(Some("dave"), vec![repo("public/x", &["pull", "push"])]),
            vec![repo("public/x", &["pull", "push"])]
        );
        assert_eq!(narrow(None, vec![repo("public/x", &["pull", "push"])]), vec![repo("public/x", &["pull"])]);
        assert_eq!(narrow(None, vec![repo("private/x", &["pull"])]), vec![]);
        assert_eq!(narrow(Some("dave"), vec![repo("private/x", &["pull"])]), vec![repo("private/x", &["pull"])]);
        // The deny rule stops the search before `*`.
        assert_eq!(narrow(Some("mallory"), vec![repo("public/x", &["pull"])]), vec![]);
        // Per scope: a mount asks for two repositories.
        assert_eq!(
            narrow(Some("bob"), vec![repo("team-a/new", &["pull", "push"]), repo("private/base", &["pull"])]),
            vec![repo("team-a/new", &["pull", "push"]), repo("private/base", &["pull"])]
        );
        // No rule at all: nothing.
        assert_eq!(Rules::default().narrow(Some("root"), vec![repo("x", &["pull"])]), vec![]);
        // Unknown kinds never match a repository rule.
        assert_eq!(narrow(Some("root"), vec![Scope::new("registry", "other", &["*"])]), vec![]);
    }
}
