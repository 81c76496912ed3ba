//! The in-memory store behind `berth-storage-memory` (also used by `berth-hostile`, which
//! includes this file with `#[path]`).
//!
//! Objects live in a `BTreeMap` keyed by path, like an object store: a "directory" exists while
//! some object lies below it. Everything is lost when the instance goes away (a reload, a
//! trap), which is the point of a throwaway backend.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use berth_plugin_sdk::storage::{Driver, FileInfo, ListPage, Path, StorageError, Writer};
use berth_plugin_sdk::{time, Config, InitError};

struct Object {
    data: Rc<Vec<u8>>,
    modified_millis: u64,
}

/// The shared state: the objects and the byte budget.
pub struct Store {
    objects: RefCell<BTreeMap<String, Object>>,
    /// Sum of object sizes.
    bytes: Cell<u64>,
    /// Refuse writes beyond this many bytes (`max_bytes` in the config), rather than trapping
    /// at the host's memory cap and losing everything.
    max_bytes: u64,
}

impl Store {
    fn put(&self, path: &Path, data: Vec<u8>) -> Result<(), StorageError> {
        let mut objects = self.objects.borrow_mut();
        let old = objects.get(path.as_str()).map_or(0, |o| o.data.len() as u64);
        let new_total = self.bytes.get() - old + data.len() as u64;
        if new_total > self.max_bytes {
            return Err(StorageError::Unavailable(format!(
                "memory store full ({} of {} bytes used)",
                self.bytes.get(),
                self.max_bytes
            )));
        }
        self.bytes.set(new_total);
        objects.insert(path.to_string(), Object { data: Rc::new(data), modified_millis: time::now_millis() });
        Ok(())
    }

    /// Keys strictly below `path` (`path/...`).
    fn below<'a>(objects: &'a BTreeMap<String, Object>, path: &Path) -> impl Iterator<Item = &'a String> + 'a {
        let prefix = format!("{path}/");
        objects.range(prefix.clone()..).map(|(k, _)| k).take_while(move |k| k.starts_with(&prefix))
    }

    fn remove(&self, objects: &mut BTreeMap<String, Object>, key: &str) {
        if let Some(o) = objects.remove(key) {
            self.bytes.set(self.bytes.get() - o.data.len() as u64);
        }
    }
}

/// An in-memory storage driver.
pub struct MemoryDriver {
    store: Rc<Store>,
}

impl MemoryDriver {
    /// The content of the object at `path`, shared (no copy).
    pub fn object(&self, path: &Path) -> Result<Rc<Vec<u8>>, StorageError> {
        let objects = self.store.objects.borrow();
        objects.get(path.as_str()).map(|o| o.data.clone()).ok_or_else(|| StorageError::not_found(path))
    }
}

impl Driver for MemoryDriver {
    type Writer = MemoryWriter;

    fn init(config: Config) -> Result<Self, InitError> {
        let max_bytes = config.parse_or("max_bytes", u64::MAX)?;
        Ok(MemoryDriver {
            store: Rc::new(Store { objects: RefCell::new(BTreeMap::new()), bytes: Cell::new(0), max_bytes }),
        })
    }

    fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError> {
        Ok(self.object(path)?.as_ref().clone())
    }

    fn put_content(&self, path: &Path, content: Vec<u8>) -> Result<(), StorageError> {
        self.store.put(path, content)
    }

    // `open_reader` keeps the SDK default (`unsupported`): an in-memory store has no host stream
    // to hand out, so the host reads through `get_content` instead.

