//! Storage drivers: a filesystem-like store of bytes at paths, modelled on distribution's
//! `StorageDriver`. Implement [`Driver`] (and a [`Writer`] for uploads), then export it:
//!
//! ```ignore
//! use berth_plugin_sdk::storage::{Driver, FileInfo, Path, StorageError, Writer};
//! use berth_plugin_sdk::{Config, InitError};
//!
//! struct MyDriver;
//! impl Driver for MyDriver {
//!     type Writer = MyWriter;
//!     fn init(config: Config) -> Result<Self, InitError> { Ok(MyDriver) }
//!     fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError> { todo!() }
//!     fn put_content(&self, path: &Path, content: Vec<u8>) -> Result<(), StorageError> { todo!() }
//!     fn open_writer(&self, path: &Path, append: bool) -> Result<MyWriter, StorageError> { todo!() }
//!     fn stat(&self, path: &Path) -> Result<FileInfo, StorageError> { todo!() }
//!     fn list(&self, path: &Path) -> Result<Vec<String>, StorageError> { todo!() }
//!     fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> { todo!() }
//!     fn delete(&self, path: &Path) -> Result<(), StorageError> { todo!() }
//! }
//! berth_plugin_sdk::export_storage_driver!(MyDriver);
//! ```
//!
//! # What the host expects
//!
//! * **Paths** are absolute, `/`-separated, components of `[A-Za-z0-9._-]`, never `.` or `..`
//!   (e.g. `/docker/registry/v2/blobs/sha256/ab/<hex>/data`). The host validates them, and the
//!   SDK validates them again before your code sees them (a bad one is answered with
//!   `invalid-path` without calling you), so a [`Path`] is always well-formed. The host owns the
//!   layout; a driver only stores bytes where it is told.
//! * **Missing paths** are [`StorageError::PathNotFound`]: Berth relies on "not found" meaning
//!   exactly that (unknown blob, unknown tag, empty repository...). Return anything else for a
//!   missing path and the registry answers 500 instead of 404.
//! * **Reads**: [`Driver::get_content`] for small objects (links, manifests), and
//!   [`Driver::open_reader`] for blobs. `open_reader` should return a host stream
//!   (`wasi:filesystem`'s `read-via-stream` on a preopened file, for instance) so the host pumps
//!   the bytes natively without copying them through the plugin. A driver that has no host stream
//!   to hand out (an in-memory store) keeps the default, which answers
//!   [`StorageError::Unsupported`]: the host then falls back to `get_content` and serves the
//!   bytes from `offset` itself.
//! * **Writes**: [`Driver::put_content`] replaces an object atomically (readers see old or new,
//!   never a mix) and durably. Uploads go through [`Driver::open_writer`]: the host asks the
//!   writer for [`Writer::body`], an output stream it pumps the upload into (the fast path, e.g.
//!   a `wasi:filesystem` `write-via-stream`); a writer without one keeps the default
//!   (`Unsupported`) and receives [`Writer::write`] calls of at most 1 MiB instead. A driver
//!   that writes a file in a granted directory does better still with [`Writer::file`]: it
//!   hands the host the file itself, which the host writes and starts flushing as it goes. The host then
//!   reads [`Writer::size`] and calls [`Writer::commit`] (durable) or [`Writer::cancel`]
//!   (discard what this writer wrote, leaving what was there before an append).
//! * **Listing** returns the *full paths* of the direct children of a directory; a missing
//!   directory is `PathNotFound`. The host asks for pages ([`Driver::list_page`]: at most
//!   `limit` entries after a continuation token); the default pages over [`Driver::list`]
//!   sorted by name, so a simple driver implements `list` only, and one whose backend pages
//!   natively (an object store's continuation token, a sorted map) overrides `list_page`. `rename` replaces the target and creates its parent
//!   directories; `delete` removes a file or a whole tree.

use std::fmt;
use std::ops::Deref;

