//! The durable outbox: events are appended to an in-memory tail and written to one redb file
//! beside the data by one thread that commits in groups; each endpoint's delivery task reads
//! from its own cursor, from the file and then from the tail. A push, delete or mount event is
//! also written to the journal (`journal`) before the answer: durable there at the cost of the
//! request's own storage sync, or of one `fdatasync` shared by every request waiting.
//!
//! redb rather than SQLite: pure Rust (no C library to build or link), one file, ACID commits
//! with one fsync each, ordered `u64` keys that make a log and its range reads trivial.
//!
//! Events are kept once, in order (`events`: sequence → action, media type, JSON), whoever
//! they are for; an event is let go once every endpoint that wants it is past it. A pull
//! event waits in the tail for the next commit (at most `lazy_flush`); when every endpoint that
//! wants it has taken it from the tail by then, it is never written at all, so a healthy
//! endpoint costs pulls no file writes. Push, delete and mount events are journaled before
//! `append` returns, and reach redb with a commit within `JOURNALED_FLUSH`. Each endpoint's
//! position lives in memory (`Position`) and is written with the next commit, so a crash can
//! only move a cursor back (an event sent again), never forward. When the outbox is over its
//! bounds at a commit, the oldest events go, counted as dropped for each endpoint that had not
//! taken them: no request ever waits for room. The writer thread and its commits are in
//! `writer`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::journal::Journal;
use super::record::Action;
use writer::{Take, Writer};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The most endpoints one outbox serves (a wanted-by mask is a `u64`).
pub const MAX_ENDPOINTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("event outbox {path}: {source}")]
    Open { path: PathBuf, source: Box<redb::Error> },
    #[error("event outbox: {0}")]
    Write(String),
    #[error("event outbox journal: {0}")]
    Journal(#[from] std::io::Error),
    #[error("event outbox is stopped")]
    Stopped,
    /// redb holds its file locked: another process (a replica on the same directory) has it.
    #[error("event outbox {path} is open in another process: give each Berth process its own notifications.outbox.directory (replicas sharing storage included)")]
    InUse { path: PathBuf },
}

/// An endpoint as the outbox sees it: which events it wants and how far it has taken them.
pub struct Position {
    pub name: String,
    wants: Box<dyn Fn(Action, &str) -> bool + Send + Sync>,
    /// The sequence number of the last event taken (delivered, skipped or dropped).
    at: AtomicU64,
    /// Events it never got because the outbox was full.
    pub dropped: AtomicU64,
}

impl Position {
    pub fn new(name: String, wants: impl Fn(Action, &str) -> bool + Send + Sync + 'static) -> Position {
        Position { name, wants: Box::new(wants), at: AtomicU64::new(0), dropped: AtomicU64::new(0) }
    }

    pub fn at(&self) -> u64 {
        self.at.load(Ordering::Acquire)
    }
}

/// One event to append: what filters need, which endpoints want it, and its JSON, written
/// straight into the record the outbox keeps (no buffer of its own first).
pub trait Append {
    fn action(&self) -> Action;
    fn media_type(&self) -> &str;
    /// [`Outbox::wanted_by`] for it: the caller asks once, to skip an event no endpoint wants.
    fn mask(&self) -> u64;
    /// About how long its JSON is: room is made for this much before `write_json`.
    fn json_len(&self) -> usize;
    /// Appends its JSON to `out`.
    fn write_json(&self, out: &mut BytesMut);
}

/// An event whose JSON is already made (the outbox's own tests).
#[cfg(test)]
pub struct Entry<'a> {
    pub action: Action,
    pub media_type: &'a str,
    pub mask: u64,
    pub json: &'a [u8],
}

#[cfg(test)]
impl Append for Entry<'_> {
    fn action(&self) -> Action {
        self.action
    }

    fn media_type(&self) -> &str {
        self.media_type
    }

    fn mask(&self) -> u64 {
        self.mask
    }

    fn json_len(&self) -> usize {
        self.json.len()
    }

    fn write_json(&self, out: &mut BytesMut) {
        out.extend_from_slice(self.json);
    }
}

