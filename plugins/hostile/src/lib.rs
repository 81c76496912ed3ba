//! `berth-hostile`: a storage driver that misbehaves on purpose, for Berth's sandbox tests.
//! Its init config key `mode` picks the misbehaviour; otherwise it is `berth-storage-memory`
//! (the same store, included from `../storage-memory/src/store.rs`).
//!
//! | `mode` | what it does | what the host must do |
//! |--------|--------------|-----------------------|
//! | (absent) / `none` | behaves | — |
//! | `loop` | spins forever in `get-content` and `stat` | stop it at the call deadline (epoch), answer 500, keep serving |
//! | `stuck` | spins forever in `get-content` and `stat` of paths containing `stuck` only | serve other calls from other instances meanwhile (it declares itself stateless) |
//! | `oom` | allocates in `get-content` and `stat` until the memory cap traps | trap at the cap, answer 500, keep serving |
//! | `escape` | `get-content` tries to read `/etc/passwd` and `../` outside its preopen, returning whatever it read, or every error as `other` | deny every attempt |
//! | `panic` | panics in `get-content` and `stat` | treat the trap as an error, keep serving |
//! | `bad-data` | blob reads (`.../data`) come back corrupted, `stat` reports wrong sizes | refuse the blob (digest / size check) |
//! | `init-fail` | `init` returns `invalid-config` | refuse to load (or reload) the plugin |
//! | `list-loop` | `list` pages hand back the same continuation token forever | fail the listing (repeated token), keep serving |
//! | `list-endless` | `list` pages never end: a fresh token and fresh entries every page | fail the listing at the host's bound, keep serving |
//! | `connect` | `get-content` opens a TCP connection to config `target` (`ip:port`) and returns what it read, or the error as `other` | deny it unless `grants.network` lists the address |
//!
//! `bad-data` corrupts `get-content` of any path ending in `/data` (one byte flipped) and
//! `open-reader` of those paths: with a granted directory it writes the corrupted bytes to a
//! scratch file there and returns that file's `read-via-stream` (a host-pumped stream, the
//! path the real `storage-fs` takes); without one it answers `unsupported`, so the host falls
//! back to the corrupted `get-content`. `stat` adds 7 to every file's size.
//!
//! It declares itself stateless (`declare_stateless!`), so the host may grow its pool; its
//! in-memory store then differs between instances, which the tests that use it allow for.

#[path = "../../storage-memory/src/store.rs"]
mod store;

use std::cell::Cell;

use berth_plugin_sdk::fs::{self, Descriptor, DescriptorFlags, OpenFlags, PathFlags};
use berth_plugin_sdk::storage::{Driver, FileInfo, InputStream, ListPage, Path, StorageError};
use berth_plugin_sdk::{log, Config, InitError};
use store::{MemoryDriver, MemoryWriter};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    None,
    Loop,
    Stuck,
    Oom,
    Escape,
    Panic,
    BadData,
    Connect,
    ListLoop,
    ListEndless,
}

pub struct Hostile {
    mode: Mode,
    /// `connect`: the `ip:port` it dials.
    target: String,
    inner: MemoryDriver,
    /// The first granted directory, if any (`escape` tries to climb out of it; `bad-data`
    /// writes its scratch files there).
    scratch: Option<(Descriptor, String)>,
    counter: Cell<u64>,
}

impl Hostile {
    /// `loop`, `oom` and `panic` strike here (on `get-content` and `stat`).
    fn strike(&self, path: &Path) {
        match self.mode {
            Mode::Loop => spin(),
            Mode::Stuck if path.as_str().contains("stuck") => spin(),
            Mode::Oom => exhaust_memory(),
            Mode::Panic => panic!("hostile plugin: panic mode ({path})"),
            Mode::None
            | Mode::Stuck
            | Mode::Escape
            | Mode::BadData
            | Mode::Connect
            | Mode::ListLoop
            | Mode::ListEndless => {}
        }
    }

    fn escape(&self) -> Result<Vec<u8>, StorageError> {
        let mut tried = Vec::new();
        // Through wasi-libc, as any Rust code would.
        for p in ["/etc/passwd", "/data/../etc/passwd", "/data/../../../../etc/passwd", "../etc/passwd"] {
            match std::fs::read(p) {
                Ok(bytes) => return Ok(bytes),
                Err(e) => tried.push(format!("std::fs::read({p}): {e}")),
            }
        }
        // Straight through wasi:filesystem, relative to the preopen.
        for (dir, guest) in fs::preopens() {
            for p in ["../etc/passwd", "../../../../../../etc/passwd", "/etc/passwd", ".."] {
                match dir.open_at(PathFlags::SYMLINK_FOLLOW, p, OpenFlags::empty(), DescriptorFlags::READ) {
                    Ok(file) => match fs::read_all(&file, 0) {
                        Ok(bytes) => return Ok(bytes),
                        Err(e) => tried.push(format!("open_at({guest}, {p}): opened, read failed: {e}")),
                    },
                    Err(e) => tried.push(format!("open_at({guest}, {p}): {e}")),
                }
            }
        }
        Err(StorageError::Other(format!("escape attempts all failed: {}", tried.join("; "))))
    }

    /// `bad-data`: the content with one byte flipped, for blob data paths.
    fn corrupt(path: &Path, mut data: Vec<u8>) -> Vec<u8> {
        if path.file_name() == "data" {
            match data.last_mut() {
                Some(b) => *b ^= 0xff,
                None => data.push(0),
            }
        }
        data
    }
}

