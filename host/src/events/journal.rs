//! The outbox's write-ahead journal: a push, delete or mount event is appended here (one
//! `write`, no sync of its own when the request's storage sync covers this file) before the
//! client's answer, and the outbox's redb file takes it over later, in a group, with one commit
//! for hundreds of events. A redb commit costs two `fdatasync`s; a record here costs none when
//! the filesystem driver's `syncfs` for the push itself flushes it (same filesystem), else one
//! `fdatasync` shared by every request waiting at that moment.
//!
//! Segments are `journal-<n>.log`, records `[len u32][crc32 u32][seq u64][record]` (little
//! endian; the CRC covers seq and record). A torn record ends a segment's replay: it was never
//! acknowledged. A segment goes once redb holds everything in it durably; a new one is started
//! by the outbox's writer thread (never on a request's path) when the current one is big.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A segment is retired (synced, replaced by a new one) past this size, so that what redb
/// already holds can be deleted while events keep arriving.
const ROTATE_BYTES: u64 = 4 << 20;

/// Bytes before each record: length, CRC, sequence number.
const HEADER: usize = 16;

/// A record longer than this is taken as garbage at replay (events are under a few KiB; this
/// bounds what a corrupt length can make replay allocate).
const MAX_RECORD: usize = 16 << 20;

struct Segment {
    path: PathBuf,
    /// The highest sequence number written to it (0: none).
    max_seq: u64,
}

struct Current {
    file: File,
    segment: Segment,
    bytes: u64,
}

struct State {
    current: Current,
    /// Retired segments (synced), oldest first.
    retired: Vec<Segment>,
    /// The highest sequence number written.
    written: u64,
    /// The number the next segment is named by.
    next_name: u64,
}

pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held while syncing, so that requests arriving meanwhile share the next sync.
    syncing: Mutex<()>,
    /// Every record up to here is on stable storage through this journal's own syncs.
    synced: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn segment_name(n: u64) -> String {
    format!("journal-{n:016x}.log")
}

fn crc(seq: u64, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(record);
    h.finalize()
}

