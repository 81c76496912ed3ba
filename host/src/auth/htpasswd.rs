//! distribution's `auth.htpasswd`: users and bcrypt hashes from a file, checked natively so a
//! distribution `config.yml` works with nothing else. bcrypt is slow on purpose, so a password
//! that matched is remembered for a minute under a keyed hash (never the password itself); the
//! file is re-read when it changes, which also forgets everything remembered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

/// How long a matched password is remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// How often the file's modification time is looked at.
const RECHECK: Duration = Duration::from_secs(1);
/// Remembered logins kept at most (bounds memory under many distinct users).
const MAX_REMEMBERED: usize = 10_000;
/// Hashed for an unknown user, so that "no such user" takes as long as "wrong password".
const DUMMY_HASH: &str = "$2y$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z3WD2DaQKmmcDUnI4Ve6ynHK";

#[derive(Debug, thiserror::Error)]
#[error("htpasswd file {path}: {message}")]
pub struct HtpasswdError {
    pub path: String,
    pub message: String,
}

struct Loaded {
    users: HashMap<String, String>,
    modified: Option<SystemTime>,
    checked: Instant,
    remembered: HashMap<[u8; 32], Instant>,
}

pub struct HtpasswdFile {
    path: PathBuf,
    secret: [u8; 32],
    state: Mutex<Loaded>,
}

impl HtpasswdFile {
    pub fn open(path: &Path) -> Result<HtpasswdFile, HtpasswdError> {
        let (users, modified) = read(path)?;
        Ok(HtpasswdFile {
            path: path.to_path_buf(),
            secret: rand::random(),
            state: Mutex::new(Loaded { users, modified, checked: Instant::now(), remembered: HashMap::new() }),
        })
    }

    /// Whether `password` is `user`'s. Runs bcrypt off the async threads.
    pub async fn check(&self, user: &str, password: &str) -> bool {
        let key = self.key(user, password);
        let hash = {
            let mut s = self.state.lock().unwrap();
            self.refresh(&mut s);
            if s.remembered.get(&key).is_some_and(|t| t.elapsed() < REMEMBER) {
                return true;
            }
            s.users.get(user).cloned()
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
            && known;
        if ok {
            let mut s = self.state.lock().unwrap();
            if s.remembered.len() >= MAX_REMEMBERED {
                s.remembered.retain(|_, t| t.elapsed() < REMEMBER);
                if s.remembered.len() >= MAX_REMEMBERED {
                    s.remembered.clear();
                }
            }
            s.remembered.insert(key, Instant::now());
        }
        ok
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Re-reads the file if it changed (looked at no more than once a second). A file that
    /// became unreadable keeps the last good users, with an error in the log.
    fn refresh(&self, s: &mut Loaded) {
        if s.checked.elapsed() < RECHECK {
            return;
        }
        s.checked = Instant::now();
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified == s.modified {
            return;
        }
        match read(&self.path) {
            Ok((users, modified)) => {
                tracing::info!(path = %self.path.display(), users = users.len(), "htpasswd file changed; reloaded");
                s.users = users;
                s.modified = modified;
                s.remembered.clear();
            }
            Err(e) => tracing::error!(error = %e, "htpasswd file unreadable; keeping the users read before"),
        }
    }
}

fn read(path: &Path) -> Result<(HashMap<String, String>, Option<SystemTime>), HtpasswdError> {
    let err = |message: String| HtpasswdError { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((parse(&text).map_err(err)?, modified))
}

/// `user:hash` lines; blank lines and `#` comments are skipped. Only bcrypt hashes are
/// accepted, as distribution does: the others htpasswd can write (MD5, SHA-1, crypt) are weak.
pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line.split_once(':').ok_or(format!("line {}: not user:hash", i + 1))?;
        if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
            return Err(format!("line {}: user {user:?} does not have a bcrypt hash (htpasswd -B)", i + 1));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt() {
        assert_eq!(parse("# c\n\nalice:$2y$05$abc\n").unwrap()["alice"], "$2y$05$abc");
        assert!(parse("bob:{SHA}xyz\n").unwrap_err().contains("bcrypt"));
        assert!(parse("nocolon\n").is_err());
    }

    #[tokio::test]
    async fn checks_and_rereads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("htpasswd");
        std::fs::write(&p, format!("alice:{}\n", bcrypt::hash_with_salt("s3cret", 4, [7; 16]).unwrap())).unwrap();
        let f = HtpasswdFile::open(&p).unwrap();
        assert!(f.check("alice", "s3cret").await);
        assert!(f.check("alice", "s3cret").await, "remembered");
        assert!(!f.check("alice", "wrong").await);
        assert!(!f.check("mallory", "s3cret").await);
        // A changed file forgets the remembered login.
        std::fs::write(&p, format!("alice:{}\n", bcrypt::hash_with_salt("new", 4, [8; 16]).unwrap())).unwrap();
        let old = SystemTime::now() - Duration::from_secs(5);
        f.state.lock().unwrap().checked = Instant::now() - RECHECK;
        f.state.lock().unwrap().modified = Some(old);
        assert!(!f.check("alice", "s3cret").await);
        assert!(f.check("alice", "new").await);
    }
}
