//! A Berth storage driver to copy: objects are files below a directory Berth grants the plugin.
//!
//! It shows every method a driver implements, and the one thing a driver must get right to
//! serve real images: blob bytes never pass through the plugin's memory. An upload's writer
//! hands the host the file itself (`Writer::file`), and a download hands it the file opened for
//! reading (`Driver::open_file`); the host moves the bytes natively. A driver that only
//! implements `get_content`/`put_content`/`write` copies every blob through its linear memory
//! and fails any blob near its memory cap (64 MiB by default) with a 500. Only small objects
//! (links, manifests) go through `get_content`/`put_content`.
//!
//! Replace the file calls with your backend's; `plugins/storage-fs` is the full version of this
//! driver (streams, paged listings, a read-only probe).
//!
//! Build:   cargo build --target wasm32-wasip2 --release
//! Test:    berth plugin test target/wasm32-wasip2/release/berth_plugin_template.wasm \
//!              --grant ./data:/data --instances 2
//! Use it:  see sdk/README.md (config, reload).

use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use berth_plugin_sdk::fs::{self, Descriptor, DescriptorFlags, DescriptorType, ErrorCode, OpenFlags, PathFlags};
use berth_plugin_sdk::storage::{Driver, FileInfo, Path, StorageError, Writer};
use berth_plugin_sdk::{log, Config, InitError};

/// Temporary files `put_content` renames into place carry this in their name; `list` hides them.
const TEMP_MARK: &str = ".tmp-";

pub struct TemplateDriver {
    /// The store's directory (a granted directory, or one below it), shared with writers.
    root: Rc<Descriptor>,
}

/// Maps a filesystem error on `path` (missing → `PathNotFound`, which the registry relies on).
fn err(path: &Path) -> impl FnOnce(ErrorCode) -> StorageError + '_ {
    move |code| fs::storage_error(code, path)
}

impl TemplateDriver {
    /// Opens `rel` for writing, creating it and its parent directories if missing.
    fn create(&self, rel: &str, open: OpenFlags) -> Result<Descriptor, ErrorCode> {
        let flags = DescriptorFlags::READ | DescriptorFlags::WRITE;
        let open = open | OpenFlags::CREATE;
        self.root.open_at(PathFlags::empty(), rel, open, flags).or_else(|e| match (e, rel.rsplit_once('/')) {
            (ErrorCode::NoEntry, Some((parent, _))) => {
                fs::create_dir_all(&self.root, parent)?;
                self.root.open_at(PathFlags::empty(), rel, open, flags)
            }
            (e, _) => Err(e),
        })
    }

    fn remove_tree(&self, rel: &str) -> Result<(), ErrorCode> {
        let dir = self.root.open_at(PathFlags::empty(), rel, OpenFlags::DIRECTORY, DescriptorFlags::READ)?;
        for entry in fs::entries(&dir)? {
            let entry = entry?;
            let child = format!("{rel}/{}", entry.name);
            match entry.type_ {
                DescriptorType::Directory => self.remove_tree(&child)?,
                _ => self.root.unlink_file_at(&child)?,
            }
        }
        self.root.remove_directory_at(rel)
    }
}

impl Driver for TemplateDriver {
    type Writer = TemplateWriter;

    /// Called once per instance with the `config:` map of this plugin in Berth's config. An
    /// error refuses the plugin (at start, or on reload: the previous version keeps serving).
    fn init(config: Config) -> Result<Self, InitError> {
        let root = config.get_or("root", "/data");
        let dir = fs::open_dir(root, true).map_err(|e| InitError::invalid("root", e))?;
        log::info(format!("template driver: serving {root}"));
        Ok(TemplateDriver { root: Rc::new(dir) })
    }

    /// Whole content of a small object (links, manifests). Missing → `PathNotFound`.
    fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError> {
        let file = self.root.open_at(PathFlags::empty(), path.relative(), OpenFlags::empty(), DescriptorFlags::READ);
        fs::read_all(&file.map_err(err(path))?, 0).map_err(err(path))
    }

    /// Replace a small object atomically (a temporary file renamed over it) and durably.
    fn put_content(&self, path: &Path, content: Vec<u8>) -> Result<(), StorageError> {
        let rel = path.relative();
        // Unique across instances: std's hasher keys are random per instance.
        let tmp =
            format!("{rel}{TEMP_MARK}{:016x}", std::collections::hash_map::RandomState::new().build_hasher().finish());
        let write = || {
            let file = self.create(&tmp, OpenFlags::TRUNCATE)?;
            fs::write_all(&file, &content, 0)?;
            file.sync_data()?;
            self.root.rename_at(&tmp, &self.root, rel)?;
            sync_parent(&self.root, rel)
        };
        write().map_err(|e| {
            let _ = self.root.unlink_file_at(&tmp);
            fs::storage_error(e, path)
        })
    }

    /// The object's file, opened for reading: the host streams blobs (and ranges of them) from
    /// it itself. Without it the host would read a blob through `get_content`, whole, in this
    /// plugin's memory.
    fn open_file(&self, path: &Path) -> Result<Descriptor, StorageError> {
        let file = self.root.open_at(PathFlags::empty(), path.relative(), OpenFlags::empty(), DescriptorFlags::READ);
        let file = file.map_err(err(path))?;
        if file.get_type().map_err(err(path))? == DescriptorType::Directory {
            return Err(StorageError::other(format!("{path}: is a directory")));
        }
        Ok(file)
    }

