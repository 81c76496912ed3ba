//! `berth-storage-fs`: a filesystem storage driver component, confined to the directory Berth's
//! config grants it. With Berth's registry on top it writes distribution's layout
//! (`docker/registry/v2/...`) below that directory, byte for byte what the native filesystem
//! driver writes, so the two can be swapped over the same data.
//!
//! ```yaml
//! plugins:
//!   storage-fs:
//!     path: plugins/target/wasm32-wasip2/release/berth_storage_fs.wasm
//!     grants:
//!       dirs: [{host: ./data, guest: /data, mode: rw}]
//!     config: {root: /data}
//! storage:
//!   plugin: {name: storage-fs}
//! ```
//!
//! Config:
//! * `root` (default `/data`): guest path of the store; a granted directory or a directory
//!   below one (created if missing).
//! * `sync_dirs` (default `true`): fsync the parent directory after `put-content`, `rename`,
//!   `delete` and a new writer's commit, so names are as durable as contents. The host's
//!   storage interface has no separate sync barrier, so this is what makes a crash after a
//!   successful call safe; turn it off only for throwaway data.
//! * `handover` (default `file`): what this driver gives the host to move blob bytes: `file`
//!   (descriptors of the object's file, which the host reads and writes itself), `stream`
//!   (the file's streams, pumped by the host) or `copy` (uploads copied through this plugin,
//!   reads streamed).
//!   Only for comparing the paths; `file` is the fastest.
//!
//! Fast paths: `open-file` and `writer.file` hand the host descriptors of the object's file,
//! which it reads and writes itself (`open-reader` and `writer.body`, the file's streams, are
//! next best), so blob bytes move between the socket and the file natively, without a copy
//! through this plugin. `writer.write` is the fallback.

use std::cell::Cell;
use std::collections::BinaryHeap;
use std::rc::Rc;

use berth_plugin_sdk::fs::{self, Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags};
use berth_plugin_sdk::storage::{Driver, FileInfo, InputStream, ListPage, OutputStream, Path, StorageError, Writer};
use berth_plugin_sdk::{log, Config, InitError};

/// Temporary files `put-content` renames into place carry this in their name; `list` hides them.
const TEMP_MARK: &str = ".tmp-";

pub struct FsDriver {
    root: Rc<Root>,
    temp_counter: Cell<u64>,
    temp_seed: u64,
}

/// The error mapper for `path`, for `map_err`.
fn err(path: &Path) -> impl FnOnce(ErrorCode) -> StorageError + '_ {
    move |code| fs::storage_error(code, path)
}

/// The store's directory, shared with writers (which sync it on commit).
struct Root {
    dir: Descriptor,
    sync_dirs: bool,
    handover: Handover,
}

/// How blob bytes move between the host and the files (config `handover`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handover {
    File,
    Stream,
    Copy,
}

impl Root {
    /// Makes the directory entries in `rel`'s parent durable.
    fn sync_parent(&self, rel: &str) -> Result<(), ErrorCode> {
        if !self.sync_dirs {
            return Ok(());
        }
        match rel.rsplit_once('/') {
            Some((parent, _)) => {
                let dir = self.dir.open_at(PathFlags::empty(), parent, OpenFlags::DIRECTORY, DescriptorFlags::READ)?;
                dir.sync()
            }
            None => self.dir.sync(),
        }
    }
}

impl std::ops::Deref for Root {
    type Target = Descriptor;
    fn deref(&self) -> &Descriptor {
        &self.dir
    }
}

impl FsDriver {
    fn open_path(&self, path: &Path, open: OpenFlags, flags: DescriptorFlags) -> Result<Descriptor, ErrorCode> {
        self.root.open_at(PathFlags::empty(), path.relative(), open, flags)
    }

    /// Opens for writing, creating the parent directories if they are missing.
    fn create_file(&self, rel: &str, open: OpenFlags) -> Result<Descriptor, ErrorCode> {
        let flags = DescriptorFlags::READ | DescriptorFlags::WRITE;
        match self.root.open_at(PathFlags::empty(), rel, open | OpenFlags::CREATE, flags) {
            Err(ErrorCode::NoEntry) => {
                if let Some((parent, _)) = rel.rsplit_once('/') {
                    fs::create_dir_all(&self.root, parent)?;
                }
                self.root.open_at(PathFlags::empty(), rel, open | OpenFlags::CREATE, flags)
            }
            other => other,
        }
    }