pub use crate::bindings::common::wasi::filesystem::types::Descriptor;
pub use crate::bindings::common::wasi::io::streams::{InputStream, OutputStream};
pub use crate::bindings::storage::exports::berth::plugin::storage_driver::{FileInfo, ListPage, StorageError};
pub use crate::{Config, InitError};

/// A validated driver path: absolute, `/`-separated, each component of `[A-Za-z0-9._-]`,
/// never empty, `.` or `..`. The root `/` itself is not a path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path(String);

impl Path {
    /// Checks `path` and wraps it; an [`StorageError::InvalidPath`] if it is not well-formed.
    pub fn parse(path: impl Into<String>) -> Result<Path, StorageError> {
        let path = path.into();
        if is_valid(&path) {
            Ok(Path(path))
        } else {
            Err(StorageError::InvalidPath(path))
        }
    }

    /// The path, with its leading `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/`: relative to a driver's root directory.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    /// The components, first to last.
    pub fn components(&self) -> impl DoubleEndedIterator<Item = &str> + '_ {
        self.0[1..].split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// The parent directory, `None` for a top-level path such as `/docker`.
    pub fn parent(&self) -> Option<Path> {
        match self.0.rfind('/') {
            Some(0) | None => None,
            Some(i) => Some(Path(self.0[..i].to_string())),
        }
    }

    /// `self/name`, validated (`name` may hold several `/`-separated components).
    pub fn join(&self, name: &str) -> Result<Path, StorageError> {
        Path::parse(format!("{}/{}", self.0, name))
    }

    /// True if `self` is `other` or lies below it (component-wise: `/ab` is not below `/a`).
    pub fn starts_with(&self, other: &Path) -> bool {
        self.0 == other.0 || (self.0.starts_with(&other.0) && self.0.as_bytes()[other.0.len()] == b'/')
    }

    /// The owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_valid(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && path[1..].split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

impl Deref for Path {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Path {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl StorageError {
    /// `path-not-found` for `path`.
    pub fn not_found(path: &Path) -> Self {
        StorageError::PathNotFound(path.to_string())
    }

    /// `other` with a message.
    pub fn other(message: impl Into<String>) -> Self {
        StorageError::Other(message.into())
    }

    /// True for `path-not-found`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::PathNotFound(_))
    }
}

impl FileInfo {
    /// A regular file of `size` bytes.
    pub fn file(path: &Path, size: u64, modified_millis: u64) -> Self {
        FileInfo { path: path.to_string(), size, modified_millis, is_dir: false }
    }

    /// A directory.
    pub fn dir(path: &Path, modified_millis: u64) -> Self {
        FileInfo { path: path.to_string(), size: 0, modified_millis, is_dir: true }
    }
}

impl ListPage {
    /// The page of `entries` (full paths, any order) that follows `start_after`: the `limit`
    /// smallest names above it, with the last of them as the next token if more remain. The
    /// default [`Driver::list_page`] uses it; so can a driver that gathers a directory whole.
    pub fn of(mut entries: Vec<String>, start_after: Option<&str>, limit: u32) -> ListPage {
        if let Some(after) = start_after {
            entries.retain(|e| e.as_str() > after);
        }
        entries.sort_unstable();
        entries.dedup();
        let limit = limit.max(1) as usize;
        let next = (entries.len() > limit).then(|| entries[limit - 1].clone());
        entries.truncate(limit);
        ListPage { entries, next }
    }
}

/// A storage driver. One value lives in the plugin instance from `init` on; the host calls it
/// one call at a time, so use `Cell`/`RefCell` for state that changes.
///
/// Every method gets validated [`Path`]s. Return [`StorageError::PathNotFound`] for anything
/// missing (see the [module docs](self)).
pub trait Driver: Sized + 'static {
    /// The upload handle [`Driver::open_writer`] returns.
    type Writer: Writer;

    /// Builds the driver from its `config` map in Berth's configuration. An error refuses the
    /// plugin (at start or on reload).
    fn init(config: Config) -> Result<Self, InitError>;

    /// Whole content of a small object (links, manifests).
    fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError>;

    /// Replace an object atomically (readers see old or new, never a mix) and durably.
    fn put_content(&self, path: &Path, content: Vec<u8>) -> Result<(), StorageError>;

