//! Local filesystem driver, confined to its root directory by `cap-std`: whatever path it is
//! handed, it cannot open anything outside the root (no `..`, no absolute paths, no symlinks out).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use super::file_writer::FsWriter;
use super::sorted_dirs::SortedDirs;
use super::{
    validate_path, ByteStream, Expect, FileInfo, FileWriter, ListPage, Result, StorageDriver, StorageError, Version,
};

pub struct FilesystemDriver {
    root: Arc<Dir>,
    /// A plain descriptor of the root to fsync it (cap-std's own is an `O_PATH` one).
    sync_handle: Arc<std::fs::File>,
    /// Bytes of each upload written through the page cache (see `sink`).
    warm_bytes: u64,
    /// Sorted listings of large directories, for catalog and tag pages.
    dirs: Arc<SortedDirs>,
}

impl FilesystemDriver {
    /// Opens (creating if needed) the root directory.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let dir = Dir::open_ambient_dir(root, ambient_authority())?;
        let sync_handle = std::fs::File::open(root)?;
        Ok(Self {
            root: Arc::new(dir),
            sync_handle: Arc::new(sync_handle),
            warm_bytes: super::sink::DEFAULT_WARM_BYTES,
            dirs: Arc::default(),
        })
    }

    /// Writes the first `n` bytes of each upload through the page cache, the rest directly
    /// (`storage.filesystem.warmbytes`).
    pub fn with_warm_bytes(mut self, n: u64) -> Self {
        self.warm_bytes = n;
        self
    }

    /// Runs blocking filesystem work off the async workers.
    async fn blocking<T, F>(&self, path: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Dir, &str) -> Result<T> + Send + 'static,
    {
        validate_path(path)?;
        let root = self.root.clone();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || f(&root, &path[1..]))
            .await
            .map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?
    }
}

fn io_err(path: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |e| StorageError::io(&format!("/{path}"), e)
}

fn create_parent(dir: &Dir, rel: &str) -> Result<()> {
    if let Some((parent, _)) = rel.rsplit_once('/') {
        dir.create_dir_all(parent).map_err(io_err(rel))?;
    }
    Ok(())
}

/// Writes a sibling temporary file and renames it over `rel`, so readers never see a partial file.
fn write_atomic(dir: &Dir, rel: &str, content: &[u8], durable: bool) -> Result<()> {
    create_parent(dir, rel)?;
    let tmp = temp_name(rel);
    let write = || -> std::io::Result<()> {
        let mut f = dir.create(&tmp)?;
        f.write_all(content)?;
        if durable {
            f.sync_data()?;
        }
        dir.rename(&tmp, dir, rel)
    };
    write().map_err(|e| {
        let _ = dir.remove_file(&tmp);
        io_err(rel)(e)
    })
}

/// The version of a file's content on the filesystem: its SHA-256. Content-based, as an
/// object store's ETag of a single `PUT` is.
fn content_version(content: &[u8]) -> Version {
    use sha2::Digest;
    Version { e_tag: hex::encode(sha2::Sha256::digest(content)), generation: None }
}

/// Runs `f` holding an exclusive `flock` on the directory of `rel` (created if missing). Every
/// conditional write to a file of that directory takes it, from whichever process (replicas
/// sharing the directory on this machine, or on a network filesystem that honours `flock`, as
/// NFSv4 does), so that reading the file, comparing and renaming over it are one step for all.
/// The file itself cannot carry the lock: the rename replaces it.
fn with_dir_lock<T>(dir: &Dir, rel: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use cap_std::fs::OpenOptionsExt;
    use std::os::fd::AsRawFd;
    create_parent(dir, rel)?;
    let parent = rel.rsplit_once('/').map_or(".", |(p, _)| p);
    let mut opts = OpenOptions::new();
    opts.read(true).custom_flags(libc::O_DIRECTORY);
    let held = dir.open_with(parent, &opts).map_err(io_err(rel))?;
    loop {
        // SAFETY: flock only takes the descriptor, which `held` keeps open; the lock goes
        // when `held` is closed, however `f` ends.
        if unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io_err(rel)(e));
        }
    }
    f()
}

/// A unique sibling name for a temporary file that will be renamed over `rel`.
fn temp_name(rel: &str) -> String {
    format!("{rel}.tmp-{:016x}", rand::random::<u64>())
}

