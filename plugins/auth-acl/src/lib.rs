//! `berth-auth-acl`: an access list in Berth's config. Each requested scope gets the actions of
//! the first rule that applies to the caller and the resource.
//!
//! | config key | default | meaning |
//! |---|---|---|
//! | `rules` | (none: nothing is granted) | one rule per line, `<who> <target> <actions>`; `#` starts a comment |
//! | `groups` | (none) | `team-a=alice,bob; admins=root`: groups for `group:NAME`, entries separated by `;` or newlines |
//! | `users` | (none: Basic credentials are refused) | an htpasswd file (bcrypt entries) in a granted directory that Basic credentials are checked against, e.g. `/auth/htpasswd`; re-read when it changes (looked at once a second at most) |
//! | `cachettl` | 60 | seconds the host may reuse a decision: how long a rule change or a removed user may still be honoured |
//!
//! A rule:
//!
//! - `who`: `user:NAME` (or a bare `NAME`), `group:NAME` (defined in `groups`), `authenticated`
//!   (any identity), `anonymous` (no identity), or `*` (anyone).
//! - `target`: a repository glob — `*` within one path segment, `**` across segments
//!   (`team-a/**` matches `team-a/x` and `team-a/x/y` but **not** `team-a` itself; add a `team-a`
//!   rule for that), `**` alone every repository — or the literal `catalog` for
//!   `registry:catalog:*` (`GET /v2/_catalog`). `repository:GLOB` and `registry:catalog` are
//!   accepted spellings, the first for a repository actually named `catalog`.
//! - `actions`: a comma list of `pull`, `push`, `delete`, or `*` (every action; the catalog
//!   takes `*`), or `-` / `none` to deny: the rule matches, so later rules are not consulted.
//!
//! Rules are matched per requested scope (a cross-repository mount asks for two), first match
//! wins, no match grants nothing. An invalid line refuses the plugin:
//! `invalid-config(("rules", "line 3: ..."))`.
//!
//! Credentials: **Basic** is checked against `users` (a wrong user or password, or no `users`
//! file: refused — no identity, nothing granted, the host answers 401); **Bearer** (a token the
//! host verified) is trusted: the identity is its subject (an empty subject is anonymous);
//! **anonymous** callers have no identity and get what `anonymous` and `*` rules give. The
//! identity's groups are the `groups` that list the user.
//!
//! ```yaml
//! plugins:
//!   acl:
//!     path: plugins/target/wasm32-wasip2/release/berth_auth_acl.wasm
//!     grants:
//!       dirs: [{host: /etc/registry/auth, guest: /auth, mode: ro}]
//!     config:
//!       users: /auth/htpasswd
//!       groups: "team-a=alice,bob; admins=root"
//!       rules: |
//!         group:admins   **          *
//!         group:admins   catalog     *
//!         group:team-a   team-a      pull,push,delete
//!         group:team-a   team-a/**   pull,push,delete
//!         anonymous      private/**  -
//!         *              **          pull
//! ```
//!
//! Rules and groups are parsed once, at `init`; a decision is a scan of the rules with an
//! allocation-free glob match, so the host can push thousands of tokens a second through it (a
//! Basic login costs one bcrypt check on top). It declares itself stateless.

mod groups;
mod rules;

use berth_plugin_sdk::auth::{AuthPolicy, Credentials, Decision, HtpasswdFile, Identity, Scope};
use berth_plugin_sdk::{log, Config, InitError, RequestInfo};
use groups::Groups;
use rules::Rules;

/// How often at most the `users` file's size and modification time are looked at.
const RECHECK_MS: u64 = 1000;

pub struct Acl {
    rules: Rules,
    groups: Groups,
    users: Option<HtpasswdFile>,
    cache_ttl_seconds: u32,
}

impl AuthPolicy for Acl {
    fn init(config: Config) -> Result<Self, InitError> {
        config.deny_unknown(&["rules", "groups", "users", "cachettl"])?;
        let groups = Groups::parse(config.get_or("groups", "")).map_err(|e| InitError::invalid("groups", e))?;
        let rules = Rules::parse(config.get_or("rules", ""), &groups).map_err(|e| InitError::invalid("rules", e))?;
        let users = match config.get("users") {
            Some(path) => Some(
                HtpasswdFile::open(path, RECHECK_MS)
                    .map_err(|e| InitError::invalid("users", format!("{path}: {e}")))?,
            ),
            None => None,
        };
        let cache_ttl_seconds = config.parse_or("cachettl", 60u32)?;
        if rules.len() == 0 {
            log::warn("auth-acl: no rules: every request is refused");
        }
        log::info(format!(
            "auth-acl: {} rules, users from {}",
            rules.len(),
            users.as_ref().map_or("(none: Basic credentials are refused)", |u| u.path())
        ));
        Ok(Acl { rules, groups, users, cache_ttl_seconds })
    }