/// The records of one segment up to its first torn or corrupt one.
fn read_segment(path: &Path) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= HEADER {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(buf[at + 4..at + 8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
        let body = at + HEADER;
        if len > MAX_RECORD || buf.len() - body < len || crc(seq, &buf[body..body + len]) != sum {
            tracing::warn!(path = %path.display(), offset = at, "event journal: torn record, replay stops here");
            break;
        }
        out.push((seq, buf[body..body + len].to_vec()));
        at = body + len;
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens the journal in `dir` and returns what it holds (in sequence order), which the
    /// caller must make durable elsewhere before calling [`release`](Self::release) past it.
    /// Writing starts in a new segment: a torn end is never appended to.
    pub fn open(dir: &Path) -> io::Result<(Journal, Vec<(u64, Vec<u8>)>)> {
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let n = u64::from_str_radix(name.strip_prefix("journal-")?.strip_suffix(".log")?, 16).ok()?;
                Some((n, e.path()))
            })
            .collect();
        names.sort();
        let mut records = Vec::new();
        let mut retired = Vec::new();
        for (_, path) in &names {
            let held = read_segment(path)?;
            let max_seq = held.iter().map(|(s, _)| *s).max().unwrap_or(0);
            records.extend(held);
            retired.push(Segment { path: path.clone(), max_seq });
        }
        records.sort_by_key(|(s, _)| *s);
        records.dedup_by_key(|(s, _)| *s);
        let next_name = names.last().map_or(0, |(n, _)| n + 1);
        let current = Self::create(dir, next_name)?;
        let written = records.last().map_or(0, |(s, _)| *s);
        let journal = Journal {
            dir: dir.to_path_buf(),
            state: Mutex::new(State { current, retired, written, next_name: next_name + 1 }),
            syncing: Mutex::new(()),
            synced: AtomicU64::new(written),
        };
        Ok((journal, records))
    }

    /// A new empty segment, its directory entry durable (a record synced into a file whose
    /// name could vanish in a crash would be lost).
    fn create(dir: &Path, n: u64) -> io::Result<Current> {
        let path = dir.join(segment_name(n));
        let file = File::options().create_new(true).append(true).open(&path)?;
        sync_dir(dir)?;
        Ok(Current { file, segment: Segment { path, max_seq: 0 }, bytes: 0 })
    }

    /// Appends records with one `write`. Callers write in sequence order (the outbox holds its
    /// tail's lock), so "written up to n" means every record up to n.
    pub fn write<'a>(&self, records: impl IntoIterator<Item = (u64, &'a [u8])>) -> io::Result<()> {
        let mut buf = Vec::with_capacity(1024);
        let mut last = 0;
        for (seq, record) in records {
            buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc(seq, record).to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(record);
            last = seq;
        }
        if buf.is_empty() {
            return Ok(());
        }
        let mut s = lock(&self.state);
        let before = s.current.bytes;
        if let Err(e) = s.current.file.write_all(&buf) {
            // A partial record would end the segment's replay early: cut it off.
            let _ = s.current.file.set_len(before);
            return Err(e);
        }
        s.current.bytes += buf.len() as u64;
        s.current.segment.max_seq = s.current.segment.max_seq.max(last);
        s.written = s.written.max(last);
        Ok(())
    }

    /// Returns once every record up to `seq` is on stable storage, sharing one `fdatasync`
    /// with every caller waiting meanwhile. Blocking.
    pub fn sync(&self, seq: u64) -> io::Result<()> {
        if self.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _turn = lock(&self.syncing);
        if self.synced.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let (file, upto) = {
            let s = lock(&self.state);
            (s.current.file.try_clone()?, s.written)
        };
        file.sync_data()?;
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Everything up to `seq` is durable elsewhere (redb): deletes the segments wholly before
    /// it, and retires the current one first when it is big. Called by the outbox's writer.
    pub fn release(&self, seq: u64) -> io::Result<()> {
        let big = lock(&self.state).current.bytes >= ROTATE_BYTES;
        if big {
            // Under `syncing`, so that a waiter whose record is in the retiring segment sees
            // it synced before it looks.
            let _turn = lock(&self.syncing);
            let n = lock(&self.state).next_name;
            let fresh = Self::create(&self.dir, n)?;
            let (old, upto) = {
                let mut s = lock(&self.state);
                s.next_name += 1;
                (std::mem::replace(&mut s.current, fresh), s.written)
            };
            old.file.sync_data()?;
            self.synced.fetch_max(upto, Ordering::AcqRel);
            lock(&self.state).retired.push(old.segment);
        }
        let gone: Vec<PathBuf> = {
            let mut s = lock(&self.state);
            let (gone, kept) = std::mem::take(&mut s.retired).into_iter().partition(|g| g.max_seq <= seq);
            s.retired = kept;
            gone.into_iter().map(|g: Segment| g.path).collect()
        };
        for path in gone {
            // A segment left behind by a crash here replays as records redb already has.
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Segment files on disk (for tests and `/debug/vars`).
    pub fn segments(&self) -> usize {
        let s = lock(&self.state);
        s.retired.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_in_order_and_stops_at_a_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let (j, held) = Journal::open(dir.path()).unwrap();
        assert!(held.is_empty());
        j.write([(1, b"one".as_slice()), (2, b"two".as_slice())]).unwrap();
        j.write([(4, b"four".as_slice())]).unwrap();
        j.sync(4).unwrap();
        let path = lock(&j.state).current.segment.path.clone();
        drop(j);
        // A crash in the middle of a write: half a record at the end.
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let (j, held) = Journal::open(dir.path()).unwrap();
        assert_eq!(held, vec![(1, b"one".to_vec()), (2, b"two".to_vec()), (4, b"four".to_vec())]);
        // Written after the restart: a new segment, not after the torn bytes.
        j.write([(5, b"five".as_slice())]).unwrap();
        drop(j);
        let (_, held) = Journal::open(dir.path()).unwrap();
        assert_eq!(held.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 4, 5]);
    }

    #[test]
    fn a_corrupt_record_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        j.write([(1, b"one".as_slice()), (2, b"two".as_slice())]).unwrap();
        let path = lock(&j.state).current.segment.path.clone();
        drop(j);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let (_, held) = Journal::open(dir.path()).unwrap();
        assert_eq!(held, vec![(1, b"one".to_vec())]);
    }

    #[test]
    fn released_segments_are_deleted_and_big_ones_retired() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(dir.path()).unwrap();
        let big = vec![7u8; ROTATE_BYTES as usize];
        j.write([(1, big.as_slice())]).unwrap();
        // Not yet durable elsewhere: retired (a new segment for what comes), not deleted.
        j.release(0).unwrap();
        assert_eq!(j.segments(), 2);
        j.write([(2, b"two".as_slice())]).unwrap();
        j.release(1).unwrap();
        assert_eq!(j.segments(), 1);
        drop(j);
        let (_, held) = Journal::open(dir.path()).unwrap();
        assert_eq!(held, vec![(2, b"two".to_vec())]);
    }
}
