//! The storage driver: a small, byte-oriented key/value store modelled on distribution's
//! `storagedriver.StorageDriver`. The registry owns the layout; a driver only stores bytes at
//! slash-separated paths such as `/docker/registry/v2/blobs/sha256/ab/<hex>/data`.

mod component;
mod file_stream;
mod file_writer;
mod fs;
mod metered;
mod object;
mod page;
mod parking;
mod rechunk;
mod resume;
mod sink;
mod sorted_dirs;
pub mod suite;

use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use component::ComponentDriver;
pub use fs::FilesystemDriver;
pub use metered::MeteredDriver;
pub use object::{InMemoryDriver, ObjectStoreDriver};
pub use page::{blockers, settled, settled_unless, FlatPage, ListPage};
pub use sink::DEFAULT_WARM_BYTES;

/// Errors a driver may return. The registry maps `NotFound` to the spec's "unknown" codes and
/// everything else to a 500 with a request id.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("path not found: {0}")]
    NotFound(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("invalid offset {offset} for {path}")]
    InvalidOffset { path: String, offset: u64 },
    #[error("storage I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("storage backend error: {0}")]
    Backend(String),
    /// A conditional write found the object no longer as the caller read it.
    #[error("{path} changed since it was read")]
    Conflict { path: String },
    /// The driver cannot write conditionally (see [`StorageDriver::conditional_writes`]).
    #[error("{driver} storage has no conditional writes")]
    Unsupported { driver: &'static str },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }

    pub(crate) fn io(path: &str, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            StorageError::NotFound(path.to_string())
        } else {
            StorageError::Io { path: path.to_string(), source }
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A stream of file content chunks.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// An object's version as a conditional write names it: the service's ETag on object stores,
/// a digest of the content on the filesystem. Both change with the content and only with it,
/// so a write conditional on a version read earlier lands only if the content is still what was
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub(crate) e_tag: String,
    /// What some services match on instead of the ETag (GCS's generation).
    pub(crate) generation: Option<String>,
}

/// What a conditional write requires of the object at its path at the moment it lands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// No object there.
    Absent,
    /// The object as it was read, at this version.
    Version(Version),
}

/// What `stat` reports about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    pub modified: SystemTime,
    pub is_dir: bool,
}

