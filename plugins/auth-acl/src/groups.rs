//! Groups from the config key `groups`: `team-a=alice,bob; admins=root`.

/// Named lists of users, in the order they were written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups(Vec<(String, Vec<String>)>);

impl Groups {
    /// Parses `name=user,user` entries separated by `;` or newlines (so a YAML block works too).
    /// Empty entries are skipped; a repeated group, an empty name or a missing `=` is an error.
    pub fn parse(text: &str) -> Result<Groups, String> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for entry in text.split([';', '\n']).map(str::trim).filter(|e| !e.is_empty()) {
            let (name, members) = entry.split_once('=').ok_or_else(|| format!("{entry:?}: expected name=user,user"))?;
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("{entry:?}: bad group name"));
            }
            if groups.iter().any(|(n, _)| n == name) {
                return Err(format!("group {name:?} defined twice"));
            }
            let members = members.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect();
            groups.push((name.to_string(), members));
        }
        Ok(Groups(groups))
    }

    /// The members of `name`, if it is defined.
    pub fn members(&self, name: &str) -> Option<&[String]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, m)| m.as_slice())
    }

    /// The groups `user` belongs to (for the decision's identity).
    pub fn of(&self, user: &str) -> Vec<String> {
        self.0.iter().filter(|(_, m)| m.iter().any(|u| u == user)).map(|(n, _)| n.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Groups;

    #[test]
    fn parses() {
        let g = Groups::parse("team-a=alice, bob; admins=root;\nempty=\n;").unwrap();
        assert_eq!(g.members("team-a").unwrap(), ["alice", "bob"]);
        assert_eq!(g.members("admins").unwrap(), ["root"]);
        assert!(g.members("empty").unwrap().is_empty());
        assert!(g.members("nope").is_none());
        assert_eq!(g.of("alice"), ["team-a"]);
        assert!(g.of("mallory").is_empty());
        assert_eq!(Groups::parse("").unwrap(), Groups::default());
    }

    #[test]
    fn refuses() {
        assert!(Groups::parse("team-a alice").is_err());
        assert!(Groups::parse("=alice").is_err());
        assert!(Groups::parse("a=x; a=y").unwrap_err().contains("twice"));
    }
}
