//! `berth-hostile-cleanup`: a cleanup policy that misbehaves on purpose, for Berth's tests of
//! what the host does with a policy's answer. The policy's setting `mode` picks the
//! misbehaviour, so one plugin serves every case:
//!
//! | `mode` | what it does | what the host must do |
//! |--------|--------------|-----------------------|
//! | `unknown-tag` | asks to delete every tag and one the repository does not have | delete nothing in that repository, say which tag |
//! | `panic` | panics | delete nothing there, log it, keep serving |
//! | `loop` | spins forever | stop it at the call deadline, delete nothing there |
//! | `error` | returns `Err` | delete nothing there, show the message |
//! | `twice` | names every tag twice | delete each once |

use berth_plugin_sdk::cleanup::{CleanupPolicy, Deletion, Snapshot};
use berth_plugin_sdk::{Config, InitError};

pub struct HostileCleanup;

impl CleanupPolicy for HostileCleanup {
    fn init(_config: Config) -> Result<Self, InitError> {
        Ok(HostileCleanup)
    }

    fn plan(&self, snapshot: Snapshot) -> Result<Vec<Deletion>, String> {
        let mode = snapshot.settings.iter().find(|(k, _)| k == "mode").map(|(_, v)| v.as_str()).unwrap_or("");
        let every = || snapshot.tags.iter().map(|t| Deletion { tag: t.name.clone(), reason: format!("mode={mode}") });
        match mode {
            "unknown-tag" => {
                let mut out: Vec<Deletion> = every().collect();
                out.push(Deletion { tag: "no-such-tag".into(), reason: "mode=unknown-tag".into() });
                Ok(out)
            }
            "panic" => panic!("hostile-cleanup: panicking as asked"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "error" => Err("hostile-cleanup: refusing as asked".into()),
            "twice" => Ok(every().chain(every()).collect()),
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

berth_plugin_sdk::export_cleanup_policy!(HostileCleanup);