    /// The file holding the object at `path`, opened for reading (a regular file in a granted
    /// directory): the host reads it itself, the fastest way to serve a blob. A driver whose
    /// [`Writer::file`] hands out files must implement it, since the host checks a finished
    /// upload by opening it here. The default answers [`StorageError::Unsupported`]: the host
    /// then uses [`Driver::open_reader`].
    fn open_file(&self, path: &Path) -> Result<Descriptor, StorageError> {
        let _ = path;
        Err(StorageError::Unsupported)
    }

    /// The object from `offset` to its end as a stream the host reads natively;
    /// [`StorageError::InvalidOffset`] when `offset` is past the end.
    ///
    /// The default answers [`StorageError::Unsupported`], which makes the host read the object
    /// with [`Driver::get_content`] and skip `offset` bytes itself: fine for small stores
    /// (in-memory), slow for large blobs.
    fn open_reader(&self, path: &Path, offset: u64) -> Result<InputStream, StorageError> {
        let _ = (path, offset);
        Err(StorageError::Unsupported)
    }

    /// A writer for `path`; with `append` it continues an existing object (and
    /// [`Writer::size`] starts at its size), otherwise it starts empty.
    fn open_writer(&self, path: &Path, append: bool) -> Result<Self::Writer, StorageError>;

    /// Size, modification time and kind of `path`.
    fn stat(&self, path: &Path) -> Result<FileInfo, StorageError>;

    /// Full paths of the direct children of the directory `path`, in any order.
    fn list(&self, path: &Path) -> Result<Vec<String>, StorageError>;

    /// One page of [`Driver::list`]: at most `limit` children after the token `start_after`
    /// (`None`: from the start), and the token of the next page (`None` on the last). Tokens
    /// are opaque to the host; never return the same one twice in a listing.
    ///
    /// The default lists the whole directory and pages it by name ([`ListPage::of`], the
    /// last name of a page is the token): correct for any driver, but it reads the directory
    /// once per page. Override it when the backend can resume a listing itself.
    fn list_page(&self, path: &Path, start_after: Option<&str>, limit: u32) -> Result<ListPage, StorageError> {
        Ok(ListPage::of(self.list(path)?, start_after, limit))
    }

    /// Move `from` to `to`, replacing `to` and creating its parent directories.
    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError>;

    /// Delete a file or a whole tree.
    fn delete(&self, path: &Path) -> Result<(), StorageError>;

    /// A URL clients may fetch `path` from directly (valid for `ttl_seconds`), or `None` to
    /// have the host stream it. The default is `None`.
    fn redirect_url(&self, path: &Path, ttl_seconds: u32) -> Result<Option<String>, StorageError> {
        let _ = (path, ttl_seconds);
        Ok(None)
    }
}

/// An object being written (an upload chunk). The host takes [`Writer::body`] or calls
/// [`Writer::write`], then reads [`Writer::size`] and ends with exactly one of
/// [`Writer::commit`] or [`Writer::cancel`]; the SDK refuses calls after that. If the host
/// drops the writer without either, the value is simply dropped (keep what arrived, as
/// distribution does, so the object's size stays the truth about the upload).
pub trait Writer: 'static {
    /// The file this writer writes (a regular file opened for writing, e.g. a second
    /// `open_at` of the object's path with [`DescriptorFlags::WRITE`](crate::fs::DescriptorFlags)),
    /// for a driver that stores objects as files in a granted directory. The host then writes
    /// the upload into it itself, from [`Writer::size`] on, straight to the device, and syncs
    /// it before [`Writer::commit`]: the fastest path. It then checks, through
    /// [`Driver::open_file`] (which such a driver must implement), that the object is that
    /// very file, unchanged. Asked before [`Writer::body`]; the default answers
    /// [`StorageError::Unsupported`].
    fn file(&mut self) -> Result<Descriptor, StorageError> {
        Err(StorageError::Unsupported)
    }

