//! A file streamed to an async reader from a blocking thread, in large chunks through a small
//! channel. When the reader stops taking chunks (a client that stopped reading its download),
//! the thread parks the file and the chunk in hand (`parking`) and ends, instead of waiting in
//! tokio's blocking pool; the reader starts a thread again when it wants more.

use std::io::{Read, Seek};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::parking::{Job, Parking, PARK_AFTER};
use super::{ByteStream, Result, StorageError};

/// Size of the chunks a reader sends: large, so a multi-GB/s download is a few thousand sends.
const READ_CHUNK: usize = 256 << 10;

/// Chunks read ahead of the reader: the disk works while the network sends.
const AHEAD: usize = 2;

/// The file as a stream of chunks from `offset` (already checked to be within it). An `Arc`, as
/// a storage plugin hands its file over; reads go through `&File`.
pub fn stream(file: Arc<std::fs::File>, offset: u64, path: &str) -> ByteStream {
    Box::pin(file_stream(file, offset, path))
}

fn file_stream(file: Arc<std::fs::File>, offset: u64, path: &str) -> FileStream {
    let (tx, rx) = mpsc::channel(AHEAD);
    let pump = Pump { file, seek_to: offset, path: path.to_string(), in_hand: None, tx };
    FileStream { rx, parking: Parking::start(pump) }
}

/// A reading in progress: the file, where it is, and a chunk read but not yet sent.
struct Pump {
    file: Arc<std::fs::File>,
    /// Where to seek before the first read (0: nothing to seek).
    seek_to: u64,
    path: String,
    in_hand: Option<Result<Bytes>>,
    /// Kept with the reading, parked or not, so the channel stays open until it ends.
    tx: mpsc::Sender<Result<Bytes>>,
}

impl Pump {
    /// The next chunk (`None`: the file ended) and whether it is the last.
    fn next(&mut self) -> Option<(Result<Bytes>, bool)> {
        if let Some(item) = self.in_hand.take() {
            let last = item.as_ref().map_or(true, |b| b.len() < READ_CHUNK);
            return Some((item, last));
        }
        if self.seek_to > 0 {
            let at = std::mem::take(&mut self.seek_to);
            if let Err(e) = (&*self.file).seek(std::io::SeekFrom::Start(at)) {
                return Some((Err(StorageError::io(&self.path, e)), true));
            }
        }
        // `read_to_end` into reserved capacity fills the buffer without zeroing it first.
        let mut buf = Vec::with_capacity(READ_CHUNK);
        match (&*self.file).take(READ_CHUNK as u64).read_to_end(&mut buf) {
            Ok(0) => None,
            Ok(n) => Some((Ok(Bytes::from(buf)), n < READ_CHUNK)),
            Err(e) => Some((Err(StorageError::io(&self.path, e)), true)),
        }
    }
}

impl Job for Pump {
    /// Reads and sends until the file ends, the reader leaves, or the reader stops taking
    /// chunks for [`PARK_AFTER`] (then the reading parks; the reader looks for it once it has
    /// taken every chunk, so room in the channel is news).
    fn run(mut self, parking: &Arc<Parking<Self>>) {
        let handle = tokio::runtime::Handle::current();
        loop {
            let Some((item, last)) = self.next() else { return };
            // Sent at once, or once there is room within PARK_AFTER; else parked.
            let sent = match self.tx.try_reserve() {
                Ok(permit) => {
                    permit.send(item);
                    Sent::Yes
                }
                Err(mpsc::error::TrySendError::Closed(())) => return,
                Err(mpsc::error::TrySendError::Full(())) => {
                    match handle.block_on(tokio::time::timeout(PARK_AFTER, self.tx.reserve())) {
                        Ok(Ok(permit)) => {
                            permit.send(item);
                            Sent::Yes
                        }
                        Ok(Err(_closed)) => return,
                        Err(_waited) => Sent::NoRoom(item),
                    }
                }
            };
            match sent {
                Sent::Yes if last => return,
                Sent::Yes => {}
                Sent::NoRoom(item) => {
                    self.in_hand = Some(item);
                    match parking.park(self, |p| p.tx.capacity() > 0) {
                        Some(resumed) => self = resumed,
                        None => return,
                    }
                }
            }
        }
    }
}

/// What became of a chunk.
enum Sent {
    Yes,
    /// The reader took nothing for [`PARK_AFTER`]: the chunk is still in hand.
    NoRoom(Result<Bytes>),
}

/// The reader's end.
struct FileStream {
    rx: mpsc::Receiver<Result<Bytes>>,
    parking: Arc<Parking<Pump>>,
}

impl Stream for FileStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        let polled = self.rx.poll_recv(cx);
        if polled.is_pending() {
            // Every chunk taken: a reading parked while the reader was away goes on now.
            self.parking.resume();
        }
        polled
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
            parked += usize::from(s.parking.is_parked());
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
            assert!(!s.parking.is_parked());
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
        let parking = Arc::downgrade(&s.parking);
        assert!(s.parking.is_parked());
        drop(s);
        assert!(parking.upgrade().is_none(), "the parked reading outlived its reader");
    }
}