/// Events pushed to the tail; what is left to wait for before they are durable as asked.
#[must_use = "events pushed with Flush::Now are durable only once `durable` returns"]
pub struct Appended {
    last: u64,
    /// To sync up to `last` (`Flush::Now`).
    journal: Option<Arc<Journal>>,
}

impl Appended {
    pub async fn durable(self) -> Result<(), OutboxError> {
        let Some(journal) = self.journal else { return Ok(()) };
        let last = self.last;
        tokio::task::spawn_blocking(move || journal.sync(last))
            .await
            .map_err(|e| OutboxError::Write(format!("journal sync task: {e}")))?
            .map_err(OutboxError::from)
    }
}

/// An event read back for delivery.
pub struct Stored {
    pub seq: u64,
    pub json: Bytes,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: u64,
    pub max_bytes: u64,
    /// How long events that need no sync before an answer (pulls) and cursor moves wait to be
    /// written with the next commit.
    pub lazy_flush: Duration,
}

/// How an append is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Written to redb with the next commit, within `lazy_flush` (pulls: a crash may lose
    /// them).
    Lazy,
    /// Journaled and synced (sharing the sync with every append waiting) before `append`
    /// returns.
    Now,
    /// Journaled; the caller's storage sync that follows makes it durable (the journal is on
    /// the filesystem that sync flushes), and the caller answers only after it.
    WithStorage,
}

/// How soon journaled events (and cursor moves) are committed to the file. They are durable
/// already, so this only bounds the journal and what a crash makes endpoints receive again; a
/// commit costs two `fdatasync`s that compete with the requests' own syncs.
const JOURNALED_FLUSH: Duration = Duration::from_secs(1);

/// A tail this long makes a commit at once, whatever is due: what every endpoint took goes,
/// and all of it is written if the rest would still be this long. It bounds memory between
/// commits.
const TAIL_COMMIT_EVENTS: usize = 16 << 10;

/// `Tail::told` bits: the writer was told of lazy events, of journaled ones, of a full tail.
const TOLD_LAZY: u8 = 1;
const TOLD_JOURNALED: u8 = 2;
const TOLD_FULL: u8 = 4;

/// What wakes the writer. Appends themselves go to the tail; the writer hears of the first of
/// each kind after each commit.
enum Msg {
    /// Commit (this much of) the tail now and say so (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Commit { take: Take, done: oneshot::Sender<Result<(), String>> },
    /// Stop without writing anything more, as a crash would (tests).
    #[cfg(test)]
    Crash,
    /// Something is in the tail, or a cursor moved: commit within this long.
    Due(Duration),
}

/// Held events, oldest first: `(seq, bytes, wanted-by mask)`.
#[derive(Default)]
struct Index {
    entries: VecDeque<(u64, u32, u64)>,
    bytes: u64,
}

/// An event appended and not yet committed: its record as the file stores it, in a chunk of
/// the thread that appended it.
#[derive(Clone)]
struct Fresh {
    seq: u64,
    mask: u64,
    record: Bytes,
    /// Where the JSON starts in `record`.
    json_at: usize,
    /// When it must be in the file if someone still wants it (`lazy_flush` or
    /// `JOURNALED_FLUSH` after its append).
    due: Instant,
}

impl Fresh {
    fn json(&self) -> Bytes {
        self.record.slice(self.json_at..)
    }
}

/// The size of the buffers events are copied into (one per appending thread, kept while it
/// fills: at most this much per worker thread): one allocation per few hundred events instead
/// of one per event, freed on whichever thread lets go of the last event in it.
const CHUNK_SIZE: usize = 64 << 10;

/// How many recent events `/debug/events` can show.
pub const RECENT: usize = 100;

/// The in-memory end of the log.
struct Tail {
    /// Every event up to here is committed (or was taken by everyone before it had to be).
    flushed: u64,
    /// The last sequence number given out.
    last: u64,
    /// Events after `flushed`, in order.
    fresh: VecDeque<Fresh>,
    /// The newest events let go of from `fresh` (for `/debug/events`, with `fresh`).
    recent: VecDeque<Fresh>,
    /// What the writer was told since its last commit took the tail (`TOLD_*`).
    told: u8,
}