    /// A writer for an upload; `append` continues the existing object.
    fn open_writer(&self, path: &Path, append: bool) -> Result<TemplateWriter, StorageError> {
        let rel = path.relative();
        let file =
            self.create(rel, if append { OpenFlags::empty() } else { OpenFlags::TRUNCATE }).map_err(err(path))?;
        let start = file.stat().map_err(err(path))?.size;
        Ok(TemplateWriter { root: self.root.clone(), file, path: path.clone(), start })
    }

    /// A file, or a directory.
    fn stat(&self, path: &Path) -> Result<FileInfo, StorageError> {
        let s = self.root.stat_at(PathFlags::empty(), path.relative()).map_err(err(path))?;
        let modified = fs::millis(s.data_modification_timestamp);
        Ok(match s.type_ {
            DescriptorType::Directory => FileInfo::dir(path, modified),
            _ => FileInfo::file(path, s.size, modified),
        })
    }

    /// Full paths of the direct children (the SDK pages this for the host).
    fn list(&self, path: &Path) -> Result<Vec<String>, StorageError> {
        let dir = self.root.open_at(PathFlags::empty(), path.relative(), OpenFlags::DIRECTORY, DescriptorFlags::READ);
        let mut out = Vec::new();
        // `fs::entries` skips a file that vanished while the directory was read (a temporary
        // file another instance just renamed): not found for one entry is not for the listing.
        for entry in fs::entries(&dir.map_err(err(path))?).map_err(err(path))? {
            let entry = entry.map_err(err(path))?;
            if !entry.name.contains(TEMP_MARK) {
                out.push(format!("{path}/{}", entry.name));
            }
        }
        Ok(out)
    }

    /// Move an object, replacing the destination and creating its parent directories.
    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let (src, dst) = (from.relative(), to.relative());
        match self.root.rename_at(src, &self.root, dst) {
            Err(ErrorCode::NoEntry) => {
                // The source is missing, or the destination's parent is.
                self.root.stat_at(PathFlags::empty(), src).map_err(err(from))?;
                if let Some((parent, _)) = dst.rsplit_once('/') {
                    fs::create_dir_all(&self.root, parent).map_err(err(to))?;
                }
                self.root.rename_at(src, &self.root, dst).map_err(err(from))?;
            }
            other => other.map_err(err(from))?,
        }
        sync_parent(&self.root, dst).map_err(err(to))
    }

    /// Delete a file or a whole tree.
    fn delete(&self, path: &Path) -> Result<(), StorageError> {
        let rel = path.relative();
        match self.root.stat_at(PathFlags::empty(), rel).map_err(err(path))?.type_ {
            DescriptorType::Directory => self.remove_tree(rel),
            _ => self.root.unlink_file_at(rel),
        }
        .and_then(|()| sync_parent(&self.root, rel))
        .map_err(err(path))
    }

    // Optional: `open_reader` (a stream the host pumps, for a backend with no files to hand
    // out), `list_page` (a backend that pages listings natively) and `redirect_url` (send
    // clients straight to your backend with a presigned URL).
}

/// Makes the name `rel` durable: an fsync of the directory holding it.
fn sync_parent(root: &Descriptor, rel: &str) -> Result<(), ErrorCode> {
    match rel.rsplit_once('/') {
        Some((parent, _)) => {
            root.open_at(PathFlags::empty(), parent, OpenFlags::DIRECTORY, DescriptorFlags::READ)?.sync()
        }
        None => root.sync(),
    }
}

/// An upload in progress: the object's file, written in place.
pub struct TemplateWriter {
    root: Rc<Descriptor>,
    file: Descriptor,
    path: Path,
    /// The size when the writer opened: what `cancel` truncates back to.
    start: u64,
}

impl Writer for TemplateWriter {
    /// The file itself, for writing: the host writes the upload into it from `size()` on,
    /// straight to the device, and checks the result through `open_file`. This is what keeps a
    /// multi-GiB push out of the plugin's memory.
    fn file(&mut self) -> Result<Descriptor, StorageError> {
        let (rel, flags) = (self.path.relative(), DescriptorFlags::WRITE);
        self.root.open_at(PathFlags::empty(), rel, OpenFlags::empty(), flags).map_err(err(&self.path))
    }

    /// The fallback when the host cannot use `file()`: chunks of at most 1 MiB, appended.
    fn write(&mut self, chunk: Vec<u8>) -> Result<(), StorageError> {
        let at = self.size();
        fs::write_all(&self.file, &chunk, at).map_err(err(&self.path))
    }

    /// Bytes in the object, including what was there before an append and what the host wrote.
    fn size(&mut self) -> u64 {
        self.file.stat().map_or(self.start, |s| s.size)
    }

    /// Make it durable: the data, and the name of a new file.
    fn commit(&mut self) -> Result<(), StorageError> {
        self.file.sync_data().and_then(|()| sync_parent(&self.root, self.path.relative())).map_err(err(&self.path))
    }

    /// Drop what this writer added.
    fn cancel(&mut self) -> Result<(), StorageError> {
        self.file.set_size(self.start).map_err(err(&self.path))
    }
}

// The one line that turns the crate into a `storage-driver-plugin` component.
berth_plugin_sdk::export_storage_driver!(TemplateDriver);
// Everything it keeps is in its granted directory: any instance can serve any call, so Berth
// may run as many as requests need (see sdk/README.md). Remove this if your plugin keeps state
// in its own memory.
berth_plugin_sdk::declare_stateless!();
