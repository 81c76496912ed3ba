//! `berth-auth-htpasswd`: users from an htpasswd file, each owning the namespace of their name.
//! The policy for a small registry: `alice` pushes to `alice/...`, everyone signed in pulls
//! everything, a few admins do anything.
//!
//! | config key | default | meaning |
//! |---|---|---|
//! | `path` | (required) | the htpasswd file (bcrypt entries, `htpasswd -Bbn alice secret`) in a directory granted to the plugin, e.g. `/auth/htpasswd` |
//! | `own` | `pull,push,delete` | actions a user gets on the repository of their name and everything under it (`alice`, `alice/**`) |
//! | `others` | `pull` | actions a signed-in user gets on every other repository |
//! | `anonymous` | (none) | actions callers without credentials get on every repository; signed-in users get them too |
//! | `admins` | (none) | comma-separated users who get `*` on everything, the catalog (`registry:catalog:*`) included |
//! | `cachettl` | 60 | seconds the host may reuse a decision: how long a removed user or a changed grant may still be honoured |
//!
//! Actions are comma lists of `pull`, `push`, `delete`, or `*` (every action; a requested `*`
//! is only granted by `*`). Only admins get the catalog.
//!
//! Credentials:
//! - **Basic**: checked against the file (bcrypt's constant-time compare; an unknown user costs
//!   the same time as a wrong password). A wrong user or password is refused (no identity,
//!   nothing granted, not cached): the host answers 401 and counts a failed login.
//! - **Bearer** (a token the host verified, e.g. a `refresh_token` grant): the identity is the
//!   token's subject, not looked up in the file. A token with an empty subject is treated as
//!   anonymous.
//! - **Anonymous**: no identity; `anonymous` decides.
//!
//! The file is looked at again at most once a second and re-read when its size or modification
//! time changed, so adding a user or changing a password needs no reload. A file that became
//! unreadable or invalid is logged and the users read before keep working; at `init` either
//! refuses the plugin (`invalid-config("path", ...)`). Groups are not used (identities have
//! none).
//!
//! ```yaml
//! plugins:
//!   auth-htpasswd:
//!     path: plugins/target/wasm32-wasip2/release/berth_auth_htpasswd.wasm
//!     grants:
//!       dirs: [{host: /etc/registry/auth, guest: /auth, mode: ro}]
//!     config: {path: /auth/htpasswd, admins: root, anonymous: pull}
//! ```
//!
//! It declares itself stateless: the users it holds are a cache of the file, rebuilt by any
//! new instance.

mod grants;

use berth_plugin_sdk::auth::{AuthPolicy, Credentials, Decision, HtpasswdFile, Identity, Scope};
use berth_plugin_sdk::{log, Config, InitError, RequestInfo};
use grants::Grants;

/// How often at most the file's size and modification time are looked at.
const RECHECK_MS: u64 = 1000;

pub struct HtpasswdPolicy {
    users: HtpasswdFile,
    grants: Grants,
    cache_ttl_seconds: u32,
}

impl AuthPolicy for HtpasswdPolicy {
    fn init(config: Config) -> Result<Self, InitError> {
        config.deny_unknown(&["path", "own", "others", "anonymous", "admins", "cachettl"])?;
        let path = config.require("path")?;
        let users =
            HtpasswdFile::open(path, RECHECK_MS).map_err(|e| InitError::invalid("path", format!("{path}: {e}")))?;
        let grants = Grants::from_config(&config)?;
        let cache_ttl_seconds = config.parse_or("cachettl", 60u32)?;
        log::info(format!("htpasswd {path}: {} users, admins: {:?}", users.current().len(), grants.admins));
        Ok(HtpasswdPolicy { users, grants, cache_ttl_seconds })
    }