    fn open_writer(&self, path: &Path, append: bool) -> Result<MemoryWriter, StorageError> {
        let buf = if append {
            match self.object(path) {
                Ok(data) => data.as_ref().clone(),
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e),
            }
        } else {
            Vec::new()
        };
        Ok(MemoryWriter { store: self.store.clone(), path: path.clone(), start: buf.len(), buf })
    }

    fn stat(&self, path: &Path) -> Result<FileInfo, StorageError> {
        let objects = self.store.objects.borrow();
        if let Some(o) = objects.get(path.as_str()) {
            return Ok(FileInfo::file(path, o.data.len() as u64, o.modified_millis));
        }
        // A directory: newest modification below it.
        let newest = Store::below(&objects, path).map(|k| objects[k].modified_millis).max();
        newest.map(|m| FileInfo::dir(path, m)).ok_or_else(|| StorageError::not_found(path))
    }

    fn list(&self, path: &Path) -> Result<Vec<String>, StorageError> {
        let objects = self.store.objects.borrow();
        let mut out: Vec<String> = Vec::new();
        let skip = path.len() + 1;
        for key in Store::below(&objects, path) {
            let child_len = key[skip..].find('/').map_or(key.len(), |i| skip + i);
            let child = &key[..child_len];
            if out.last().map(String::as_str) != Some(child) {
                out.push(child.to_string());
            }
        }
        if out.is_empty() {
            return Err(StorageError::not_found(path));
        }
        Ok(out)
    }

    /// Pages in key order, resuming from the map itself: a page costs what it returns, not the
    /// whole directory. The token is the last key of the page's last child (a child's keys are
    /// contiguous), so the next page starts right after everything below that child.
    fn list_page(&self, path: &Path, start_after: Option<&str>, limit: u32) -> Result<ListPage, StorageError> {
        let objects = self.store.objects.borrow();
        let prefix = format!("{path}/");
        let from = match start_after {
            Some(t) if t.starts_with(&prefix) => Bound::Excluded(t.to_string()),
            Some(t) => return Err(StorageError::other(format!("{t:?} is not a continuation token of {path}"))),
            None => Bound::Included(prefix.clone()),
        };
        let limit = limit.max(1) as usize;
        let mut entries: Vec<String> = Vec::new();
        let mut last_key: Option<&String> = None;
        for (key, _) in objects.range::<String, _>((from, Bound::Unbounded)) {
            if !key.starts_with(&prefix) {
                break;
            }
            let child_len = key[prefix.len()..].find('/').map_or(key.len(), |i| prefix.len() + i);
            let child = &key[..child_len];
            if entries.last().map(String::as_str) != Some(child) {
                if entries.len() == limit {
                    return Ok(ListPage { entries, next: last_key.cloned() });
                }
                entries.push(child.to_string());
            }
            last_key = Some(key);
        }
        if entries.is_empty() && start_after.is_none() {
            return Err(StorageError::not_found(path));
        }
        Ok(ListPage { entries, next: None })
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        let mut objects = self.store.objects.borrow_mut();
        let Some(obj) = objects.remove(from.as_str()) else {
            return Err(StorageError::not_found(from));
        };
        self.store.remove(&mut objects, to.as_str());
        objects.insert(to.to_string(), obj);
        Ok(())
    }

    fn delete(&self, path: &Path) -> Result<(), StorageError> {
        let mut objects = self.store.objects.borrow_mut();
        if objects.contains_key(path.as_str()) {
            self.store.remove(&mut objects, path.as_str());
            return Ok(());
        }
        let doomed: Vec<String> = Store::below(&objects, path).cloned().collect();
        if doomed.is_empty() {
            return Err(StorageError::not_found(path));
        }
        for k in doomed {
            self.store.remove(&mut objects, &k);
        }
        Ok(())
    }
}

/// Buffers the object and stores it whole on commit, so objects appear atomically.
pub struct MemoryWriter {
    store: Rc<Store>,
    path: Path,
    buf: Vec<u8>,
    /// Size before this writer (an append's starting point).
    start: usize,
}

impl Writer for MemoryWriter {
    // `body` keeps the SDK default (`unsupported`): the host sends chunks to `write`.

    fn write(&mut self, chunk: Vec<u8>) -> Result<(), StorageError> {
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }

    fn size(&mut self) -> u64 {
        self.buf.len() as u64
    }

    /// Moves the buffer into the store: a copy would hold the object twice at the moment the
    /// instance's memory is fullest.
    fn commit(&mut self) -> Result<(), StorageError> {
        self.store.put(&self.path, std::mem::take(&mut self.buf))
    }