    fn authorize(&self, credentials: Credentials, requested: Vec<Scope>, _: RequestInfo) -> Result<Decision, String> {
        let subject = match credentials {
            Credentials::Anonymous => None,
            Credentials::Bearer(claims) if claims.subject.is_empty() => None,
            Credentials::Bearer(claims) => Some(claims.subject),
            Credentials::Basic(basic) => match &self.users {
                Some(users) if users.current().verify(&basic.username, &basic.password) => Some(basic.username),
                _ => return Ok(Decision::refused()),
            },
        };
        let granted = self.rules.narrow(subject.as_deref(), requested);
        let identity = subject.map(|s| Identity { groups: self.groups.of(&s), subject: s });
        Ok(Decision { identity, granted, cache_ttl_seconds: self.cache_ttl_seconds })
    }
}

berth_plugin_sdk::export_auth_policy!(Acl);
berth_plugin_sdk::declare_stateless!();

#[cfg(test)]
mod tests {
    use berth_plugin_sdk::auth::{BasicCredentials, TokenClaims};

    use super::*;

    /// `alice:secret`, from Python's bcrypt at cost 4 (`bcrypt.hashpw(b"secret", bcrypt.gensalt(4))`).
    const HTPASSWD: &str = "alice:$2b$04$DS85ltIJvnj.ufL4PL7e8eSlwRnhm.a1xQjq7y6LyQduJxCk8lr9O\n";

    const RULES: &str = "group:team-a team-a/** pull,push\n* public/** pull\n";

    fn request() -> RequestInfo {
        RequestInfo { id: "r1".into(), method: "GET".into(), addr: "127.0.0.1:1".into(), user_agent: None }
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic(BasicCredentials { username: user.into(), password: password.into() })
    }

    fn bearer(subject: &str) -> Credentials {
        Credentials::Bearer(TokenClaims {
            issuer: "berth".into(),
            subject: subject.into(),
            audience: vec![],
            expires_at: 0,
            access: vec![],
        })
    }

    fn acl(with_users: bool) -> (Acl, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("berth-auth-acl-{}-{with_users}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("htpasswd");
        std::fs::write(&file, HTPASSWD).unwrap();
        let mut config = vec![("rules", RULES), ("groups", "team-a=alice,bob")];
        let path = file.to_str().unwrap().to_string();
        if with_users {
            config.push(("users", &path));
        }
        (Acl::init(config.into_iter().collect()).unwrap(), dir)
    }

    #[test]
    fn decides() {
        let (acl, dir) = acl(true);
        let push =
            || vec![Scope::repository("team-a/app", &["pull", "push"]), Scope::repository("public/x", &["push"])];

        let d = acl.authorize(basic("alice", "secret"), push(), request()).unwrap();
        assert_eq!(d.identity, Some(Identity { subject: "alice".into(), groups: vec!["team-a".into()] }));
        assert_eq!(d.granted, vec![Scope::repository("team-a/app", &["pull", "push"])]);

        assert_eq!(acl.authorize(basic("alice", "wrong"), push(), request()).unwrap(), Decision::refused());
        assert_eq!(acl.authorize(basic("bob", "secret"), push(), request()).unwrap(), Decision::refused());

        // bob is in no file, but a verified token is trusted.
        let d = acl.authorize(bearer("bob"), push(), request()).unwrap();
        assert_eq!(d.granted, vec![Scope::repository("team-a/app", &["pull", "push"])]);

        let pull = vec![Scope::repository("public/x", &["pull", "push"]), Scope::repository("team-a/app", &["pull"])];
        let d = acl.authorize(Credentials::Anonymous, pull.clone(), request()).unwrap();
        assert_eq!((d.identity, d.granted), (None, vec![Scope::repository("public/x", &["pull"])]));
        let d = acl.authorize(bearer(""), pull, request()).unwrap();
        assert_eq!((d.identity, d.granted), (None, vec![Scope::repository("public/x", &["pull"])]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_users_basic_is_refused() {
        let (acl, dir) = acl(false);
        let scopes = vec![Scope::repository("public/x", &["pull"])];
        assert_eq!(acl.authorize(basic("alice", "secret"), scopes, request()).unwrap(), Decision::refused());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_config_names_key_and_line() {
        let init = |pairs: &[(&str, &str)]| Acl::init(pairs.iter().copied().collect()).err().unwrap();
        match init(&[("rules", "* ** pull\n# ok\nalice team-a")]) {
            InitError::InvalidConfig((key, problem)) => {
                assert_eq!(key, "rules");
                assert!(problem.starts_with("line 3: "), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(init(&[("groups", "x")]), InitError::InvalidConfig((k, _)) if k == "groups"));
        assert!(matches!(init(&[("users", "/nonexistent")]), InitError::InvalidConfig((k, _)) if k == "users"));
        assert!(matches!(init(&[("rule", "")]), InitError::InvalidConfig((k, _)) if k == "rule"));
    }
}
