//! htpasswd files with bcrypt entries, as distribution's `auth.htpasswd` reads them
//! (`htpasswd -Bbn alice secret` writes one line).
//!
//! Behind the SDK's cargo feature `htpasswd` (it pulls in `bcrypt`), so plugins that do not
//! check passwords do not carry it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::time::SystemTime;

use crate::{log, time};

/// Costs above this take seconds per check inside a plugin (past the call deadline) and are
/// refused when the file is read, rather than failing every login later.
pub const MAX_COST: u32 = 16;

/// Why an htpasswd file was refused.
#[derive(Debug)]
pub enum HtpasswdError {
    /// The file could not be read.
    Io(std::io::Error),
    /// A line is not `user:bcrypt-hash` (1-based line number).
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for HtpasswdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HtpasswdError::Io(e) => write!(f, "{e}"),
            HtpasswdError::Line { line, problem } => write!(f, "line {line}: {problem}"),
        }
    }
}

impl std::error::Error for HtpasswdError {}

/// The users of an htpasswd file and their bcrypt hashes.
#[derive(Clone, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// A hash from the file that an unknown user's password is checked against (and the answer
    /// ignored), so an unknown user costs as much time as a wrong password: response times do
    /// not tell which users exist.
    decoy: Option<String>,
}

impl fmt::Debug for Htpasswd {
    /// Names the users, never the hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Htpasswd").field("users", &self.users.keys().collect::<Vec<_>>()).finish()
    }
}

impl Htpasswd {
    /// Parses `user:hash` lines. Blank lines and lines starting with `#` are skipped, trailing
    /// whitespace (and a Windows `\r`) ignored. Only bcrypt hashes (`$2y$`, `$2b$`, `$2a$`) are
    /// accepted, as in distribution: an MD5 or SHA entry (`htpasswd` without `-B`) is an error
    /// naming the line rather than a user who can never log in. A repeated user keeps the last
    /// line.
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut users = HashMap::new();
        let mut decoy = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let bad = |problem: String| HtpasswdError::Line { line: i + 1, problem };
            let (user, hash) = line.split_once(':').ok_or_else(|| bad("expected user:hash".into()))?;
            if user.is_empty() {
                return Err(bad("empty user name".into()));
            }
            check_hash(hash).map_err(|p| bad(format!("user {user:?}: {p}")))?;
            decoy.get_or_insert_with(|| hash.to_string());
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd { users, decoy })
    }

    /// Reads and parses the file at `path` (in a directory granted to the plugin).
    pub fn read(path: &str) -> Result<Htpasswd, HtpasswdError> {
        Htpasswd::parse(&std::fs::read_to_string(path).map_err(HtpasswdError::Io)?)
    }

    /// True when `user` and `password` match an entry. bcrypt's own comparison is constant
    /// time, and an unknown user is checked against a decoy hash, so the time taken reveals
    /// neither how much of a hash matched nor whether the user exists. Passwords longer than
    /// 72 bytes are compared on their first 72, as every bcrypt implementation does.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = std::hint::black_box(bcrypt::verify(password, decoy));
                }
                false
            }
        }
    }

    /// True when the file has an entry for `user`.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The user names, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// How many users the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True for a file without users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The shape of a bcrypt hash (`$2y$10$` + 53 characters), and a cost a plugin can afford. The
/// base64 itself is checked by `bcrypt::verify`, which refuses a malformed hash.
fn check_hash(hash: &str) -> Result<(), String> {
    let prefix = hash.get(..4).unwrap_or("");
    if !matches!(prefix, "$2y$" | "$2b$" | "$2a$") {
        return Err("not a bcrypt hash ($2y$, $2b$ or $2a$; create entries with `htpasswd -B`)".into());
    }
    if hash.len() != 60 || !hash.is_ascii() || hash.as_bytes()[6] != b'$' {
        return Err("malformed bcrypt hash (expected 60 characters, $2y$NN$...)".into());
    }
    match hash[4..6].parse::<u32>() {
        Ok(cost) if (4..=MAX_COST).contains(&cost) => Ok(()),
        Ok(cost) => Err(format!("bcrypt cost {cost} outside 4..={MAX_COST}")),
        Err(_) => Err("malformed bcrypt cost".into()),
    }
}

/// An htpasswd file that re-reads itself when it changes, so adding a user needs no reload.
///
/// [`HtpasswdFile::current`] looks at the file's modification time and size at most once per
/// `interval` and re-reads it when either changed. A file that has become unreadable or invalid
/// is logged (at `error`, naming the line) and the users read before keep working: a half-saved
/// edit does not lock everyone out. The copy in memory is only a cache of the file, so a plugin
/// holding one may still declare itself stateless.
pub struct HtpasswdFile {
    path: String,
    interval_ms: u64,
    state: RefCell<State>,
}

struct State {
    users: Rc<Htpasswd>,
    stamp: Option<Stamp>,
    checked_at_ms: u64,
    /// The stamp of a version that failed to parse, so it is logged once, not every interval.
    failed: Option<Stamp>,
}

/// What tells that the file changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &str) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Stamp { modified: meta.modified().ok(), len: meta.len() })
}

impl HtpasswdFile {
    /// Reads `path` now; an error here should refuse the plugin's `init`. `interval_ms` is how
    /// often at most the file is looked at again (1000 = once a second).
    pub fn open(path: impl Into<String>, interval_ms: u64) -> Result<HtpasswdFile, HtpasswdError> {
        let path = path.into();
        let stamp = stamp(&path).map_err(HtpasswdError::Io)?;
        let users = Rc::new(Htpasswd::read(&path)?);
        let state = State { users, stamp: Some(stamp), checked_at_ms: time::now_millis(), failed: None };
        Ok(HtpasswdFile { path, interval_ms, state: RefCell::new(state) })
    }

