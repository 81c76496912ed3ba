//! Where the filesystem driver's writer thread puts bytes: the first `warm` bytes of an upload
//! through the page cache, the rest straight to the device with `O_DIRECT`.
//!
//! An upload must be on stable storage before its blob becomes visible, and a blob just pushed
//! is usually pulled at once (a CI job pushes, a deploy pulls). Through the page cache, durability
//! means the kernel's writeback of every dirty page before the final `fdatasync`, which on the
//! machines measured ran at a third of what the device takes with direct writes, and gets slower
//! as the cache grows; but the pages stay cached, so the first pull costs what the second does.
//! Direct writes are fast and leave the cache alone, but the first pull then reads the disk
//! (`bench/firstpull.sh`: 8 x 128 MiB pulled right after their push took 1.8-3x the second pull;
//! asking the kernel to read the blob back after commit, or reading it back ourselves, does not
//! finish before the pull starts and only competes with it). So an upload's first `warm` bytes
//! (256 MiB by default, `storage.filesystem.warmbytes`) go through the cache, with writeback
//! started every 16 MiB so the final sync has little left to do; a larger blob's remainder goes
//! direct, where the cache would only be churned by a layer too big to keep. Direct writes need
//! block-aligned buffers, offsets and lengths, so the switch happens at a block boundary and the
//! unaligned tail goes through the page cache at commit, followed by one `fdatasync`.

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
    /// Bytes of the file written through the page cache before switching to direct writes.
    warm: u64,
    /// The filesystem refused `O_DIRECT`: everything goes through the page cache.
    refused: bool,
    /// Where direct writes began, if they did (the part a pull will read from the device).
    direct_from: Option<u64>,
    direct: Option<DirectBuf>,
}

/// The default of `storage.filesystem.warmbytes`.
pub const DEFAULT_WARM_BYTES: u64 = 256 << 20;

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
    /// `file` was opened for writing (appending if resuming) and holds `start` bytes; its first
    /// `warm` bytes are written through the page cache.
    pub fn new(file: File, start: u64, warm: u64) -> Sink {
        Sink { file, written: start, flushed: start, warm, refused: false, direct_from: None, direct: None }
    }

    /// How many more bytes go through the page cache before direct writes are tried: up to the
    /// warm limit, then on to the next block boundary; all of them once direct writes were refused.
    fn cached_room(&self) -> u64 {
        if self.refused {
            u64::MAX
        } else if self.written < self.warm {
            self.warm - self.written
        } else {
            (ALIGN as u64 - self.written % ALIGN as u64) % ALIGN as u64
        }
    }

    /// At a block boundary past the warm prefix: switch to direct writes, where the
    /// filesystem allows them.
    fn go_direct(&mut self) {
        if set_direct(&self.file, true) {
            self.direct = Some(DirectBuf::new());
            self.direct_from = Some(self.written);
        } else {
            self.refused = true;
        }
    }

    pub fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while self.direct.is_none() && !data.is_empty() {
            let room = self.cached_room();
            if room == 0 {
                self.go_direct();
                continue;
            }
            let n = room.min(data.len() as u64) as usize;
            self.file.write_all(&data[..n])?;
            self.written += n as u64;
            data = &data[n..];
            if self.written - self.flushed >= WRITEBACK_STEP {
                start_writeback(&self.file, self.flushed, self.written - self.flushed);
                self.flushed = self.written;
            }
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
        let direct_from = self.direct.as_ref().and(self.direct_from);
        self.drain()?;
        self.file.sync_data()?;
        Ok(Prefetch(direct_from.map(|from| (self.file, from))))
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

/// Direct writes leave nothing in the page cache: ask the kernel to read that part back in the
/// background, in case the pull comes later than at once.
pub(super) struct Prefetch(Option<(File, u64)>);

impl Prefetch {
    pub fn run(self) {
        if let Some((file, from)) = self.0 {
            prefetch(&file, from);
        }
    }
}

/// Asks the kernel to read a file from `from` on into the page cache in the background.
pub(super) fn prefetch(file: &File, from: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: advice on an open descriptor; it only schedules readahead.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), from as i64, 0, libc::POSIX_FADV_WILLNEED);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from);
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
        let cases = [
            ("direct", 0usize, 0u64),
            ("direct-unaligned", 10, 0),
            ("warm-prefix-then-direct", 0, DIRECT_CHUNK as u64 + 7),
            ("all-warm", 10, u64::MAX),
        ];
        for (name, start, warm) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, pattern(start)).unwrap();
            let f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            let mut sink = Sink::new(f, start as u64, warm);
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
        let mut sink = Sink::new(f, 0, 0);
        sink.write(&pattern(DIRECT_CHUNK + 5)).unwrap();
        sink.abandon().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), pattern(DIRECT_CHUNK + 5));
        let f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut sink = Sink::new(f, (DIRECT_CHUNK + 5) as u64, 0);
        sink.write(b"more").unwrap();
        sink.cancel((DIRECT_CHUNK + 5) as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), DIRECT_CHUNK + 5);
    }
}