    fn temp_name(&self, rel: &str) -> String {
        let n = self.temp_counter.get().wrapping_add(1);
        self.temp_counter.set(n);
        format!("{rel}{TEMP_MARK}{:016x}", mix(self.temp_seed ^ n))
    }

    fn remove_tree(&self, rel: &str) -> Result<(), ErrorCode> {
        let dir = self.root.open_at(PathFlags::empty(), rel, OpenFlags::DIRECTORY, DescriptorFlags::READ)?;
        for entry in fs::entries(&dir)? {
            let entry = entry?;
            let child = format!("{rel}/{}", entry.name);
            if entry.type_ == DescriptorType::Directory {
                self.remove_tree(&child)?;
            } else {
                self.root.unlink_file_at(&child)?;
            }
        }
        drop(dir);
        self.root.remove_directory_at(rel)
    }
}

/// A 64-bit finalizer (splitmix64): spreads a counter into an unpredictable-looking name.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

/// A per-instance random seed (std's hasher keys come from `wasi:random`), so concurrent
/// instances never pick the same temporary name.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(berth_plugin_sdk::time::now_millis());
    h.finish()
}

impl Driver for FsDriver {
    type Writer = FsWriter;

    fn init(config: Config) -> Result<Self, InitError> {
        for (key, _) in config.iter() {
            if !["root", "sync_dirs", "handover"].contains(&key) {
                log::warn(format!("storage-fs: ignoring unknown config key {key:?}"));
            }
        }
        let root_path = config.get_or("root", "/data");
        let sync_dirs = config.parse_or("sync_dirs", true)?;
        let handover = match config.get_or("handover", "file") {
            "file" => Handover::File,
            "stream" => Handover::Stream,
            "copy" => Handover::Copy,
            other => return Err(InitError::invalid("handover", format!("{other:?} is not file, stream or copy"))),
        };
        let root = fs::open_dir(root_path, true).map_err(|e| InitError::invalid("root", e))?;
        let driver = FsDriver {
            root: Rc::new(Root { dir: root, sync_dirs, handover }),
            temp_counter: Cell::new(0),
            temp_seed: random_seed(),
        };
        // Say so at load time, not on the first push, if the grant is read-only (a read-only
        // store is legitimate, e.g. a mirror served from a read-only volume).
        let probe = driver.temp_name(".berth-probe");
        match driver.create_file(&probe, OpenFlags::TRUNCATE) {
            Ok(file) => {
                drop(file);
                let _ = driver.root.unlink_file_at(&probe);
                log::info(format!("storage-fs: serving {root_path} (sync_dirs={sync_dirs})"));
            }
            Err(ErrorCode::NotPermitted | ErrorCode::ReadOnly | ErrorCode::Access) => {
                log::warn(format!("storage-fs: serving {root_path} read-only (the grant does not allow writes)"));
            }
            Err(e) => return Err(InitError::failed(format!("{root_path} is not usable: {e}"))),
        }
        Ok(driver)
    }

    fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError> {
        let file = self.open_path(path, OpenFlags::empty(), DescriptorFlags::READ).map_err(err(path))?;
        fs::read_all(&file, 0).map_err(err(path))
    }

    fn put_content(&self, path: &Path, content: Vec<u8>) -> Result<(), StorageError> {
        let rel = path.relative();
        let tmp = self.temp_name(rel);
        let write = || -> Result<(), ErrorCode> {
            let file = self.create_file(&tmp, OpenFlags::TRUNCATE)?;
            fs::write_all(&file, &content, 0)?;
            file.sync_data()?;
            drop(file);
            self.root.rename_at(&tmp, &self.root.dir, rel)?;
            self.root.sync_parent(rel)
        };
        write().map_err(|e| {
            let _ = self.root.unlink_file_at(&tmp);
            fs::storage_error(e, path)
        })
    }