    /// A stream the host pumps the body into, so bytes flow from the socket to the backend
    /// without a copy through the plugin. The host finishes with it (flushes and drops it)
    /// before calling anything else on this writer. The default answers
    /// [`StorageError::Unsupported`]: the host then uses [`Writer::write`].
    fn body(&mut self) -> Result<OutputStream, StorageError> {
        Err(StorageError::Unsupported)
    }

    /// Fallback: append one chunk (at most 1 MiB).
    fn write(&mut self, chunk: Vec<u8>) -> Result<(), StorageError>;

    /// Bytes in the object so far, including what was there before an append and what the
    /// host pumped through [`Writer::body`].
    fn size(&mut self) -> u64;

    /// Flush and make the content durable.
    fn commit(&mut self) -> Result<(), StorageError>;

    /// Discard what this writer wrote (truncate back to the size it started at).
    fn cancel(&mut self) -> Result<(), StorageError>;
}

/// Exports a [`Driver`] as the plugin's `storage-driver` (world `storage-driver-plugin`:
/// import `host`, export `lifecycle` and `storage-driver`). Use it once, at the crate root of
/// a `cdylib`:
///
/// ```ignore
/// berth_plugin_sdk::export_storage_driver!(MyDriver);
/// ```
#[macro_export]
macro_rules! export_storage_driver {
    ($driver:ty) => {
        const _: () = {
            type __BerthStorageDriverExport = $crate::__private::StorageAdapter<$driver>;
            $crate::bindings::lifecycle::__export_lifecycle!(
                __BerthStorageDriverExport with_types_in $crate::bindings::lifecycle
            );
            $crate::bindings::storage::__export_storage_driver!(
                __BerthStorageDriverExport with_types_in $crate::bindings::storage
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths() {
        for good in ["/a", "/a/b.c/_d-e", "/docker/registry/v2/blobs/sha256/ab/abcdef/data", "/.x", "/a..b"] {
            assert!(Path::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn invalid_paths() {
        for bad in [
            "",
            "/",
            "a/b",
            "relative",
            "/a//b",
            "/a/../b",
            "/..",
            "/../etc/passwd",
            "/a/.",
            "/./a",
            "/a/b/",
            "/a b",
            "/a\\b",
            "/a/b\0",
            "/é",
            "//a",
        ] {
            assert!(matches!(Path::parse(bad), Err(StorageError::InvalidPath(p)) if p == bad), "{bad}");
        }
    }

    #[test]
    fn list_pages() {
        let all: Vec<String> = ["/d/c", "/d/a", "/d/e", "/d/b", "/d/d"].map(String::from).into();
        let first = ListPage::of(all.clone(), None, 2);
        assert_eq!(first.entries, ["/d/a", "/d/b"]);
        assert_eq!(first.next.as_deref(), Some("/d/b"));
        let second = ListPage::of(all.clone(), first.next.as_deref(), 2);
        assert_eq!(second.entries, ["/d/c", "/d/d"]);
        let last = ListPage::of(all.clone(), second.next.as_deref(), 2);
        assert_eq!((last.entries, last.next), (vec!["/d/e".to_string()], None));
        let exact = ListPage::of(all, None, 5);
        assert_eq!((exact.entries.len(), exact.next), (5, None));
    }

    #[test]
    fn path_helpers() {
        let p = Path::parse("/a/b/c").unwrap();
        assert_eq!(p.relative(), "a/b/c");
        assert_eq!(p.file_name(), "c");
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(p.parent().unwrap().as_str(), "/a/b");
        assert_eq!(Path::parse("/a").unwrap().parent(), None);
        assert_eq!(p.join("d").unwrap().as_str(), "/a/b/c/d");
        assert!(p.join("..").is_err());
        assert!(p.join("x/y").is_ok()); // two valid components
        assert!(p.join("").is_err());
        let a = Path::parse("/a").unwrap();
        assert!(p.starts_with(&a));
        assert!(a.starts_with(&a));
        assert!(!Path::parse("/ab").unwrap().starts_with(&a));
        assert!(!a.starts_with(&p));
    }
}
