//! A minimal Berth storage driver: copy this crate to start your own.
//!
//! It keeps objects in a map in the plugin's memory, which is enough to run (and to pass the
//! storage driver suite) while showing every method a driver implements. Replace the map with
//! your backend. `plugins/storage-fs` is the full example of a driver over a granted directory
//! that hands the host native streams.
//!
//! Build:   cargo build --target wasm32-wasip2 --release
//! Check:   berth plugin check target/wasm32-wasip2/release/berth_plugin_template.wasm
//! Use it:  see sdk/README.md (config, reload).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use berth_plugin_sdk::storage::{Driver, FileInfo, Path, StorageError, Writer};
use berth_plugin_sdk::{log, time, Config, InitError};

/// Objects by path. `Rc<RefCell<..>>` because writers need to reach the map when they commit,
/// and plugin calls arrive one at a time (no locks needed in a component instance).
type Objects = Rc<RefCell<BTreeMap<String, (Vec<u8>, u64)>>>;

pub struct TemplateDriver {
    objects: Objects,
}

impl Driver for TemplateDriver {
    type Writer = TemplateWriter;

    /// Called once with the `config:` map of this plugin in Berth's config. Read and check
    /// your settings here; an error refuses the plugin (Berth keeps the previous version).
    fn init(config: Config) -> Result<Self, InitError> {
        let greeting = config.get_or("greeting", "template driver ready");
        log::info(greeting);
        Ok(TemplateDriver { objects: Rc::default() })
    }

    /// Whole content of a small object. Missing → `PathNotFound` (the registry relies on it).
    fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError> {
        let objects = self.objects.borrow();
        objects.get(path.as_str()).map(|(data, _)| data.clone()).ok_or_else(|| StorageError::not_found(path))
    }

    /// Replace an object atomically and durably.
    fn put_content(&self, path: &Path, content: Vec<u8>) -> Result<(), StorageError> {
        self.objects.borrow_mut().insert(path.to_string(), (content, time::now_millis()));
        Ok(())
    }

    // `open_reader` is optional: the default answers `unsupported` and the host reads through
    // `get_content`. A backend with host streams (a granted directory) should return one, see
    // storage-fs.

    /// A writer for an upload; `append` continues the existing object.
    fn open_writer(&self, path: &Path, append: bool) -> Result<TemplateWriter, StorageError> {
        let existing = if append { self.get_content(path).unwrap_or_default() } else { Vec::new() };
        Ok(TemplateWriter { objects: self.objects.clone(), path: path.clone(), start: existing.len(), buf: existing })
    }

    /// A file, or a directory (a prefix some object lies below).
    fn stat(&self, path: &Path) -> Result<FileInfo, StorageError> {
        let objects = self.objects.borrow();
        if let Some((data, modified)) = objects.get(path.as_str()) {
            return Ok(FileInfo::file(path, data.len() as u64, *modified));
        }
        let prefix = format!("{path}/");
        match objects.range(prefix.clone()..).next() {
            Some((k, (_, modified))) if k.starts_with(&prefix) => Ok(FileInfo::dir(path, *modified)),
            _ => Err(StorageError::not_found(path)),
        }
    }

    /// Full paths of the direct children. The host reads listings a page at a time; the SDK's
    /// default `list_page` pages this by name. A backend that can resume a listing itself (an
    /// object store's continuation token) overrides `list_page` instead.
    fn list(&self, path: &Path) -> Result<Vec<String>, StorageError> {
        let prefix = format!("{path}/");
        let mut children: Vec<String> = Vec::new();
        for key in self.objects.borrow().keys().filter(|k| k.starts_with(&prefix)) {
            let rest = &key[prefix.len()..];
            let child = format!("{prefix}{}", rest.split('/').next().unwrap_or(rest));
            if children.last() != Some(&child) {
                children.push(child);
            }
        }
        if children.is_empty() {
            return Err(StorageError::not_found(path));
        }
        Ok(children)
    }

    /// Move an object, replacing the destination.
    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let mut objects = self.objects.borrow_mut();
        let object = objects.remove(from.as_str()).ok_or_else(|| StorageError::not_found(from))?;
        objects.insert(to.to_string(), object);
        Ok(())
    }

    /// Delete an object or everything below a prefix.
    fn delete(&self, path: &Path) -> Result<(), StorageError> {
        let mut objects = self.objects.borrow_mut();
        let prefix = format!("{path}/");
        let before = objects.len();
        objects.retain(|k, _| k != path.as_str() && !k.starts_with(&prefix));
        if objects.len() == before {
            return Err(StorageError::not_found(path));
        }
        Ok(())
    }

    // `redirect_url` is optional too: return `Some(url)` to send clients straight to your
    // backend (a presigned URL); the default `None` has the host stream the blob.
}

/// An upload in progress.
pub struct TemplateWriter {
    objects: Objects,
    path: Path,
    buf: Vec<u8>,
    start: usize,
}

impl Writer for TemplateWriter {
    // `body` is optional: return an output stream the host pumps the upload into (fast path,
    // see storage-fs). The default answers `unsupported` and the host calls `write` instead.

    /// One chunk of the upload (at most 1 MiB).
    fn write(&mut self, chunk: Vec<u8>) -> Result<(), StorageError> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    /// Bytes in the object, including what was there before an append.
    fn size(&mut self) -> u64 {
        self.buf.len() as u64
    }

    /// Make it visible and durable.
    fn commit(&mut self) -> Result<(), StorageError> {
        self.objects.borrow_mut().insert(self.path.to_string(), (self.buf.clone(), time::now_millis()));
        Ok(())
    }

    /// Drop what this writer added.
    fn cancel(&mut self) -> Result<(), StorageError> {
        self.buf.truncate(self.start);
        Ok(())
    }
}

// The one line that turns the crate into a `storage-driver-plugin` component.
berth_plugin_sdk::export_storage_driver!(TemplateDriver);