    fn open_file(&self, path: &Path) -> Result<Descriptor, StorageError> {
        if self.root.handover != Handover::File {
            return Err(StorageError::Unsupported);
        }
        let file = self.open_path(path, OpenFlags::empty(), DescriptorFlags::READ).map_err(err(path))?;
        if file.get_type().map_err(err(path))? == DescriptorType::Directory {
            return Err(StorageError::other(format!("{path}: is a directory")));
        }
        Ok(file)
    }

    fn open_reader(&self, path: &Path, offset: u64) -> Result<InputStream, StorageError> {
        let file = self.open_path(path, OpenFlags::empty(), DescriptorFlags::READ).map_err(err(path))?;
        let stat = file.stat().map_err(err(path))?;
        if stat.type_ == DescriptorType::Directory {
            return Err(StorageError::other(format!("{path}: is a directory")));
        }
        if offset > stat.size {
            return Err(StorageError::InvalidOffset(offset));
        }
        // The stream holds its own reference to the open file: dropping `file` here is fine.
        file.read_via_stream(offset).map_err(err(path))
    }

    fn open_writer(&self, path: &Path, append: bool) -> Result<FsWriter, StorageError> {
        let rel = path.relative();
        let open = if append { OpenFlags::empty() } else { OpenFlags::TRUNCATE };
        let file = self.create_file(rel, open).map_err(err(path))?;
        let stat = file.stat().map_err(err(path))?;
        if stat.type_ == DescriptorType::Directory {
            return Err(StorageError::other(format!("{path}: is a directory")));
        }
        // A new name needs its directory synced on commit; an append continues a known file.
        let new_name = !append;
        Ok(FsWriter {
            root: self.root.clone(),
            file,
            path: path.clone(),
            start: stat.size,
            pos: Some(stat.size),
            new_name,
        })
    }

    fn stat(&self, path: &Path) -> Result<FileInfo, StorageError> {
        let s = self.root.stat_at(PathFlags::empty(), path.relative()).map_err(err(path))?;
        let modified = fs::millis(s.data_modification_timestamp);
        Ok(if s.type_ == DescriptorType::Directory {
            FileInfo::dir(path, modified)
        } else {
            FileInfo::file(path, s.size, modified)
        })
    }

    fn list(&self, path: &Path) -> Result<Vec<String>, StorageError> {
        let dir = self.open_path(path, OpenFlags::DIRECTORY, DescriptorFlags::READ).map_err(err(path))?;
        let mut out = Vec::new();
        for entry in fs::entries(&dir).map_err(err(path))? {
            let entry = entry.map_err(err(path))?;
            if !entry.name.contains(TEMP_MARK) {
                out.push(format!("{path}/{}", entry.name));
            }
        }
        Ok(out)
    }

    /// Pages by name (`readdir` order cannot be resumed): one pass over the directory keeps
    /// only the `limit` smallest names after the token, so a page holds `limit` names in
    /// memory however large the directory. The token is the page's last full path.
    fn list_page(&self, path: &Path, start_after: Option<&str>, limit: u32) -> Result<ListPage, StorageError> {
        let after = match start_after {
            Some(t) => match t.strip_prefix(path.as_str()).and_then(|r| r.strip_prefix('/')) {
                Some(name) => Some(name),
                None => return Err(StorageError::other(format!("{t:?} is not a continuation token of {path}"))),
            },
            None => None,
        };
        let limit = limit.max(1) as usize;
        let dir = self.open_path(path, OpenFlags::DIRECTORY, DescriptorFlags::READ).map_err(err(path))?;
        // A max-heap of the smallest names seen: its top is the one to drop for a smaller one.
        let mut smallest: BinaryHeap<String> = BinaryHeap::with_capacity(limit.min(4096) + 1);
        let mut more = false;
        for entry in fs::entries(&dir).map_err(err(path))? {
            let entry = entry.map_err(err(path))?;
            if entry.name.contains(TEMP_MARK) || after.is_some_and(|a| entry.name.as_str() <= a) {
                continue;
            }
            if smallest.len() < limit {
                smallest.push(entry.name);
            } else {
                more = true;
                if smallest.peek().is_some_and(|top| entry.name < *top) {
                    smallest.pop();
                    smallest.push(entry.name);
                }
            }
        }
        let entries: Vec<String> = smallest.into_sorted_vec().into_iter().map(|n| format!("{path}/{n}")).collect();
        let next = if more { entries.last().cloned() } else { None };
        Ok(ListPage { entries, next })
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let (src, dst) = (from.relative(), to.relative());
        match self.root.rename_at(src, &self.root.dir, dst) {
            Ok(()) => {}
            Err(ErrorCode::NoEntry) => {
                // Either the source is missing or the destination's parent is.
                self.root.stat_at(PathFlags::empty(), src).map_err(err(from))?;
                if let Some((parent, _)) = dst.rsplit_once('/') {
                    fs::create_dir_all(&self.root, parent).map_err(err(to))?;
                }
                self.root.rename_at(src, &self.root.dir, dst).map_err(err(from))?;
            }
            Err(e) => return Err(fs::storage_error(e, from)),
        }
        self.root.sync_parent(dst).map_err(err(to))?;
        if from.parent() != to.parent() {
            self.root.sync_parent(src).map_err(err(from))?;
        }
        Ok(())
    }