    /// The path it reads.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The users as of the last look at the file, re-read first if the interval has passed and
    /// the file changed. Returned as an `Rc` so a slow bcrypt check holds no borrow.
    pub fn current(&self) -> Rc<Htpasswd> {
        let now = time::now_millis();
        let mut state = self.state.borrow_mut();
        if now.saturating_sub(state.checked_at_ms) < self.interval_ms {
            return state.users.clone();
        }
        state.checked_at_ms = now;
        let seen = match stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                if state.stamp.take().is_some() {
                    log::error(format!(
                        "htpasswd {}: {e}; keeping the {} users read before",
                        self.path,
                        state.users.len()
                    ));
                }
                return state.users.clone();
            }
        };
        if state.stamp == Some(seen) || state.failed == Some(seen) {
            return state.users.clone();
        }
        match Htpasswd::read(&self.path) {
            Ok(users) => {
                log::info(format!("htpasswd {}: re-read, {} users", self.path, users.len()));
                state.users = Rc::new(users);
                state.stamp = Some(seen);
                state.failed = None;
            }
            Err(e) => {
                log::error(format!("htpasswd {}: {e}; keeping the {} users read before", self.path, state.users.len()));
                state.failed = Some(seen);
            }
        }
        state.users.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `htpasswd -Bbn alice secret`-style entries, hashed with the bcrypt crate at cost 4 (the
    /// minimum: tests stay fast).
    fn entry(user: &str, password: &str) -> String {
        format!("{user}:{}", bcrypt::hash(password, 4).unwrap())
    }

    #[test]
    fn parses_and_verifies() {
        let text = format!(
            "# users\n\n{}\n{}\r\n  \n{}\n",
            entry("alice", "secret"),
            entry("bob", "hunter2"),
            // "pw", from Python's bcrypt (`bcrypt.hashpw(b"pw", bcrypt.gensalt(4))`, `$2b$`
            // relabelled `$2y$` as Apache's htpasswd writes it).
            "carol:$2y$04$mXMH5TJep03jFWxChTj.7.Ou8r79JE8bNNTqg/rQf4Onn9ABpkWi2",
        );
        let h = Htpasswd::parse(&text).unwrap();
        assert_eq!(h.len(), 3);
        assert!(h.verify("alice", "secret"));
        assert!(!h.verify("alice", "Secret"));
        assert!(!h.verify("alice", ""));
        assert!(h.verify("bob", "hunter2"));
        assert!(h.verify("carol", "pw"));
        assert!(!h.verify("mallory", "secret"));
        assert!(h.contains("bob") && !h.contains("mallory"));
        assert!(!format!("{h:?}").contains("$2"), "Debug must not show hashes");
    }

    #[test]
    fn two_a_and_two_b_prefixes() {
        let b = bcrypt::hash("pw", 4).unwrap();
        assert!(b.starts_with("$2b$"));
        let a = format!("$2a${}", &b[4..]);
        let h = Htpasswd::parse(&format!("x:{b}\ny:{a}")).unwrap();
        assert!(h.verify("x", "pw") && h.verify("y", "pw"));
    }

    #[test]
    fn refuses_bad_lines() {
        let err = |t: &str| match Htpasswd::parse(t) {
            Err(HtpasswdError::Line { line, problem }) => (line, problem),
            other => panic!("{t:?}: {other:?}"),
        };
        assert_eq!(err("ok:$2y$04$mXMH5TJep03jFWxChTj.7.Ou8r79JE8bNNTqg/rQf4Onn9ABpkWi2\nnocolon").0, 2);
        assert!(err("md5:$apr1$abc$def").1.contains("htpasswd -B"));
        assert!(err("sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=").1.contains("not a bcrypt"));
        assert!(err("short:$2y$04$abc").1.contains("malformed"));
        assert!(err(":$2y$04$mXMH5TJep03jFWxChTj.7.Ou8r79JE8bNNTqg/rQf4Onn9ABpkWi2").1.contains("empty user"));
        assert!(err("slow:$2y$31$QmcqR2z0A5aMZcpItwUF9.0pDF1z9IXBqmi4Ps/uzEe4gq/.b8t6e").1.contains("cost 31"));
        assert!(Htpasswd::parse("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn last_entry_wins() {
        let h = Htpasswd::parse(&format!("{}\n{}", entry("a", "old"), entry("a", "new"))).unwrap();
        assert!(h.verify("a", "new") && !h.verify("a", "old"));
    }

    #[test]
    fn file_rereads_on_change_and_keeps_users_on_a_bad_edit() {
        let dir = std::env::temp_dir().join(format!("berth-htpasswd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("htpasswd");
        let path_str = path.to_str().unwrap().to_string();
        std::fs::write(&path, entry("alice", "a")).unwrap();
        let file = HtpasswdFile::open(&path_str, 0).unwrap();
        assert!(file.current().verify("alice", "a"));

        // A new user: the size changes, so it is seen without waiting for the clock.
        std::fs::write(&path, format!("{}\n{}\n", entry("alice", "a"), entry("bob", "b"))).unwrap();
        assert!(file.current().verify("bob", "b"));

        // A broken edit keeps the users read before.
        std::fs::write(&path, "garbage without a colon\n").unwrap();
        assert!(file.current().verify("bob", "b"));
        std::fs::remove_file(&path).unwrap();
        assert!(file.current().verify("alice", "a"));

        // A long interval: changes are not looked at yet.
        std::fs::write(&path, entry("carol", "c")).unwrap();
        let slow = HtpasswdFile::open(&path_str, 3_600_000).unwrap();
        std::fs::write(&path, format!("{}\n{}\n", entry("carol", "c"), entry("dave", "d"))).unwrap();
        assert!(!slow.current().contains("dave"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
