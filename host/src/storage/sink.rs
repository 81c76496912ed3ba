//! Where the filesystem driver's writer thread puts bytes: straight to the device with
//! `O_DIRECT` when the file offset allows it, through the page cache otherwise.
//!
//! An upload must be on stable storage before its blob becomes visible. Through the page cache
//! that means the kernel's writeback of every dirty page before the final fsync, which on the
//! machines measured ran at a third of what the device takes with direct writes. Direct writes
//! need block-aligned buffers, offsets and lengths, so whole blocks go direct and the unaligned
//! tail goes through the page cache at commit, followed by one `fdatasync`.

use std::fs::File;
use std::io::Write;

/// Alignment for direct I/O (a multiple of every common logical block size).
const ALIGN: usize = 4096;
/// Bytes gathered before one direct write.
const DIRECT_CHUNK: usize = 1 << 20;
/// In page-cache mode, how far writes get ahead of the disk before writeback is started.
const WRITEBACK_STEP: u64 = 16 << 20;

pub(super) struct Sink {
    file: File,
    /// Bytes in the file so far.
    written: u64,
    /// Page-cache mode: offset up to which writeback has been started.
    flushed: u64,
    direct: Option<DirectBuf>,
}

/// A block-aligned staging buffer for direct writes.
struct DirectBuf {
    raw: Vec<u8>,
    offset: usize,
    fill: usize,
}

impl DirectBuf {
    fn new() -> Self {
        let raw = vec![0u8; DIRECT_CHUNK + ALIGN];
        let offset = raw.as_ptr().align_offset(ALIGN);
        DirectBuf { raw, offset, fill: 0 }
    }

    fn buf(&mut self) -> &mut [u8] {
        &mut self.raw[self.offset..self.offset + DIRECT_CHUNK]
    }
}

impl Sink {
    /// `file` was opened for writing (appending if resuming) and holds `start` bytes.
    pub fn new(file: File, start: u64) -> Sink {
        let direct = (mode() != Mode::Buffered && start % ALIGN as u64 == 0 && set_direct(&file, true))
            .then(DirectBuf::new);
        Sink { file, written: start, flushed: start, direct }
    }

    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        if self.direct.is_none() {
            self.file.write_all(data)?;
            self.written += data.len() as u64;
            if self.written - self.flushed >= WRITEBACK_STEP {
                start_writeback(&self.file, self.flushed, self.written - self.flushed);
                self.flushed = self.written;
            }
            return Ok(());
        }
        while !data.is_empty() {
            let d = self.direct.as_mut().expect("direct mode");
            let n = data.len().min(DIRECT_CHUNK - d.fill);
            let fill = d.fill;
            d.buf()[fill..fill + n].copy_from_slice(&data[..n]);
            d.fill += n;
            data = &data[n..];
            if d.fill == DIRECT_CHUNK {
                self.flush_direct(DIRECT_CHUNK)?;
            }
        }
        Ok(())
    }

    /// Writes the first `len` (block-aligned) staged bytes directly and keeps the rest.
    fn flush_direct(&mut self, len: usize) -> std::io::Result<()> {
        let d = self.direct.as_mut().expect("direct mode");
        if len > 0 {
            let start = d.offset;
            let n = self.file.write(&d.raw[start..start + len])?;
            if n != len {
                return Err(std::io::Error::other(format!("short direct write: {n} of {len} bytes")));
            }
            d.raw.copy_within(start + len..start + d.fill, start);
            d.fill -= len;
            self.written += len as u64;
        }
        Ok(())
    }

    /// Writes out everything staged: aligned blocks directly, the tail through the page cache.
    fn drain(&mut self) -> std::io::Result<()> {
        if let Some(fill) = self.direct.as_ref().map(|d| d.fill) {
            self.flush_direct(fill / ALIGN * ALIGN)?;
            set_direct(&self.file, false);
            let d = self.direct.take().expect("direct mode");
            self.file.write_all(&d.raw[d.offset..d.offset + d.fill])?;
            self.written += d.fill as u64;
        }
        Ok(())
    }

    /// Everything durable. Returns a `Prefetch` to run once the caller has been answered.
    pub fn commit(mut self) -> std::io::Result<Prefetch> {
        let was_direct = self.direct.is_some();
        self.drain()?;
        self.file.sync_data()?;
        Ok(Prefetch(was_direct.then_some(self.file)))
    }

    /// Drops what this writer added since `start`.
    pub fn cancel(self, start: u64) -> std::io::Result<()> {
        self.file.set_len(start)
    }

    /// The writer went away without commit or cancel (its request died): keep what arrived, so
    /// the file's size stays the truth about the upload.
    pub fn abandon(mut self) -> std::io::Result<()> {
        self.drain()
    }
}

/// Direct writes leave nothing in the page cache, but a blob just pushed is usually pulled
/// soon (a CI job pushes, a deploy pulls): ask the kernel to read it back in the background, as
/// a page-cache write would have left it.
pub(super) struct Prefetch(Option<File>);

impl Prefetch {
    pub fn run(self) {
        if let Some(file) = self.0 {
            if mode() == Mode::Readback {
                read_back(&file);
            } else {
                prefetch(&file);
            }
        }
    }
}

/// EXPERIMENT (issue 13): how uploads are written, from `BERTH_FS_WRITES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Buffered,
    Readback,
}

fn mode() -> Mode {
    static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("BERTH_FS_WRITES").as_deref() {
        Ok("buffered") => Mode::Buffered,
        Ok("readback") => Mode::Readback,
        _ => Mode::Direct,
    })
}

/// Reads the whole file through the page cache, so the next reader finds it there.
fn read_back(file: &File) {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while let Ok(n) = file.read_at(&mut buf, off) {
        if n == 0 {
            break;
        }
        off += n as u64;
    }
}

/// Asks the kernel to read a file into the page cache in the background.
pub(super) fn prefetch(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: advice on an open descriptor; it only schedules readahead.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Turns `O_DIRECT` on or off for an open file; false where the filesystem refuses it.
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, reading and setting status flags only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return false;
        }
        let flags = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
        libc::fcntl(fd, libc::F_SETFL, flags) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_file: &File, _on: bool) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor and a byte range; the call only schedules writeback.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[test]
    fn direct_and_buffered_write_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 * DIRECT_CHUNK + 12_345);
        for (name, start) in [("aligned", 0usize), ("unaligned", 10)] {
            let path = dir.path().join(name);
            std::fs::write(&path, pattern(start)).unwrap();
            let f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            let mut sink = Sink::new(f, start as u64);
            for chunk in data.chunks(65_521) {
                sink.write(chunk).unwrap();
            }
            sink.commit().unwrap().run();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got.len(), start + data.len(), "{name}");
            assert_eq!(&got[start..], &data[..], "{name}");
        }
    }

    #[test]
    fn cancel_and_abandon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::File::create(&path).unwrap();
        let mut sink = Sink::new(f, 0);
        sink.write(&pattern(DIRECT_CHUNK + 5)).unwrap();
        sink.abandon().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), pattern(DIRECT_CHUNK + 5));
        let f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut sink = Sink::new(f, (DIRECT_CHUNK + 5) as u64);
        sink.write(b"more").unwrap();
        sink.cancel((DIRECT_CHUNK + 5) as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), DIRECT_CHUNK + 5);
    }
}
