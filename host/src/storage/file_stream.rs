//! A file streamed to an async reader from a blocking thread, a few chunks ahead of it.
//!
//! A client that stops reading its download must cost neither a thread nor memory for as long
//! as it holds the connection. When the reader takes nothing for [`PARK_AFTER`], the thread
//! lets go of every chunk it read ahead and ends (the reading parks: it is only a position
//! now); the reader starts a thread again, from the first byte it has not taken, when it wants
//! more. tokio's blocking pool has 512 threads that every filesystem operation shares, so a
//! thread held per stalled download let 512 clients stop the registry; and the chunks held
//! came to about 1 MiB per stalled download (1,000 of them: 1 GiB). Now it is about 180 KiB,
//! most of it the chunk its connection is writing.
//!
//! Chunks start small and double up to [`READ_CHUNK`] while the reader keeps taking them; a
//! reading that parked starts small again. So a fast download is about 8,000 chunks a GB, and
//! a client that reads slowly or not at all holds about one small chunk.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;

use super::parking::PARK_AFTER;
use super::{ByteStream, Result, StorageError};

/// The largest chunk. A stalled client's connection holds the one it is writing: at 256 KiB a
/// stalled download held about 300 KiB, at 128 KiB 180 KiB, at 64 KiB 146 KiB. Blob GET ran at
/// the same rate with each (about 2.3 GB/s on 2 CPUs; runs spread ±15%).
const READ_CHUNK: usize = 128 << 10;

/// The first chunk, and the first after a reading parked: what a stalled client's connection
/// holds when it stalls early or again.
const FIRST_CHUNK: usize = 32 << 10;

/// Chunks read ahead of the reader: the disk works while the network sends.
const AHEAD: usize = 2;

/// The file as a stream of chunks from `offset` (already checked to be within it). An `Arc`, as
/// a storage plugin hands its file over; reads go through `&File`.
pub fn stream(file: Arc<std::fs::File>, offset: u64, path: &str) -> ByteStream {
    Box::pin(file_stream(file, offset, path))
}

fn file_stream(file: Arc<std::fs::File>, offset: u64, path: &str) -> FileStream {
    let shared = Arc::new(Shared {
        file,
        path: path.to_string(),
        state: Mutex::new(State {
            ahead: VecDeque::with_capacity(AHEAD),
            taken_to: offset,
            read_to: offset,
            chunk: FIRST_CHUNK,
            end: None,
            running: true,
            waker: None,
            pump_waits: false,
            reader_gone: false,
        }),
        taken: Condvar::new(),
    });
    let s = shared.clone();
    tokio::task::spawn_blocking(move || pump(&s));
    FileStream { shared }
}

/// What the reading thread and the reader share.
struct Shared {
    file: Arc<std::fs::File>,
    path: String,
    state: Mutex<State>,
    /// Signalled when the reader takes a chunk or leaves.
    taken: Condvar,
}

struct State {
    /// Chunks read and not yet taken, oldest first.
    ahead: VecDeque<Bytes>,
    /// The offset of the first byte not taken: where a parked reading goes on from.
    taken_to: u64,
    /// Where the next read starts.
    read_to: u64,
    /// How much the next read asks for.
    chunk: usize,
    /// Set when no chunk follows those in `ahead`: the file ended (`None`) or a read failed.
    end: Option<Option<StorageError>>,
    /// A thread is reading (false: the reading is parked, or has ended).
    running: bool,
    /// The reader, waiting for a chunk.
    waker: Option<Waker>,
    /// The thread is waiting for room (a signal on `taken` is wanted: it costs a system call).
    pump_waits: bool,
    reader_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `len` bytes at `at`, fewer only where the file ends. Positioned reads (`pread`):
    /// the file's own position is never used, so readings that share an open file (a plugin
    /// may hand over one description twice) cannot move each other's.
    fn read(&self, at: u64, len: usize) -> Result<Bytes> {
        use std::os::fd::AsRawFd;
        let fd = self.file.as_raw_fd();
        let mut buf = Vec::<u8>::with_capacity(len);
        while buf.len() < len {
            let filled = buf.len();
            let Ok(offset) = libc::off_t::try_from(at + filled as u64) else { break };
            // Into the buffer's spare capacity, so it is never zeroed first.
            // SAFETY: `pread` writes at most `len - filled` bytes, all within the capacity
            // reserved above, and only the bytes it reports written are counted as initialised.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().add(filled).cast(), len - filled, offset) };
            match n {
                0 => break,
                // SAFETY: `pread` initialised these `n` bytes.
                n if n > 0 => unsafe { buf.set_len(filled + n as usize) },
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(StorageError::io(&self.path, e));
                    }
                }
            }
        }
        Ok(Bytes::from(buf))
    }
}