pub struct Outbox {
    db: Arc<Database>,
    journal: Arc<Journal>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    /// How soon a pull's event must be committed (`Limits::lazy_flush`).
    lazy_flush: Duration,
    /// Set by `close`: appends are refused (checked without taking `tx`'s lock).
    stopped: std::sync::atomic::AtomicBool,
    /// A cursor moved since the writer last looked: the writer has been told (one message per
    /// commit, not one per delivered batch).
    cursor_moved: Arc<std::sync::atomic::AtomicBool>,
    /// The newest sequence number given out.
    head: AtomicU64,
    /// Delivery tasks waiting for `head` to move: an append wakes them only when there are
    /// some (most appends find every task busy delivering or lingering).
    sleepers: std::sync::atomic::AtomicUsize,
    arrived: tokio::sync::Notify,
    positions: Arc<[Arc<Position>]>,
    index: Arc<Mutex<Index>>,
    tail: Arc<Mutex<Tail>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Writes `e` as the file stores it (action, media type, JSON) at the end of `buf`; returns
/// where the JSON starts.
fn encode(buf: &mut BytesMut, e: &impl Append) -> usize {
    let mt = e.media_type().as_bytes();
    let mt_len = mt.len().min(u16::MAX as usize);
    buf.extend_from_slice(&[action_byte(e.action())]);
    buf.extend_from_slice(&(mt_len as u16).to_le_bytes());
    buf.extend_from_slice(&mt[..mt_len]);
    3 + mt_len
}

impl Tail {
    /// Lets go of the events up to `upto`, keeping the newest [`RECENT`] for `/debug/events`:
    /// moved there, so an event's shared chunk is not counted again on its way in and out.
    fn retire(&mut self, upto: u64) {
        while self.fresh.front().is_some_and(|f| f.seq <= upto) {
            let f = self.fresh.pop_front().expect("a front was seen");
            if self.recent.len() == RECENT {
                self.recent.pop_front();
            }
            self.recent.push_back(f);
        }
    }
}

/// Copies `e` into this thread's chunk (a new one when it is full) and returns its record and
/// where its JSON starts. Per thread and before the tail's lock: concurrent appends neither
/// wait for each other's copies nor write into the same memory.
fn record(e: &impl Append) -> (Bytes, usize) {
    thread_local! {
        static CHUNK: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    CHUNK.with_borrow_mut(|chunk| {
        let need = 3 + e.media_type().len().min(u16::MAX as usize) + e.json_len();
        if chunk.capacity() - chunk.len() < need {
            *chunk = BytesMut::with_capacity(CHUNK_SIZE.max(need));
        }
        let json_at = encode(chunk, e);
        e.write_json(chunk);
        (chunk.split().freeze(), json_at)
    })
}

fn action_byte(a: Action) -> u8 {
    match a {
        Action::Push => 0,
        Action::Pull => 1,
        Action::Delete => 2,
        Action::Mount => 3,
    }
}

/// `(action, media type, json)` of a stored value.
fn decode(v: &[u8]) -> Option<(Action, &str, &[u8])> {
    let action = match *v.first()? {
        0 => Action::Push,
        1 => Action::Pull,
        2 => Action::Delete,
        3 => Action::Mount,
        _ => return None,
    };
    let n = u16::from_le_bytes([*v.get(1)?, *v.get(2)?]) as usize;
    let mt = std::str::from_utf8(v.get(3..3 + n)?).ok()?;
    Some((action, mt, &v[3 + n..]))
}

fn mask(positions: &[Arc<Position>], action: Action, media_type: &str) -> u64 {
    positions.iter().enumerate().filter(|(_, p)| (p.wants)(action, media_type)).fold(0, |m, (i, _)| m | (1 << i))
}

/// The sequence number every endpoint has taken events up to (none without endpoints).
fn taken_by_all(positions: &[Arc<Position>]) -> Option<u64> {
    positions.iter().map(|p| p.at()).min()
}

/// Whether an endpoint that wants an event with `mask` has not taken `seq` yet.
fn still_needed(positions: &[Arc<Position>], mask: u64, seq: u64) -> bool {
    positions.iter().enumerate().any(|(i, p)| mask & (1 << i) != 0 && p.at() < seq)
}

fn err(e: impl Into<redb::Error>) -> String {
    e.into().to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Outbox {
    /// Opens (or creates) `dir/events.redb` for these endpoints. An endpoint the file has no
    /// cursor for starts at the current end: it gets what happens from now on.
    pub fn open(dir: &Path, positions: Vec<Arc<Position>>, limits: Limits) -> Result<Outbox, OutboxError> {
        assert!(positions.len() <= MAX_ENDPOINTS);
        let path = dir.join("events.redb");
        let open_err = |e: redb::Error| OutboxError::Open { path: path.clone(), source: Box::new(e) };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OutboxError::InUse { path: path.clone() },
            e => open_err(e.into()),
        })?;
        let (journal, journaled) = Journal::open(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let positions: Arc<[Arc<Position>]> = positions.into();
        let index;
        let mut head;
        {
            let mut txn = db.begin_write().map_err(|e| open_err(e.into()))?;
            txn.set_durability(Durability::Immediate);
            {
                let mut meta = txn.open_table(META).map_err(|e| open_err(e.into()))?;
                head = meta.get("head").map_err(|e| open_err(e.into()))?.map(|v| v.value()).unwrap_or(0);
                // Files written before `flushed` was recorded committed the whole tail each time.
                let flushed = meta.get("flushed").map_err(|e| open_err(e.into()))?.map(|v| v.value()).unwrap_or(head);
                // What was journaled after the last commit (a crash, or a stop before the
                // writer's last commit) joins the file; what the file has is there already.
                // `head` may be past such an event (one endpoint took it from the tail, a
                // cursor is past it); another endpoint may still be owed it.
                let mut events = txn.open_table(EVENTS).map_err(|e| open_err(e.into()))?;
                let recorded = head;
                for (seq, record) in journaled.iter().filter(|(seq, _)| *seq > flushed) {
                    events.insert(*seq, record.as_slice()).map_err(|e| open_err(e.into()))?;
                    head = head.max(*seq);
                }
                meta.insert("head", head).map_err(|e| open_err(e.into()))?;
                meta.insert("flushed", head).map_err(|e| open_err(e.into()))?;
                let cursors = txn.open_table(CURSORS).map_err(|e| open_err(e.into()))?;
                for p in positions.iter() {
                    let at = cursors.get(p.name.as_str()).map_err(|e| open_err(e.into()))?.map(|v| v.value());
                    // An endpoint new to the file starts at the end as it was before the replay:
                    // what was acknowledged before it existed is not its business.
                    p.at.store(at.unwrap_or(recorded).min(head), Ordering::Release);
                }
                index = scan(&events, &positions).map_err(open_err)?;
            }
            txn.commit().map_err(|e| open_err(e.into()))?;
        }
        journal.release(head).map_err(|e| open_err(redb::Error::Io(e)))?;
        let journal = Arc::new(journal);
        let db = Arc::new(db);
        let index = Arc::new(Mutex::new(index));
        let tail = Arc::new(Mutex::new(Tail {
            flushed: head,
            last: head,
            fresh: VecDeque::new(),
            recent: VecDeque::with_capacity(RECENT),
            told: 0,
        }));
        let (tx, rx) = mpsc::channel();
        let cursor_moved = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writer = Writer {
            db: db.clone(),
            journal: journal.clone(),
            cursor_moved: cursor_moved.clone(),
            positions: positions.clone(),
            index: index.clone(),
            tail: tail.clone(),
            head,
            flushed: head,
            limits,
        };
        // Let go of what was taken before the restart, and apply the bounds as now configured.
        if let Err(e) = writer.commit(Take::All) {
            tracing::error!(error = %e, "event outbox: first commit failed");
        }
        let handle = std::thread::Builder::new()
            .name("berth-outbox".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(redb::Error::Io(e)))?;
        Ok(Outbox {
            db,
            journal,
            tx: Mutex::new(Some(tx)),
            lazy_flush: limits.lazy_flush,
            stopped: std::sync::atomic::AtomicBool::new(false),
            cursor_moved,
            head: AtomicU64::new(head),
            sleepers: std::sync::atomic::AtomicUsize::new(0),
            arrived: tokio::sync::Notify::new(),
            positions,
            index,
            tail,
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn positions(&self) -> &[Arc<Position>] {
        &self.positions
    }

    /// Which endpoints want an event like this (a bit each, in configuration order).
    pub fn wanted_by(&self, action: Action, media_type: &str) -> u64 {
        mask(&self.positions, action, media_type)
    }

    fn send(&self, m: Msg) -> Result<(), OutboxError> {
        let tx = lock(&self.tx);
        tx.as_ref().ok_or(OutboxError::Stopped)?.send(m).map_err(|_| OutboxError::Stopped)
    }

    /// Appends events to the tail, where delivery can take them at once, and (unless
    /// `Flush::Lazy`) to the journal; see [`Flush`] for when they are durable.
    pub async fn append(&self, entries: &[impl Append], sync: Flush) -> Result<(), OutboxError> {
        self.push(entries, sync)?.durable().await
    }

    /// [`append`](Self::append) without waiting: the entries are copied before it returns (the
    /// caller's buffers are free again), and [`Appended::durable`] waits for what `sync` asks.
    pub fn push(&self, entries: &[impl Append], sync: Flush) -> Result<Appended, OutboxError> {
        let nothing = Appended { last: 0, journal: None };
        if entries.is_empty() {
            return Ok(nothing);
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(OutboxError::Stopped);
        }
        let (bit, within) = match sync {
            Flush::Lazy => (TOLD_LAZY, self.lazy_flush),
            Flush::Now | Flush::WithStorage => (TOLD_JOURNALED, JOURNALED_FLUSH),
        };
        let due = Instant::now() + within;
        let (last, tell) = {
            let mut records: smallvec::SmallVec<[(Bytes, usize); 2]> = smallvec::SmallVec::new();
            for e in entries {
                records.push(record(e));
            }
            let mut t = lock(&self.tail);
            let first = t.last + 1;
            // In the journal before anyone can take them from the tail, in sequence order
            // (under the tail's lock).
            if sync != Flush::Lazy {
                self.journal.write((first..).zip(&records).map(|(seq, (record, _))| (seq, &record[..])))?;
            }
            for ((seq, entry), (record, json_at)) in (first..).zip(entries).zip(records) {
                t.fresh.push_back(Fresh { seq, mask: entry.mask(), record, json_at, due });
            }
            t.last += entries.len() as u64;
            let mut tell = (t.told & bit == 0).then_some(within);
            t.told |= bit;
            if t.fresh.len() >= TAIL_COMMIT_EVENTS && t.told & TOLD_FULL == 0 {
                t.told |= TOLD_FULL;
                tell = Some(Duration::ZERO);
            }
            (t.last, tell)
        };
        // Never backwards, whichever of two racing appends gets here first.
        self.head.fetch_max(last, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.arrived.notify_waiters();
        }
        if let Some(within) = tell {
            self.send(Msg::Due(within))?;
        }
        Ok(Appended { last, journal: (sync == Flush::Now).then(|| self.journal.clone()) })
    }

    /// Commits the tail to the file now (tests).
    #[cfg(test)]
    async fn commit_now(&self) -> Result<(), OutboxError> {
        self.commit_taking(Take::All).await
    }

    /// Commits now what a commit the writer was due to make takes (tests).
    #[cfg(test)]
    async fn commit_taking(&self, take: Take) -> Result<(), OutboxError> {
        let (done, wait) = oneshot::channel();
        self.send(Msg::Commit { take, done })?;
        wait.await.map_err(|_| OutboxError::Stopped)?.map_err(OutboxError::Write)
    }

    /// Stops as a crash would: nothing in the tail reaches the file (tests).
    #[cfg(test)]
    fn crash(self) {
        let _ = self.send(Msg::Crash);
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
        drop(lock(&self.tx).take());
    }

    /// Moves endpoint `i` past `seq` (never back), and lets go of what every endpoint has
    /// taken from the tail now, not at the next commit: held until then, a second of pulls
    /// was megabytes, freed at once and faulted in again.
    pub fn advance(&self, i: usize, seq: u64) {
        if self.positions[i].at.fetch_max(seq, Ordering::AcqRel) >= seq {
            return;
        }
        if !self.cursor_moved.swap(true, Ordering::AcqRel) {
            let _ = self.send(Msg::Due(JOURNALED_FLUSH));
        }
        let taken = taken_by_all(&self.positions).unwrap_or(seq);
        let mut t = lock(&self.tail);
        if t.fresh.front().is_some_and(|f| f.seq <= taken) {
            t.retire(taken);
            // Not in the file, and no one will read it there: everyone is past it.
            t.flushed = t.flushed.max(taken);
        }
    }

    /// The newest sequence number given out, to wait on.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Returns once an event past `at` was given out, or the outbox stopped (false).
    pub async fn wait_past(&self, at: u64) -> bool {
        /// Leaves the sleepers however the wait ends (a dropped future included).
        struct Sleeping<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Sleeping<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return false;
            }
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let _sleeping = {
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                Sleeping(&self.sleepers)
            };
            // After announcing itself: an append either sees the sleeper or is seen here.
            if self.head.load(Ordering::SeqCst) > at {
                return true;
            }
            notified.await;
        }
    }

    /// Up to `max` events after `from` that endpoint `i` wants, and the last sequence number
    /// looked at (to move past the ones it does not want): from the file first, then the tail.
    pub fn read(&self, i: usize, from: u64, max: usize) -> Result<(Vec<Stored>, u64), OutboxError> {
        // The tail first: everything up to `flushed` is committed by the time it is read here,
        // so the file read below (a later transaction) has it.
        let (flushed, mut fresh, fresh_last) = self.take_fresh(i, from, max);
        let mut out = Vec::new();
        let mut last = from;
        if from < flushed {
            let p = &self.positions[i];
            let txn = self.db.begin_read().map_err(|e| OutboxError::Write(err(e)))?;
            let t = txn.open_table(EVENTS).map_err(|e| OutboxError::Write(err(e)))?;
            let mut looked = 0;
            for item in t.range(from + 1..=flushed).map_err(|e| OutboxError::Write(err(e)))? {
                let (k, v) = item.map_err(|e| OutboxError::Write(err(e)))?;
                last = k.value();
                looked += 1;
                if let Some((a, mt, json)) = decode(v.value()) {
                    if (p.wants)(a, mt) {
                        out.push(Stored { seq: last, json: Bytes::copy_from_slice(json) });
                    }
                }
                if out.len() >= max || looked >= max.saturating_mul(16) {
                    return Ok((out, last));
                }
            }
            // The whole committed range was looked at (what is missing was let go).
            last = flushed;
        }
        if out.len() + fresh.len() > max {
            fresh.truncate(max - out.len());
            last = fresh.last().map_or(last, |s| s.seq);
        } else if let Some(seq) = fresh_last {
            last = seq;
        }
        out.extend(fresh);
        Ok((out, last))
    }

    /// What [`read`](Self::read) answers when all of it is in the tail (the endpoint is caught
    /// up): no file access, so no blocking. None when the file must be read first.
    pub fn read_fresh(&self, i: usize, from: u64, max: usize) -> Option<(Vec<Stored>, u64)> {
        let (flushed, fresh, fresh_last) = self.take_fresh(i, from, max);
        // `take_fresh` stops at the `max`-th event taken, so the last one it looked at is the
        // cursor either way.
        (from >= flushed).then(|| (fresh, fresh_last.unwrap_or(from)))
    }

    /// Up to `max` events after `from` that endpoint `i` wants from the tail, the last
    /// sequence number looked at there, and what is committed (`flushed`).
    fn take_fresh(&self, i: usize, from: u64, max: usize) -> (u64, Vec<Stored>, Option<u64>) {
        let bit = 1u64 << i;
        let t = lock(&self.tail);
        let start = t.fresh.partition_point(|f| f.seq <= from);
        let mut taken = Vec::new();
        let mut looked_at = None;
        for f in t.fresh.range(start..).take(max.saturating_mul(16)) {
            looked_at = Some(f.seq);
            if f.mask & bit != 0 {
                taken.push(Stored { seq: f.seq, json: f.json() });
                if taken.len() >= max {
                    break;
                }
            }
        }
        (t.flushed, taken, looked_at)
    }

    /// The newest `n` events held (for `/debug/events`), oldest first.
    pub fn tail(&self, n: usize) -> Vec<(u64, serde_json::Value)> {
        let parse = |j: &[u8]| serde_json::from_slice(j).ok();
        let mut out: Vec<(u64, serde_json::Value)> = {
            let t = lock(&self.tail);
            t.fresh.iter().rev().take(n).filter_map(|f| Some((f.seq, parse(&f.json())?))).collect()
        };
        if out.len() < n {
            let stored = || -> Option<Vec<(u64, serde_json::Value)>> {
                let txn = self.db.begin_read().ok()?;
                let t = txn.open_table(EVENTS).ok()?;
                let range = t.iter().ok()?;
                Some(
                    range
                        .rev()
                        .filter_map(|item| {
                            let (k, v) = item.ok()?;
                            let (_, _, json) = decode(v.value())?;
                            Some((k.value(), parse(json)?))
                        })
                        .filter(|(seq, _)| out.last().is_none_or(|(oldest, _)| seq < oldest))
                        .take(n - out.len())
                        .collect(),
                )
            };
            let older = stored().unwrap_or_default();
            out.extend(older);
        }
        out.reverse();
        out
    }

    /// The JSON of the newest `n` events appended (at most [`RECENT`]), oldest first.
    pub fn recent(&self, n: usize) -> Vec<Bytes> {
        let t = lock(&self.tail);
        let mut out: Vec<Bytes> = t.recent.iter().chain(&t.fresh).rev().take(n.min(RECENT)).map(Fresh::json).collect();
        out.reverse();
        out
    }

    /// Events held for endpoint `i` (wanted by it and not yet taken).
    pub fn pending(&self, i: usize) -> u64 {
        let at = self.positions[i].at();
        let bit = 1u64 << i;
        let held = {
            let idx = lock(&self.index);
            let start = idx.entries.partition_point(|(s, _, _)| *s <= at);
            idx.entries.range(start..).filter(|(_, _, m)| m & bit != 0).count() as u64
        };
        let t = lock(&self.tail);
        let fresh = t.fresh.iter().filter(|f| f.seq > at && f.mask & bit != 0).count() as u64;
        held + fresh
    }

    /// `(events, bytes)` held, in the file and the tail.
    pub fn size(&self) -> (u64, u64) {
        let (mut events, mut bytes) = {
            let idx = lock(&self.index);
            (idx.entries.len() as u64, idx.bytes)
        };
        let t = lock(&self.tail);
        for f in t.fresh.iter() {
            events += 1;
            bytes += f.record.len() as u64;
        }
        (events, bytes)
    }

    /// Writes what is waiting and stops the writer (at shutdown).
    pub fn close(&self) {
        self.stopped.store(true, Ordering::Release);
        self.arrived.notify_waiters();
        drop(lock(&self.tx).take());
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

/// The index of what a file holds, and for whom.
fn scan(events: &impl ReadableTable<u64, &'static [u8]>, positions: &[Arc<Position>]) -> Result<Index, redb::Error> {
    let mut index = Index::default();
    for item in events.iter()? {
        let (k, v) = item?;
        let v = v.value();
        let m = decode(v).map_or(0, |(a, mt, _)| mask(positions, a, mt));
        index.entries.push_back((k.value(), v.len() as u32, m));
        index.bytes += v.len() as u64;
    }
    Ok(index)
}

pub(crate) fn label(name: &str) -> crate::metrics::EndpointLabels {
    crate::metrics::EndpointLabels { endpoint: name.to_string() }
}

mod writer;

#[cfg(test)]
mod tests;
