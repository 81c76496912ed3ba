//! Sorted listings of the filesystem driver's large directories (a flat `repositories/` of
//! 100,000 names, a repository with 100,000 tags), kept in memory so that a page is a binary
//! search instead of a `readdir` and a sort of the whole directory.
//!
//! Nothing is persisted and nothing is written on a push: a listing is rebuilt from the
//! directory itself, and it is used only while the directory's inode and timestamps are those
//! it was read under, so a write by anyone (a push, distribution or a second Berth on the same
//! root) is seen at once. A listing read while its directory's timestamps were too recent to
//! tell a later change within the same clock tick apart ("racy", as git calls it) is not kept.
//! Small directories are not kept at all: reading them costs less than keeping them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_std::fs::{Dir, MetadataExt};

use super::page::{ListPage, Selection};
use super::{Result, StorageError};

/// Directories with fewer entries are read on every page.
const KEEP_FROM: usize = 256;
/// Bytes of names kept in all; the least recently used listing goes first.
const BUDGET: usize = 32 << 20;
/// How old a directory's last change must be for its listing to be kept: filesystem
/// timestamps move in ticks (a few ms locally, up to seconds on network filesystems).
const RACY: Duration = Duration::from_secs(2);

/// What identifies one state of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
}

impl Stamp {
    fn of(m: &cap_std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            size: m.size(),
        }
    }

    /// Whether a change could still go unnoticed: the last change is within `racy` of `read_at`.
    fn is_racy(&self, read_at: SystemTime, racy: Duration) -> bool {
        let changed = self.mtime.max(self.ctime);
        let changed = UNIX_EPOCH + Duration::new(changed.0.max(0) as u64, changed.1.clamp(0, 999_999_999) as u32);
        changed + racy > read_at
    }
}

/// A directory's names, sorted, packed in one buffer.
struct Listing {
    stamp: Stamp,
    buf: String,
    ends: Vec<u32>,
    last_used: u64,
}

impl Listing {
    fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    fn bytes(&self) -> usize {
        self.buf.len() + 4 * self.ends.len()
    }