    fn cancel(&mut self) -> Result<(), StorageError> {
        self.buf.truncate(self.start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    fn driver() -> MemoryDriver {
        MemoryDriver::init(Config::default()).unwrap()
    }

    #[test]
    fn content_and_missing() {
        let d = driver();
        d.put_content(&p("/a/b/c"), b"hello".to_vec()).unwrap();
        assert_eq!(d.get_content(&p("/a/b/c")).unwrap(), b"hello");
        d.put_content(&p("/a/b/c"), b"bye".to_vec()).unwrap();
        assert_eq!(d.get_content(&p("/a/b/c")).unwrap(), b"bye");
        assert!(d.get_content(&p("/nope")).unwrap_err().is_not_found());
        assert!(d.stat(&p("/nope/x")).unwrap_err().is_not_found());
        assert!(d.list(&p("/nope")).unwrap_err().is_not_found());
        assert!(d.delete(&p("/nope")).unwrap_err().is_not_found());
        assert!(d.rename(&p("/nope"), &p("/x")).unwrap_err().is_not_found());
    }

    #[test]
    fn writers_append_and_cancel() {
        let d = driver();
        let mut w = d.open_writer(&p("/up/data"), false).unwrap();
        w.write(b"abc".to_vec()).unwrap();
        assert_eq!(w.size(), 3);
        w.commit().unwrap();
        let mut w = d.open_writer(&p("/up/data"), true).unwrap();
        assert_eq!(w.size(), 3);
        w.write(b"def".to_vec()).unwrap();
        w.commit().unwrap();
        assert_eq!(d.get_content(&p("/up/data")).unwrap(), b"abcdef");
        let mut w = d.open_writer(&p("/up/data"), true).unwrap();
        w.write(b"zzz".to_vec()).unwrap();
        w.cancel().unwrap();
        assert_eq!(w.size(), 6);
        assert_eq!(d.get_content(&p("/up/data")).unwrap(), b"abcdef");
    }

    #[test]
    fn listing_stat_rename_delete() {
        let d = driver();
        for k in ["/l/x/1", "/l/x/2", "/l/y/deep/3", "/l/z", "/lz/other"] {
            d.put_content(&p(k), b"1".to_vec()).unwrap();
        }
        assert_eq!(d.list(&p("/l")).unwrap(), ["/l/x", "/l/y", "/l/z"]);
        assert_eq!(d.list(&p("/l/x")).unwrap(), ["/l/x/1", "/l/x/2"]);
        // Pages of two: every child once, in order, each page resuming after the last.
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = d.list_page(&p("/l"), token.as_deref(), 2).unwrap();
            assert!(page.entries.len() <= 2);
            seen.extend(page.entries);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, d.list(&p("/l")).unwrap());
        assert!(d.list_page(&p("/nope"), None, 2).unwrap_err().is_not_found());
        assert!(d.stat(&p("/l/y")).unwrap().is_dir);
        let f = d.stat(&p("/l/z")).unwrap();
        assert!(!f.is_dir && f.size == 1);
        d.rename(&p("/l/z"), &p("/l/x/1")).unwrap();
        assert!(d.stat(&p("/l/z")).unwrap_err().is_not_found());
        d.delete(&p("/l")).unwrap();
        assert!(d.stat(&p("/l/x/1")).unwrap_err().is_not_found());
        assert_eq!(d.list(&p("/lz")).unwrap(), ["/lz/other"]);
        assert_eq!(d.store.bytes.get(), 1);
    }

    #[test]
    fn budget() {
        let d = MemoryDriver::init([("max_bytes", "4")].into_iter().collect()).unwrap();
        d.put_content(&p("/a"), b"1234".to_vec()).unwrap();
        assert!(matches!(d.put_content(&p("/b"), b"5".to_vec()), Err(StorageError::Unavailable(_))));
        d.put_content(&p("/a"), b"12".to_vec()).unwrap();
        d.put_content(&p("/b"), b"34".to_vec()).unwrap();
    }
}
