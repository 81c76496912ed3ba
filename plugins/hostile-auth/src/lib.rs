//! `berth-hostile-auth`: an auth policy that misbehaves on purpose, for Berth's sandbox and
//! fail-closed tests. Its init config key `mode` picks the misbehaviour; every mode strikes in
//! `authorize`.
//!
//! | `mode` | what it does | what the host must do |
//! |--------|--------------|-----------------------|
//! | (absent) / `none` | behaves: grants exactly what was requested, not cached, to anonymous callers (no identity) and bearer tokens (identity = subject); refuses Basic credentials, as a policy with no users must (no identity: a failed login) | serve normally |
//! | `panic` | panics | treat the trap as a denial (401/403, never a grant), log it, keep serving |
//! | `loop` | spins forever | stop it at the call deadline, deny, keep serving |
//! | `oom` | allocates until the memory cap traps | trap at the cap, deny, keep serving |
//! | `error` | returns `Err` | deny (fail closed) and log the error |
//! | `overgrant` | identity `root` whatever the credentials (a wrong password included); `*` on every requested scope **plus** scopes nobody asked for: `repository:*:*`, `registry:catalog:*`, `repository:<name>-other:*` and `repository:other/<name>:*` for each requested name; and asks to be cached for `u32::MAX` seconds | grant only what was requested, narrowed to the request's actions (`*` here must not turn a `pull` request into `push`), and never an unrequested scope; cap the cache TTL |
//!
//! Any other `mode` refuses `init` with `invalid-config`. It declares itself stateless: it keeps
//! nothing between calls.

use berth_plugin_sdk::auth::{AuthPolicy, Credentials, Decision, Identity, Scope};
use berth_plugin_sdk::{log, Config, InitError, RequestInfo};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    None,
    Panic,
    Loop,
    Oom,
    Error,
    Overgrant,
}

pub struct HostileAuth {
    mode: Mode,
}

impl AuthPolicy for HostileAuth {
    fn init(config: Config) -> Result<Self, InitError> {
        let mode = match config.get_or("mode", "none") {
            "none" => Mode::None,
            "panic" => Mode::Panic,
            "loop" => Mode::Loop,
            "oom" => Mode::Oom,
            "error" => Mode::Error,
            "overgrant" => Mode::Overgrant,
            other => {
                return Err(InitError::invalid(
                    "mode",
                    format!("unknown mode {other:?} (none, panic, loop, oom, error, overgrant)"),
                ))
            }
        };
        log::warn(format!("hostile auth plugin loaded in mode {mode:?}"));
        Ok(HostileAuth { mode })
    }

    fn authorize(&self, credentials: Credentials, requested: Vec<Scope>, _: RequestInfo) -> Result<Decision, String> {
        match self.mode {
            Mode::None => Ok(behave(credentials, requested)),
            Mode::Panic => panic!("hostile auth plugin: panic mode"),
            Mode::Loop => spin(),
            Mode::Oom => exhaust_memory(),
            Mode::Error => Err("hostile auth plugin: error mode".into()),
            Mode::Overgrant => Ok(overgrant(requested)),
        }
    }
}

/// Everything requested, to anyone the host can vouch for. It has no users, so it cannot accept a
/// password: Basic credentials are refused.
fn behave(credentials: Credentials, requested: Vec<Scope>) -> Decision {
    let identity = match credentials {
        Credentials::Anonymous => None,
        Credentials::Bearer(claims) => Some(Identity::user(claims.subject)).filter(|i| !i.subject.is_empty()),
        Credentials::Basic(_) => return Decision::refused(),
    };
    Decision { identity, granted: requested, cache_ttl_seconds: 0 }
}

/// `root`, `*` on everything asked, and scopes nobody asked for.
fn overgrant(requested: Vec<Scope>) -> Decision {
    let mut granted = vec![Scope::repository("*", &["*"]), Scope::catalog()];
    for scope in requested {
        granted.push(Scope::repository(format!("{}-other", scope.name), &["*"]));
        granted.push(Scope::repository(format!("other/{}", scope.name), &["*"]));
        granted.push(Scope { actions: vec!["*".into()], ..scope });
    }
    Decision {
        identity: Some(Identity { subject: "root".into(), groups: vec!["admins".into()] }),
        granted,
        cache_ttl_seconds: u32::MAX,
    }
}

/// Loops forever (only the host's deadline ends it).
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates (and touches, so the pages are really used) until the memory cap traps.
fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xa5; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

berth_plugin_sdk::export_auth_policy!(HostileAuth);
berth_plugin_sdk::declare_stateless!();

#[cfg(test)]
mod tests {
    use berth_plugin_sdk::auth::BasicCredentials;

    use super::*;

    #[test]
    fn overgrants_beyond_the_request() {
        let d = overgrant(vec![Scope::repository("a/b", &["pull"])]);
        assert_eq!(d.identity.unwrap().subject, "root");
        for s in [
            "repository:*:*",
            "registry:catalog:*",
            "repository:a/b:*",
            "repository:a/b-other:*",
            "repository:other/a/b:*",
        ] {
            assert!(d.granted.iter().any(|g| g.to_string() == s), "{s}");
        }
    }

    #[test]
    fn modes() {
        assert!(HostileAuth::init([("mode", "sideways")].into_iter().collect()).is_err());
        let p = HostileAuth::init([("mode", "error")].into_iter().collect()).unwrap();
        let req = RequestInfo { id: "r".into(), method: "GET".into(), addr: "127.0.0.1:1".into(), user_agent: None };
        assert!(p.authorize(Credentials::Anonymous, vec![], req.clone()).is_err());
        let d = behave(Credentials::Anonymous, vec![Scope::catalog()]);
        assert_eq!((d.identity, d.granted), (None, vec![Scope::catalog()]));
        let basic = BasicCredentials { username: "alice".into(), password: "x".into() };
        assert_eq!(behave(Credentials::Basic(basic), vec![Scope::catalog()]), Decision::refused());
    }
}