    fn page(&self, after: Option<&str>, limit: usize) -> ListPage {
        let n = self.ends.len();
        let (mut lo, mut hi) = (0, n);
        if let Some(a) = after {
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.name(mid) <= a {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
        }
        let end = n.min(lo.saturating_add(limit));
        ListPage { names: (lo..end).map(|i| self.name(i).to_string()).collect(), more: end < n }
    }
}

pub struct SortedDirs {
    kept: Mutex<Kept>,
    /// `RACY`, shorter in tests.
    racy: Duration,
}

impl Default for SortedDirs {
    fn default() -> Self {
        SortedDirs { kept: Mutex::default(), racy: RACY }
    }
}

#[derive(Default)]
struct Kept {
    by_dir: HashMap<String, Listing>,
    bytes: usize,
    clock: u64,
}

impl SortedDirs {
    /// A page of the directory `rel` under `root` (blocking).
    pub fn page(&self, root: &Dir, rel: &str, after: Option<&str>, limit: usize) -> Result<ListPage> {
        let not_found = || StorageError::NotFound(format!("/{rel}"));
        let io = |e: std::io::Error| {
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                not_found()
            } else {
                StorageError::io(&format!("/{rel}"), e)
            }
        };
        let meta = root.metadata(rel).map_err(io)?;
        if !meta.is_dir() {
            return Err(not_found());
        }
        let stamp = Stamp::of(&meta);
        {
            let mut kept = self.kept.lock().expect("sorted dirs lock");
            kept.clock += 1;
            let now = kept.clock;
            if let Some(l) = kept.by_dir.get_mut(rel).filter(|l| l.stamp == stamp) {
                l.last_used = now;
                return Ok(l.page(after, limit));
            }
        }
        let keep = !stamp.is_racy(SystemTime::now(), self.racy);
        let mut names: Vec<String> = Vec::new();
        let mut sel = Selection::new(after, limit);
        for entry in root.read_dir(rel).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Some(name) = entry.file_name().to_str() {
                if name.contains(".tmp-") {
                    continue;
                }
                sel.offer(name);
                if keep {
                    names.push(name.to_string());
                }
            }
        }
        if names.len() > KEEP_FROM {
            self.keep(rel, stamp, names);
        }
        Ok(sel.finish())
    }

    fn keep(&self, rel: &str, stamp: Stamp, mut names: Vec<String>) {
        names.sort_unstable();
        let mut buf = String::with_capacity(names.iter().map(String::len).sum());
        let mut ends = Vec::with_capacity(names.len());
        for n in &names {
            buf.push_str(n);
            ends.push(buf.len() as u32);
        }
        drop(names);
        let mut listing = Listing { stamp, buf, ends, last_used: 0 };
        if listing.bytes() > BUDGET || listing.buf.len() > u32::MAX as usize {
            return;
        }
        let mut kept = self.kept.lock().expect("sorted dirs lock");
        listing.last_used = kept.clock;
        if let Some(old) = kept.by_dir.remove(rel) {
            kept.bytes -= old.bytes();
        }
        while kept.bytes + listing.bytes() > BUDGET {
            let Some(oldest) = kept.by_dir.iter().min_by_key(|(_, l)| l.last_used).map(|(k, _)| k.clone()) else {
                break;
            };
            let gone = kept.by_dir.remove(&oldest).expect("just found");
            kept.bytes -= gone.bytes();
        }
        kept.bytes += listing.bytes();
        kept.by_dir.insert(rel.to_string(), listing);
    }

    #[cfg(test)]
    fn is_kept(&self, rel: &str) -> bool {
        self.kept.lock().unwrap().by_dir.contains_key(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn dir_with(names: impl IntoIterator<Item = String>) -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        for n in names {
            std::fs::create_dir(tmp.path().join("d").join(n)).unwrap();
        }
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, dir)
    }

    /// Listings kept however recent the change (the tests wait out a clock tick instead).
    fn eager() -> SortedDirs {
        SortedDirs { racy: Duration::ZERO, ..Default::default() }
    }

    #[test]
    fn pages_of_a_large_directory_in_order() {
        let all: Vec<String> = (0..1000).map(|i| format!("n{i:04}")).collect();
        let (_tmp, dir) = dir_with(all.clone());
        let dirs = eager();
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = dirs.page(&dir, "d", after.as_deref(), 300).unwrap();
            got.extend(p.names.iter().cloned());
            after = p.names.last().cloned();
            if !p.more {
                break;
            }
        }
        assert_eq!(got, all);
        assert!(dirs.is_kept("d"));
    }

    #[test]
    fn a_change_to_the_directory_is_seen_at_once() {
        let (tmp, dir) = dir_with((0..400).map(|i| format!("n{i:04}")));
        std::thread::sleep(Duration::from_millis(50));
        let dirs = eager();
        assert_eq!(dirs.page(&dir, "d", None, 1).unwrap().names, ["n0000"]);
        assert!(dirs.is_kept("d"));
        std::thread::sleep(Duration::from_millis(50));
        std::fs::create_dir(tmp.path().join("d/a")).unwrap();
        assert_eq!(dirs.page(&dir, "d", None, 1).unwrap().names, ["a"]);
        assert_eq!(dirs.page(&dir, "d", Some("a"), 1).unwrap().names, ["n0000"]);
    }

    #[test]
    fn a_racy_listing_is_not_kept() {
        let (_tmp, dir) = dir_with((0..400).map(|i| format!("n{i:04}")));
        let dirs = SortedDirs::default();
        assert_eq!(
            dirs.page(&dir, "d", Some("n0398"), 5).unwrap(),
            ListPage { names: vec!["n0399".into()], more: false }
        );
        assert!(!dirs.is_kept("d"));
    }

    #[test]
    fn a_missing_directory_or_a_file_is_not_found() {
        let (tmp, dir) = dir_with([]);
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        assert!(SortedDirs::default().page(&dir, "nope", None, 1).unwrap_err().is_not_found());
        assert!(SortedDirs::default().page(&dir, "f", None, 1).unwrap_err().is_not_found());
    }
}