/// The reading thread: reads and hands over chunks until the file ends and the reader has
/// taken them all, the reader leaves, or the reader takes nothing for [`PARK_AFTER`] while
/// `AHEAD` chunks wait, or while the last ones do (then it parks).
fn pump(shared: &Shared) {
    loop {
        let (at, len) = {
            let st = shared.lock();
            if st.reader_gone {
                return;
            }
            (st.read_to, st.chunk)
        };
        let read = shared.read(at, len);
        let Some(mut st) = taken_down_to(shared, AHEAD - 1) else { return };
        let failed = match read {
            Ok(b) => {
                let n = b.len();
                if n > 0 {
                    st.ahead.push_back(b);
                    st.read_to = at + n as u64;
                }
                if n < len {
                    st.end = Some(None);
                }
                st.chunk = (len * 2).min(READ_CHUNK);
                false
            }
            Err(e) => {
                st.end = Some(Some(e));
                true
            }
        };
        let ended = st.end.is_some();
        if failed {
            st.running = false;
        }
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        if failed {
            return;
        }
        if ended {
            // Every chunk is read, but a client that stopped reading would keep the last ones
            // here: wait for them to be taken as for room, and park if they are not (the end
            // is found again when the reader comes back).
            if let Some(mut st) = taken_down_to(shared, 0) {
                st.running = false;
            }
            return;
        }
    }
}

/// The state, locked once at most `most` chunks wait in `ahead`; or none, the reader gone, or
/// the reading parked because it took nothing for [`PARK_AFTER`]: everything read ahead (and
/// the end, if found) let go, the reading only a position now.
fn taken_down_to(shared: &Shared, most: usize) -> Option<MutexGuard<'_, State>> {
    let mut st = shared.lock();
    let deadline = Instant::now() + PARK_AFTER;
    loop {
        if st.reader_gone {
            return None;
        }
        if st.ahead.len() <= most {
            return Some(st);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            st.ahead.clear();
            st.read_to = st.taken_to;
            st.end = None;
            st.chunk = FIRST_CHUNK;
            st.running = false;
            return None;
        }
        st.pump_waits = true;
        st = shared.taken.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0;
        st.pump_waits = false;
    }
}

/// The reader's end.
struct FileStream {
    shared: Arc<Shared>,
}

impl Stream for FileStream {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let mut st = self.shared.lock();
        if let Some(b) = st.ahead.pop_front() {
            st.taken_to += b.len() as u64;
            let signal = st.pump_waits;
            drop(st);
            if signal {
                self.shared.taken.notify_one();
            }
            return Poll::Ready(Some(Ok(b)));
        }
        if let Some(end) = st.end.as_mut() {
            return Poll::Ready(end.take().map(Err));
        }
        if !st.running {
            // Every chunk taken and the reading parked: it goes on now.
            st.running = true;
            let s = self.shared.clone();
            tokio::task::spawn_blocking(move || pump(&s));
        }
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for FileStream {
    /// The reader left: what was read ahead goes, and a running thread ends at its next look.
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.reader_gone = true;
        st.ahead.clear();
        let signal = st.pump_waits;
        drop(st);
        if signal {
            self.shared.taken.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn file_of(len: usize) -> (tempfile::TempDir, Arc<std::fs::File>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        (dir, Arc::new(std::fs::File::open(&path).unwrap()), data)
    }

    impl FileStream {
        /// The reading is parked, and holds no chunk.
        fn parked_holding_nothing(&self) -> bool {
            let st = self.shared.lock();
            !st.running && st.end.is_none() && st.ahead.is_empty()
        }
    }

    /// Chunks grow while the reader keeps up; a pause parks the reading, which lets go of what
    /// it read ahead and goes on from the first byte not taken, small again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_grow_while_taken_and_start_small_after_a_pause() {
        let (_dir, file, data) = file_of(8 * READ_CHUNK);
        let mut s = file_stream(file, 0, "/f");
        let mut sizes = Vec::new();
        let mut got = Vec::new();
        for _ in 0..5 {
            let b = s.next().await.unwrap().unwrap();
            sizes.push(b.len());
            got.extend_from_slice(&b);
        }
        assert_eq!(sizes, [FIRST_CHUNK, 2 * FIRST_CHUNK, 4 * FIRST_CHUNK, READ_CHUNK, READ_CHUNK]);
        tokio::time::sleep(PARK_AFTER * 3).await;
        assert!(s.parked_holding_nothing());
        let b = s.next().await.unwrap().unwrap();
        assert_eq!(b.len(), FIRST_CHUNK);
        got.extend_from_slice(&b);
        while let Some(b) = s.next().await {
            got.extend_from_slice(&b.unwrap());
        }
        assert_eq!(got, data);
    }

    /// A reader that stops before taking the last chunks: they are not kept for it either; it
    /// comes back to the rest and the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_chunks_are_let_go_too() {
        let (_dir, file, data) = file_of(FIRST_CHUNK * 5);
        let mut s = file_stream(file, 0, "/f");
        let mut got = s.next().await.unwrap().unwrap().to_vec();
        tokio::time::sleep(PARK_AFTER * 3).await;
        assert!(s.parked_holding_nothing());
        while let Some(b) = s.next().await {
            got.extend_from_slice(&b.unwrap());
        }
        assert_eq!(got, data);
        assert!(s.next().await.is_none());
    }