    fn authorize(&self, credentials: Credentials, requested: Vec<Scope>, _: RequestInfo) -> Result<Decision, String> {
        let subject = match credentials {
            Credentials::Anonymous => None,
            Credentials::Bearer(claims) if claims.subject.is_empty() => None,
            Credentials::Bearer(claims) => Some(claims.subject),
            Credentials::Basic(basic) => {
                if !self.users.current().verify(&basic.username, &basic.password) {
                    return Ok(Decision::refused());
                }
                Some(basic.username)
            }
        };
        let granted = self.grants.narrow(subject.as_deref(), requested);
        Ok(Decision { identity: subject.map(Identity::user), granted, cache_ttl_seconds: self.cache_ttl_seconds })
    }
}

berth_plugin_sdk::export_auth_policy!(HtpasswdPolicy);
berth_plugin_sdk::declare_stateless!();

#[cfg(test)]
mod tests {
    use berth_plugin_sdk::auth::{BasicCredentials, TokenClaims};

    use super::*;

    /// `alice:secret` and `root:toor`, from Python's bcrypt at cost 4
    /// (`bcrypt.hashpw(pw, bcrypt.gensalt(4))`; alice's relabelled `$2y$` as Apache writes it).
    const HTPASSWD: &str = "alice:$2y$04$DS85ltIJvnj.ufL4PL7e8eSlwRnhm.a1xQjq7y6LyQduJxCk8lr9O\n\
                            root:$2b$04$N395ZtdOijp.ryYJHJsJv.AMmViTfVuRUhXi2gfp7O8xZY451.dGe\n";

    fn policy(extra: &[(&str, &str)]) -> (HtpasswdPolicy, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("berth-auth-htpasswd-{}-{}", std::process::id(), extra.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("htpasswd");
        std::fs::write(&file, HTPASSWD).unwrap();
        let mut config = vec![("path".to_string(), file.to_str().unwrap().to_string())];
        config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        (HtpasswdPolicy::init(Config::new(config)).unwrap(), dir)
    }

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
            audience: vec!["berth".into()],
            expires_at: 0,
            access: vec![],
        })
    }

    #[test]
    fn decides() {
        let (p, dir) = policy(&[("admins", "root")]);
        let push = || vec![Scope::repository("alice/app", &["pull", "push"])];

        let d = p.authorize(basic("alice", "secret"), push(), request()).unwrap();
        assert_eq!(d.identity, Some(Identity::user("alice")));
        assert_eq!(d.granted, push());
        assert_eq!(d.cache_ttl_seconds, 60);

        for wrong in [basic("alice", "Secret"), basic("nobody", "secret"), basic("", "")] {
            assert_eq!(p.authorize(wrong, push(), request()).unwrap(), Decision::refused());
        }

        let d = p.authorize(bearer("bob"), push(), request()).unwrap();
        assert_eq!(d.identity, Some(Identity::user("bob")));
        assert_eq!(d.granted, vec![Scope::repository("alice/app", &["pull"])]);

        let d = p.authorize(Credentials::Anonymous, push(), request()).unwrap();
        assert_eq!((d.identity, d.granted), (None, vec![]));
        let d = p.authorize(bearer(""), push(), request()).unwrap();
        assert_eq!((d.identity, d.granted), (None, vec![]));

        let d = p.authorize(basic("root", "toor"), vec![Scope::catalog()], request()).unwrap();
        assert_eq!(d.granted, vec![Scope::catalog()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_bad_config() {
        let bad = |config: &[(&str, &str)]| HtpasswdPolicy::init(config.iter().copied().collect()).err().unwrap();
        assert!(matches!(bad(&[]), InitError::InvalidConfig((k, _)) if k == "path"));
        assert!(matches!(bad(&[("path", "/nonexistent/htpasswd")]), InitError::InvalidConfig((k, _)) if k == "path"));
        let (_, dir) = policy(&[]);
        let path = dir.join("htpasswd");
        let path = path.to_str().unwrap();
        assert!(matches!(bad(&[("path", path), ("owns", "*")]), InitError::InvalidConfig((k, _)) if k == "owns"));
        assert!(
            matches!(bad(&[("path", path), ("others", "read")]), InitError::InvalidConfig((k, _)) if k == "others")
        );
        assert!(
            matches!(bad(&[("path", path), ("cachettl", "-1")]), InitError::InvalidConfig((k, _)) if k == "cachettl")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