#[async_trait]
impl StorageDriver for FilesystemDriver {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        self.blocking(path, |dir, rel| dir.read(rel).map(Bytes::from).map_err(io_err(rel))).await
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        self.blocking(path, move |dir, rel| write_atomic(dir, rel, &content, true)).await
    }

    async fn put_volatile(&self, path: &str, content: Bytes) -> Result<()> {
        self.blocking(path, move |dir, rel| write_atomic(dir, rel, &content, false)).await
    }

    fn conditional_writes(&self) -> bool {
        true
    }

    async fn get_versioned(&self, path: &str) -> Result<(Bytes, Version)> {
        let content = self.get_content(path).await?;
        let version = content_version(&content);
        Ok((content, version))
    }

    async fn put_if(&self, path: &str, content: Bytes, expect: Expect) -> Result<()> {
        let full = path.to_string();
        self.blocking(path, move |dir, rel| {
            with_dir_lock(dir, rel, || {
                let now = match dir.read(rel) {
                    Ok(c) => Some(content_version(&c)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(io_err(rel)(e)),
                };
                let holds = match &expect {
                    Expect::Absent => now.is_none(),
                    Expect::Version(v) => now.as_ref() == Some(v),
                };
                if !holds {
                    return Err(StorageError::Conflict { path: full });
                }
                write_atomic(dir, rel, &content, false)
            })
        })
        .await
    }

    /// One `syncfs` makes everything the operation touched durable with a single journal
    /// commit, which measured cheaper than fsyncing each file and directory (each its own
    /// commit). It also flushes other writers' dirty data; Berth's own uploads keep theirs small
    /// by starting writeback as they go.
    async fn sync(&self, paths: &[String]) -> Result<()> {
        for p in paths {
            validate_path(p)?;
        }
        if paths.is_empty() {
            return Ok(());
        }
        let handle = self.sync_handle.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
            if unsafe { libc::syncfs(handle.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(StorageError::io("/", std::io::Error::last_os_error()))
            }
        })
        .await
        .map_err(|e| StorageError::Backend(format!("blocking task failed: {e}")))?
    }

    /// `syncfs` flushes the whole filesystem: anything on the same device is covered.
    fn sync_covers(&self, local: &std::path::Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.sync_handle.metadata(), std::fs::metadata(local)) {
            (Ok(root), Ok(other)) => root.dev() == other.dev(),
            _ => false,
        }
    }

    async fn reader(&self, path: &str, offset: u64) -> Result<ByteStream> {
        let file = self
            .blocking(path, move |dir, rel| {
                let f = dir.open(rel).map_err(io_err(rel))?;
                let len = f.metadata().map_err(io_err(rel))?.len();
                if offset > len {
                    return Err(StorageError::InvalidOffset { path: format!("/{rel}"), offset });
                }
                Ok(f.into_std())
            })
            .await?;
        Ok(super::file_stream::stream(Arc::new(file), offset, path))
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        validate_path(path)?;
        let root = self.root.clone();
        let rel = path[1..].to_string();
        let open = move || -> Result<(std::fs::File, u64)> {
            create_parent(&root, &rel)?;
            let mut opts = OpenOptions::new();
            opts.write(true).create(true);
            if append {
                opts.append(true);
            } else {
                opts.truncate(true);
            }
            let f = root.open_with(&rel, &opts).map_err(io_err(&rel))?;
            let len = f.metadata().map_err(io_err(&rel))?.len();
            Ok((f.into_std(), len))
        };
        Ok(Box::new(FsWriter::spawn(open, path.to_string(), self.warm_bytes).await?))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let full = path.to_string();
        self.blocking(path, move |dir, rel| {
            let m = dir.metadata(rel).map_err(io_err(rel))?;
            Ok(FileInfo {
                path: full,
                size: m.len(),
                modified: m.modified().map(|t| t.into_std()).unwrap_or(std::time::UNIX_EPOCH),
                is_dir: m.is_dir(),
            })
        })
        .await
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let base = path.to_string();
        self.blocking(path, move |dir, rel| {
            let mut out = Vec::new();
            for entry in dir.read_dir(rel).map_err(io_err(rel))? {
                let entry = entry.map_err(io_err(rel))?;
                if let Some(name) = entry.file_name().to_str() {
                    if !name.contains(".tmp-") {
                        out.push(format!("{base}/{name}"));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// A sorted `readdir` of the one directory (kept while it is unchanged when large): a page
    /// never walks the tree below it.
    async fn list_page(&self, path: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        let dirs = self.dirs.clone();
        let after = start_after.map(str::to_string);
        self.blocking(path, move |dir, rel| dirs.page(dir, rel, after.as_deref(), limit)).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        validate_path(to)?;
        let to = to[1..].to_string();
        self.blocking(from, move |dir, rel| {
            create_parent(dir, &to)?;
            dir.rename(rel, dir, &to).map_err(io_err(rel))
        })
        .await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.blocking(path, |dir, rel| {
            let m = dir.symlink_metadata(rel).map_err(io_err(rel))?;
            if m.is_dir() {
                dir.remove_dir_all(rel).map_err(io_err(rel))
            } else {
                dir.remove_file(rel).map_err(io_err(rel))
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn symlink_cannot_escape_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("link")).unwrap();
        let d = FilesystemDriver::open(tmp.path()).unwrap();
        assert!(d.get_content("/link/secret").await.is_err());
    }
}