    /// Many readers at once, each pausing now and then around the time a reading parks (so
    /// parking and going on race with taking): every one gets every byte, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn readers_pausing_at_random_all_get_every_byte() {
        let (_dir, file, data) = file_of(3 * READ_CHUNK + 1234);
        let data = Arc::new(data);
        let readers: Vec<_> = (0..48u64)
            .map(|r| {
                let (file, data) = (file.clone(), data.clone());
                tokio::spawn(async move {
                    let offset = r * 1000;
                    let mut s = file_stream(file, offset, "/f");
                    let mut got = Vec::new();
                    let mut step = r;
                    while let Some(b) = s.next().await {
                        got.extend_from_slice(&b.unwrap());
                        // A pause of 0 to 2 x PARK_AFTER, different for each reader and chunk.
                        step = step.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        let pause = PARK_AFTER.mul_f64((step >> 33) as f64 / (1u64 << 31) as f64 * 2.0);
                        tokio::time::sleep(pause).await;
                    }
                    assert!(got == data[offset as usize..], "reader {r} got {} bytes, not its part", got.len());
                })
            })
            .collect();
        for r in readers {
            r.await.unwrap();
        }
    }

    /// A reader that stops taking chunks: the reading parks (no thread waits for it) and goes
    /// on when the reader comes back, every byte in order from the offset.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_pauses_parks_the_reading_and_gets_every_byte() {
        let len = 5 * READ_CHUNK + 17;
        let (_dir, file, data) = file_of(len);
        let mut s = file_stream(file, 100, "/f");
        let mut got = Vec::new();
        let mut parked = 0;
        while let Some(chunk) = s.next().await {
            got.extend_from_slice(&chunk.unwrap());
            tokio::time::sleep(PARK_AFTER * 3).await;
            parked += usize::from(s.parked_holding_nothing());
        }
        assert_eq!(got, &data[100..]);
        assert!(parked >= 2, "parked at {parked} pauses");
    }

    /// A reader that keeps taking: nothing parks, and the end is where the file ends (a last
    /// chunk exactly `READ_CHUNK` long, then none).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steady_reader_reads_to_the_end() {
        let (_dir, file, data) = file_of(3 * READ_CHUNK);
        let mut s = file_stream(file, 0, "/f");
        let mut got = Vec::new();
        while let Some(chunk) = s.next().await {
            got.extend_from_slice(&chunk.unwrap());
            assert!(!s.parked_holding_nothing());
        }
        assert_eq!(got, data);
    }

    /// A reader that goes away while the reading is parked or running ends it: the channel
    /// closes and the file is let go (no thread left behind).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_leaves_ends_the_reading() {
        let (_dir, file, _) = file_of(8 * READ_CHUNK);
        let mut s = file_stream(file, 0, "/f");
        s.next().await.unwrap().unwrap();
        tokio::time::sleep(PARK_AFTER * 3).await;
        let shared = Arc::downgrade(&s.shared);
        assert!(s.parked_holding_nothing());
        drop(s);
        assert!(shared.upgrade().is_none(), "the parked reading outlived its reader");
    }
}