    fn delete(&self, path: &Path) -> Result<(), StorageError> {
        let rel = path.relative();
        let s = self.root.stat_at(PathFlags::empty(), rel).map_err(err(path))?;
        if s.type_ == DescriptorType::Directory {
            self.remove_tree(rel).map_err(err(path))?;
        } else {
            self.root.unlink_file_at(rel).map_err(err(path))?;
        }
        self.root.sync_parent(rel).map_err(err(path))
    }
}

/// An upload into a file, written in place: the host pumps into `body` (or calls `write`), then
/// commits (fsync) or cancels (truncate back to the starting size).
pub struct FsWriter {
    root: Rc<Root>,
    file: Descriptor,
    path: Path,
    /// Size when the writer opened: what `cancel` truncates back to.
    start: u64,
    /// Where the next `write` goes; `None` after `body` was handed out (the host moved an
    /// unknown number of bytes), until a `stat` tells.
    pos: Option<u64>,
    /// Opened without `append`: the name may be new, so commit syncs its directory too.
    new_name: bool,
}

impl FsWriter {
    fn pos(&mut self) -> Result<u64, StorageError> {
        match self.pos {
            Some(p) => Ok(p),
            None => {
                let size = self.file.stat().map_err(err(&self.path))?.size;
                self.pos = Some(size);
                Ok(size)
            }
        }
    }
}

impl Writer for FsWriter {
    /// A second descriptor of the file, write-only: the host writes into it from `size` on
    /// (and checks the result through `open-file`).
    fn file(&mut self) -> Result<Descriptor, StorageError> {
        if self.root.handover != Handover::File {
            return Err(StorageError::Unsupported);
        }
        let file = self
            .root
            .open_at(PathFlags::empty(), self.path.relative(), OpenFlags::empty(), DescriptorFlags::WRITE)
            .map_err(err(&self.path))?;
        self.pos = None;
        Ok(file)
    }

    fn body(&mut self) -> Result<OutputStream, StorageError> {
        if self.root.handover == Handover::Copy {
            return Err(StorageError::Unsupported);
        }
        let at = self.pos()?;
        let stream = self.file.write_via_stream(at).map_err(err(&self.path))?;
        self.pos = None;
        Ok(stream)
    }

    fn write(&mut self, chunk: Vec<u8>) -> Result<(), StorageError> {
        let at = self.pos()?;
        fs::write_all(&self.file, &chunk, at).map_err(err(&self.path))?;
        self.pos = Some(at + chunk.len() as u64);
        Ok(())
    }

    fn size(&mut self) -> u64 {
        // A failed stat can only mean the file is gone; report what we knew.
        self.pos().unwrap_or(self.start)
    }

    fn commit(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(err(&self.path))?;
        if self.new_name {
            self.root.sync_parent(self.path.relative()).map_err(err(&self.path))?;
            self.new_name = false;
        }
        Ok(())
    }

    fn cancel(&mut self) -> Result<(), StorageError> {
        self.file.set_size(self.start).map_err(err(&self.path))?;
        self.pos = Some(self.start);
        Ok(())
    }
}

berth_plugin_sdk::export_storage_driver!(FsDriver);
// Everything it keeps is in its granted directory: any instance can serve any call.
berth_plugin_sdk::declare_stateless!();