#[async_trait]
pub trait StorageDriver: Send + Sync + 'static {
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Whether a fresh (non-append) writer's bytes become visible only at `commit` and leave
    /// nothing behind on `cancel` (object stores' multipart uploads). The registry then streams
    /// an upload whose digest it already knows straight to the blob's final path, with no copy.
    fn atomic_writers(&self) -> bool {
        false
    }

    /// A URL a client may fetch `path` from directly for a short while (a pre-signed object
    /// store URL), or `None` to have the registry stream it.
    async fn redirect_url(&self, path: &str) -> Result<Option<String>> {
        validate_path(path)?;
        Ok(None)
    }

    /// Whole content of a (small) file.
    async fn get_content(&self, path: &str) -> Result<Bytes>;

    /// Replace a file's content atomically: readers see the old or the new content, never a mix,
    /// and the content is on stable storage before the new name appears, so a crash can never
    /// expose a partial file. The name itself is durable after the next `sync`.
    async fn put_content(&self, path: &str, content: Bytes) -> Result<()>;

    /// Like `put_content`, atomic for readers, but durable only after the next `sync`: for links
    /// and bookkeeping, whose loss in a crash reads as "not there".
    async fn put_volatile(&self, path: &str, content: Bytes) -> Result<()> {
        self.put_content(path, content).await
    }

    /// Durability barrier for `paths` (files written with `put_volatile` or `rename`, or paths
    /// just deleted): once it returns, their content and their directory entries survive a
    /// crash. The registry calls it once per operation, with everything the operation touched.
    async fn sync(&self, paths: &[String]) -> Result<()> {
        paths.iter().try_for_each(|p| validate_path(p))
    }

    /// Whether a `sync` of any non-empty set of paths also makes durable what was written
    /// before it to the local file or directory `local` (the filesystem driver syncs its whole
    /// filesystem). The event outbox's journal then needs no sync of its own.
    fn sync_covers(&self, _local: &std::path::Path) -> bool {
        false
    }

    /// Whether [`get_versioned`](Self::get_versioned) and [`put_if`](Self::put_if) work:
    /// a compare-and-swap on one object that holds across every process sharing the storage
    /// (replicas on one bucket or directory). Without it, the registry serialises such writes
    /// within its own process only.
    fn conditional_writes(&self) -> bool {
        false
    }

    /// A small file's content and its version, for a later [`put_if`](Self::put_if).
    async fn get_versioned(&self, path: &str) -> Result<(Bytes, Version)> {
        validate_path(path)?;
        Err(StorageError::Unsupported { driver: self.name() })
    }

    /// `put_volatile`, but only if the object is still as `expect` says at the moment the
    /// write lands; else `Conflict`, and nothing is written.
    async fn put_if(&self, path: &str, _content: Bytes, _expect: Expect) -> Result<()> {
        validate_path(path)?;
        Err(StorageError::Unsupported { driver: self.name() })
    }

    /// Stream a file from `offset` to its end.
    async fn reader(&self, path: &str, offset: u64) -> Result<ByteStream>;

    /// Open a writer; with `append` the writer continues an existing file.
    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>>;

    async fn stat(&self, path: &str) -> Result<FileInfo>;

    /// `stat` of a path that can only be a file (a link, a blob's data): `NotFound` unless a
    /// file is there. An object store answers a missing key with one request instead of also
    /// listing for a directory of that name; this default asks `stat`.
    async fn stat_file(&self, path: &str) -> Result<FileInfo> {
        match self.stat(path).await? {
            info if info.is_dir => Err(StorageError::NotFound(path.to_string())),
            info => Ok(info),
        }
    }

    /// Full paths of the direct children of a directory, in no particular order.
    async fn list(&self, path: &str) -> Result<Vec<String>>;

    /// Names of the direct children of a directory that sort after `start_after` (bytewise;
    /// it need not exist), ascending, at most `limit`: what the catalog and tag pages walk, so
    /// a page costs what it holds. A missing directory is `NotFound`. This default lists the
    /// whole directory; drivers with an ordered listing override it.
    async fn list_page(&self, path: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        let mut sel = page::Selection::new(start_after, limit);
        for entry in self.list(path).await? {
            sel.offer(entry.rsplit('/').next().unwrap_or(&entry));
        }
        Ok(sel.finish())
    }

    /// Paths (relative to the directory) of the files at any depth below a directory that sort
    /// after `start_after`, in the service's key order, at most `limit`: one request where
    /// `list_page` needs one per directory. Offered by object stores that list from a key
    /// (S3, GCS), where a request costs tens of milliseconds; `None` (the default): not
    /// offered, and the caller asks each directory instead.
    async fn list_flat(&self, _path: &str, _start_after: &str, _limit: usize) -> Result<Option<FlatPage>> {
        Ok(None)
    }

    /// Move a file into place, replacing any file already at `to` (durable after `sync`).
    async fn rename(&self, from: &str, to: &str) -> Result<()>;

    /// Delete a file or a whole directory tree.
    async fn delete(&self, path: &str) -> Result<()>;
}

/// A file being written. Nothing is guaranteed durable until `commit` returns.
#[async_trait]
pub trait FileWriter: Send {
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Bytes in the file so far, including what was there before an append.
    fn size(&self) -> u64;
    /// Flush and make the content durable.
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Stop writing and remove what this writer wrote.
    async fn cancel(self: Box<Self>) -> Result<()>;
}

/// Checks a driver path: absolute, slash separated, components of `[A-Za-z0-9._-]` that are
/// not `.` or `..`. Every driver calls this first, so no path can climb out of its root.
pub fn validate_path(path: &str) -> Result<()> {
    let ok = path.len() > 1
        && path.starts_with('/')
        && path[1..].split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidPath(path.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::validate_path;

    #[test]
    fn paths() {
        assert!(validate_path("/a/b.c/_d-e").is_ok());
        for bad in ["", "/", "a/b", "/a//b", "/a/../b", "/a/.", "/a/b/", "/a b", "/a\\b"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
    }
}