impl Hostile {
    /// Dials `target` over TCP and returns the first bytes it reads (an allowed connection), or
    /// the refusal as an error.
    fn connect(&self) -> Result<Vec<u8>, StorageError> {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(self.target.as_str())
            .map_err(|e| StorageError::Other(format!("connect {}: {e}", self.target)))?;
        let mut buf = vec![0u8; 64];
        let n = stream.read(&mut buf).map_err(|e| StorageError::Other(format!("read {}: {e}", self.target)))?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// Loops forever (only the host's deadline ends it).
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates (and touches) 1 MiB blocks until the allocator fails, which aborts: a trap at
/// the host's memory cap.
fn exhaust_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[0] = 1;
        hoard.push(std::hint::black_box(block));
    }
}

impl Driver for Hostile {
    type Writer = MemoryWriter;

    fn init(config: Config) -> Result<Self, InitError> {
        let mode = match config.get_or("mode", "none") {
            "none" => Mode::None,
            "loop" => Mode::Loop,
            "stuck" => Mode::Stuck,
            "oom" => Mode::Oom,
            "escape" => Mode::Escape,
            "panic" => Mode::Panic,
            "bad-data" => Mode::BadData,
            "connect" => Mode::Connect,
            "list-loop" => Mode::ListLoop,
            "list-endless" => Mode::ListEndless,
            "init-fail" => return Err(InitError::invalid("mode", "init-fail: refusing to start, as asked")),
            other => {
                return Err(InitError::invalid(
                    "mode",
                    format!(
                        "unknown mode {other:?} (none, loop, stuck, oom, escape, panic, bad-data, connect, list-loop, \
                         list-endless, init-fail)"
                    ),
                ))
            }
        };
        log::warn(format!("hostile plugin loaded in mode {mode:?}"));
        let target = config.get_or("target", "").to_string();
        Ok(Hostile {
            target,
            mode,
            inner: MemoryDriver::init(config)?,
            scratch: fs::preopens().into_iter().next(),
            counter: Cell::new(0),
        })
    }

    fn get_content(&self, path: &Path) -> Result<Vec<u8>, StorageError> {
        self.strike(path);
        if self.mode == Mode::Escape {
            return self.escape();
        }
        if self.mode == Mode::Connect {
            return self.connect();
        }
        let data = self.inner.get_content(path)?;
        Ok(if self.mode == Mode::BadData { Self::corrupt(path, data) } else { data })
    }

    fn put_content(&self, path: &Path, content: Vec<u8>) -> Result<(), StorageError> {
        self.inner.put_content(path, content)
    }

    fn open_reader(&self, path: &Path, offset: u64) -> Result<InputStream, StorageError> {
        let (Mode::BadData, Some((dir, _))) = (self.mode, &self.scratch) else {
            return self.inner.open_reader(path, offset);
        };
        let data = Self::corrupt(path, self.inner.get_content(path)?);
        if offset > data.len() as u64 {
            return Err(StorageError::InvalidOffset(offset));
        }
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let name = format!(".hostile-bad-data-{n}");
        let io = |e: fs::ErrorCode| StorageError::other(format!("scratch file: {e}"));
        let file = dir
            .open_at(
                PathFlags::empty(),
                &name,
                OpenFlags::CREATE | OpenFlags::TRUNCATE,
                DescriptorFlags::READ | DescriptorFlags::WRITE,
            )
            .map_err(io)?;
        fs::write_all(&file, &data, 0).map_err(io)?;
        let stream = file.read_via_stream(offset).map_err(io)?;
        // The open stream keeps the file alive; the name can go.
        let _ = dir.unlink_file_at(&name);
        Ok(stream)
    }

    fn open_writer(&self, path: &Path, append: bool) -> Result<MemoryWriter, StorageError> {
        self.inner.open_writer(path, append)
    }

    fn stat(&self, path: &Path) -> Result<FileInfo, StorageError> {
        self.strike(path);
        let mut info = self.inner.stat(path)?;
        if self.mode == Mode::BadData && !info.is_dir {
            info.size += 7;
        }
        Ok(info)
    }

    fn list(&self, path: &Path) -> Result<Vec<String>, StorageError> {
        self.inner.list(path)
    }

    fn list_page(&self, path: &Path, start_after: Option<&str>, limit: u32) -> Result<ListPage, StorageError> {
        let mut page = match self.inner.list_page(path, start_after, limit) {
            // The listing misbehaves whatever is stored: the host may have started this
            // instance afresh (the plugin says it is stateless) since anything was written.
            Err(StorageError::PathNotFound(_)) if matches!(self.mode, Mode::ListLoop | Mode::ListEndless) => {
                ListPage { entries: Vec::new(), next: None }
            }
            other => other?,
        };
        match self.mode {
            // Always "more", always the same token.
            Mode::ListLoop => page.next = Some(format!("{path}/loop")),
            // A fresh page of fresh children after every token, forever.
            Mode::ListEndless => {
                let n = self.counter.get() + 1;
                self.counter.set(n);
                page.entries = (0..limit.clamp(1, 1000)).map(|i| format!("{path}/endless-{n}-{i}")).collect();
                page.next = Some(format!("{path}/endless-{n}"));
            }
            _ => {}
        }
        Ok(page)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        self.inner.rename(from, to)
    }

    fn delete(&self, path: &Path) -> Result<(), StorageError> {
        self.inner.delete(path)
    }
}

berth_plugin_sdk::export_storage_driver!(Hostile);
berth_plugin_sdk::declare_stateless!();
