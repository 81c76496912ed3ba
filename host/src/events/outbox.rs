//! The durable outbox: one redb file beside the data, written by one thread that commits in
//! groups (every request waiting when a commit starts shares the next one's sync), read by each
//! endpoint's delivery task from its own cursor.
//!
//! redb rather than SQLite: pure Rust (no C library to build or link), one file, ACID commits
//! with one fsync each, ordered `u64` keys that make a log and its range reads trivial.
//!
//! Events are kept once, in order (`events`: sequence → action, media type, JSON), whoever
//! they are for; an event is let go once every endpoint that wants it is past it. Each
//! endpoint's position lives in memory (`Position`) and is written with the next commit, so a
//! crash can only move a cursor back (an event sent again), never forward. When the outbox is
//! over its bounds the oldest events go, counted as dropped for each endpoint that had not
//! taken them: no request ever waits for room.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use super::record::Action;

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
    #[error("event outbox is stopped")]
    Stopped,
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

/// One event ready to store: what filters need, and its JSON.
pub struct Entry {
    pub action: Action,
    pub media_type: String,
    pub json: Vec<u8>,
}

/// An event read back for delivery.
pub struct Stored {
    pub seq: u64,
    pub json: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: u64,
    pub max_bytes: u64,
    /// How long events that need no sync before an answer (pulls) and cursor moves wait to be
    /// written with the next commit.
    pub lazy_flush: Duration,
}

enum Msg {
    Append {
        entries: Vec<Entry>,
        durable: bool,
        done: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Cursors moved: write them (lazily) and let go of what everyone has taken.
    Moved,
}

/// Held events, oldest first: `(seq, bytes, wanted-by mask)`.
#[derive(Default)]
struct Index {
    entries: VecDeque<(u64, u32, u64)>,
    bytes: u64,
}

pub struct Outbox {
    db: Arc<Database>,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    head: watch::Receiver<u64>,
    positions: Arc<[Arc<Position>]>,
    index: Arc<Mutex<Index>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn encode(e: &Entry) -> Vec<u8> {
    let mt = e.media_type.as_bytes();
    let mt_len = mt.len().min(u16::MAX as usize);
    let mut v = Vec::with_capacity(3 + mt_len + e.json.len());
    v.push(action_byte(e.action));
    v.extend_from_slice(&(mt_len as u16).to_le_bytes());
    v.extend_from_slice(&mt[..mt_len]);
    v.extend_from_slice(&e.json);
    v
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

fn err(e: impl Into<redb::Error>) -> String {
    e.into().to_string()
}

impl Outbox {
    /// Opens (or creates) `dir/events.redb` for these endpoints. An endpoint the file has no
    /// cursor for starts at the current end: it gets what happens from now on.
    pub fn open(dir: &Path, positions: Vec<Arc<Position>>, limits: Limits) -> Result<Outbox, OutboxError> {
        assert!(positions.len() <= MAX_ENDPOINTS);
        let path = dir.join("events.redb");
        let open_err = |e: redb::Error| OutboxError::Open { path: path.clone(), source: Box::new(e) };
        std::fs::create_dir_all(dir).map_err(|e| open_err(redb::Error::Io(e)))?;
        let db = Database::create(&path).map_err(|e| open_err(e.into()))?;
        let positions: Arc<[Arc<Position>]> = positions.into();
        let mut index = Index::default();
        let head;
        {
            let txn = db.begin_write().map_err(|e| open_err(e.into()))?;
            {
                let meta = txn.open_table(META).map_err(|e| open_err(e.into()))?;
                head = meta.get("head").map_err(|e| open_err(e.into()))?.map(|v| v.value()).unwrap_or(0);
                let cursors = txn.open_table(CURSORS).map_err(|e| open_err(e.into()))?;
                for p in positions.iter() {
                    let at = cursors.get(p.name.as_str()).map_err(|e| open_err(e.into()))?.map(|v| v.value());
                    p.at.store(at.unwrap_or(head), Ordering::Release);
                }
                let events = txn.open_table(EVENTS).map_err(|e| open_err(e.into()))?;
                for item in events.iter().map_err(|e| open_err(e.into()))? {
                    let (k, v) = item.map_err(|e| open_err(e.into()))?;
                    let v = v.value();
                    let m = decode(v).map_or(0, |(a, mt, _)| mask(&positions, a, mt));
                    index.entries.push_back((k.value(), v.len() as u32, m));
                    index.bytes += v.len() as u64;
                }
            }
            txn.commit().map_err(|e| open_err(e.into()))?;
        }
        let db = Arc::new(db);
        let index = Arc::new(Mutex::new(index));
        let (head_tx, head_rx) = watch::channel(head);
        let (tx, rx) = mpsc::channel();
        let mut writer =
            Writer { db: db.clone(), positions: positions.clone(), index: index.clone(), head, head_tx, limits };
        // Let go of what was taken before the restart, and apply the bounds as now configured.
        if let Err(e) = writer.commit(Vec::new()) {
            tracing::error!(error = %e, "event outbox: first commit failed");
        }
        let handle = std::thread::Builder::new()
            .name("berth-outbox".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_err(redb::Error::Io(e)))?;
        Ok(Outbox { db, tx: Mutex::new(Some(tx)), head: head_rx, positions, index, writer: Mutex::new(Some(handle)) })
    }

    pub fn positions(&self) -> &[Arc<Position>] {
        &self.positions
    }

    /// Which endpoints want an event like this (a bit each, in configuration order).
    pub fn wanted_by(&self, action: Action, media_type: &str) -> u64 {
        mask(&self.positions, action, media_type)
    }

    fn send(&self, m: Msg) -> Result<(), OutboxError> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        tx.as_ref().ok_or(OutboxError::Stopped)?.send(m).map_err(|_| OutboxError::Stopped)
    }

    /// Writes events; with `durable`, returns once they are on stable storage (sharing the
    /// sync with every other append waiting), else at once (written within `lazy_flush`).
    pub async fn append(&self, entries: Vec<Entry>, durable: bool) -> Result<(), OutboxError> {
        if !durable {
            return self.send(Msg::Append { entries, durable, done: None });
        }
        let (done, wait) = oneshot::channel();
        self.send(Msg::Append { entries, durable, done: Some(done) })?;
        wait.await.map_err(|_| OutboxError::Stopped)?.map_err(OutboxError::Write)
    }

    /// Moves endpoint `i` past `seq` (never back).
    pub fn advance(&self, i: usize, seq: u64) {
        if self.positions[i].at.fetch_max(seq, Ordering::AcqRel) < seq {
            let _ = self.send(Msg::Moved);
        }
    }

    /// The newest committed sequence number, to wait on.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// Up to `max` events after `from` that endpoint `i` wants, and the last sequence number
    /// looked at (to move past the ones it does not want).
    pub fn read(&self, i: usize, from: u64, max: usize) -> Result<(Vec<Stored>, u64), OutboxError> {
        let p = &self.positions[i];
        let txn = self.db.begin_read().map_err(|e| OutboxError::Write(err(e)))?;
        let t = txn.open_table(EVENTS).map_err(|e| OutboxError::Write(err(e)))?;
        let mut out = Vec::new();
        let mut last = from;
        for item in t.range(from + 1..).map_err(|e| OutboxError::Write(err(e)))?.take(max.saturating_mul(16)) {
            let (k, v) = item.map_err(|e| OutboxError::Write(err(e)))?;
            last = k.value();
            if let Some((a, mt, json)) = decode(v.value()) {
                if (p.wants)(a, mt) {
                    out.push(Stored { seq: last, json: json.to_vec() });
                    if out.len() >= max {
                        break;
                    }
                }
            }
        }
        Ok((out, last))
    }

    /// The newest `n` events (for `/debug/events`), oldest first.
    pub fn tail(&self, n: usize) -> Vec<(u64, serde_json::Value)> {
        let Ok(txn) = self.db.begin_read() else { return Vec::new() };
        let Ok(t) = txn.open_table(EVENTS) else { return Vec::new() };
        let Ok(range) = t.iter() else { return Vec::new() };
        let mut out: Vec<(u64, serde_json::Value)> = range
            .rev()
            .take(n)
            .filter_map(|item| {
                let (k, v) = item.ok()?;
                let (_, _, json) = decode(v.value())?;
                Some((k.value(), serde_json::from_slice(json).ok()?))
            })
            .collect();
        out.reverse();
        out
    }

    /// Events held for endpoint `i` (wanted by it and not yet taken).
    pub fn pending(&self, i: usize) -> u64 {
        let at = self.positions[i].at();
        let idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let start = idx.entries.partition_point(|(s, _, _)| *s <= at);
        idx.entries.range(start..).filter(|(_, _, m)| m & (1 << i) != 0).count() as u64
    }

    /// `(events, bytes)` held.
    pub fn size(&self) -> (u64, u64) {
        let idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
        (idx.entries.len() as u64, idx.bytes)
    }

    /// Writes what is waiting and stops the writer (at shutdown).
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    db: Arc<Database>,
    positions: Arc<[Arc<Position>]>,
    index: Arc<Mutex<Index>>,
    head: u64,
    head_tx: watch::Sender<u64>,
    limits: Limits,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut pending: Vec<Entry> = Vec::new();
        let mut waiting: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
        // Since when something written lazily has been waiting.
        let mut lazy_since: Option<Instant> = None;
        let mut open = true;
        while open {
            let first = match lazy_since {
                Some(t) => {
                    match rx.recv_timeout((t + self.limits.lazy_flush).saturating_duration_since(Instant::now())) {
                        Ok(m) => Some(m),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            None
                        }
                    }
                }
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => {
                        open = false;
                        None
                    }
                },
            };
            let mut urgent = false;
            // Everything already queued joins this commit.
            for m in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match m {
                    Msg::Append { entries, durable, done } => {
                        pending.extend(entries);
                        urgent |= durable;
                        if !durable {
                            lazy_since.get_or_insert_with(Instant::now);
                        }
                        waiting.extend(done);
                    }
                    Msg::Moved => {
                        lazy_since.get_or_insert_with(Instant::now);
                    }
                }
            }
            let due = lazy_since.is_some_and(|t| t.elapsed() >= self.limits.lazy_flush);
            if urgent || due || (!open && (lazy_since.is_some() || !pending.is_empty())) {
                let result = self.commit(std::mem::take(&mut pending));
                if let Err(e) = &result {
                    tracing::error!(error = %e, "event outbox: commit failed; its events were not recorded");
                    self.reindex();
                }
                for w in waiting.drain(..) {
                    let _ = w.send(result.clone());
                }
                lazy_since = None;
            }
        }
    }

    /// Rebuilds the in-memory index from the file, after a commit that failed midway (the
    /// transaction was rolled back; the index had already moved).
    fn reindex(&mut self) {
        let mut fresh = Index::default();
        let mut scan = || -> Result<(), redb::Error> {
            let txn = self.db.begin_read()?;
            let events = txn.open_table(EVENTS)?;
            for item in events.iter()? {
                let (k, v) = item?;
                let v = v.value();
                let m = decode(v).map_or(0, |(a, mt, _)| mask(&self.positions, a, mt));
                fresh.entries.push_back((k.value(), v.len() as u32, m));
                fresh.bytes += v.len() as u64;
            }
            Ok(())
        };
        match scan() {
            Ok(()) => *self.index.lock().unwrap_or_else(|p| p.into_inner()) = fresh,
            Err(e) => tracing::error!(error = %e, "event outbox: cannot re-read the index"),
        }
    }

    /// One transaction, one sync: appends `entries`, lets go of what every endpoint has taken,
    /// drops the oldest beyond the bounds, and writes the cursors.
    fn commit(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        let metrics = crate::metrics::get();
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate);
        let mut head = self.head;
        let mut added = Vec::with_capacity(entries.len());
        {
            let mut events = txn.open_table(EVENTS).map_err(err)?;
            let mut idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
            for e in &entries {
                head += 1;
                let v = encode(e);
                events.insert(head, v.as_slice()).map_err(err)?;
                let m = mask(&self.positions, e.action, &e.media_type);
                idx.entries.push_back((head, v.len() as u32, m));
                idx.bytes += v.len() as u64;
                added.push(m);
            }
            // Taken by everyone who wanted it.
            while let Some(&(seq, len, m)) = idx.entries.front() {
                let needed = self.positions.iter().enumerate().any(|(i, p)| m & (1 << i) != 0 && p.at() < seq);
                if needed {
                    break;
                }
                idx.entries.pop_front();
                idx.bytes -= len as u64;
                events.remove(seq).map_err(err)?;
            }
            // Over the bounds: the oldest go, counted for whoever had not taken them.
            while idx.entries.len() as u64 > self.limits.max_events || idx.bytes > self.limits.max_bytes {
                let Some((seq, len, m)) = idx.entries.pop_front() else { break };
                idx.bytes -= len as u64;
                events.remove(seq).map_err(err)?;
                for (i, p) in self.positions.iter().enumerate() {
                    if p.at.fetch_max(seq, Ordering::AcqRel) < seq && m & (1 << i) != 0 {
                        p.dropped.fetch_add(1, Ordering::Relaxed);
                        metrics.events_dropped.get_or_create(&label(&p.name)).inc();
                    }
                }
            }
            metrics.outbox_events.set(idx.entries.len() as i64);
            let mut cursors = txn.open_table(CURSORS).map_err(err)?;
            for p in self.positions.iter() {
                cursors.insert(p.name.as_str(), p.at()).map_err(err)?;
            }
            let mut meta = txn.open_table(META).map_err(err)?;
            meta.insert("head", head).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.head = head;
        for (i, p) in self.positions.iter().enumerate() {
            let n = added.iter().filter(|m| *m & (1 << i) != 0).count() as u64;
            if n > 0 {
                metrics.events_queued.get_or_create(&label(&p.name)).inc_by(n);
            }
        }
        self.head_tx.send_replace(head);
        Ok(())
    }
}

pub(crate) fn label(name: &str) -> crate::metrics::EndpointLabels {
    crate::metrics::EndpointLabels { endpoint: name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32) -> Entry {
        Entry { action: Action::Push, media_type: "m".into(), json: format!("{{\"n\":{n}}}").into_bytes() }
    }

    fn limits(max_events: u64) -> Limits {
        Limits { max_events, max_bytes: 1 << 30, lazy_flush: Duration::from_millis(20) }
    }

    #[tokio::test]
    async fn ordered_bounded_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let ps = || {
            vec![
                Arc::new(Position::new("a".into(), |_, _| true)),
                Arc::new(Position::new("b".into(), |a, _| a == Action::Pull)),
            ]
        };
        let o = Outbox::open(dir.path(), ps(), limits(5)).unwrap();
        o.append((0..3).map(entry).collect(), true).await.unwrap();
        let (got, last) = o.read(0, 0, 10).unwrap();
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(last, 3);
        // b wants no pushes: it holds nothing back, and is owed nothing.
        assert_eq!(o.pending(1), 0);
        o.advance(0, 1);
        o.append((3..8).map(entry).collect(), true).await.unwrap();
        // 7 held by a, bound 5: 2..=3 dropped (1 was taken).
        assert_eq!(o.positions()[0].dropped.load(Ordering::Relaxed), 2);
        assert_eq!(o.pending(0), 5);
        drop(o);
        let o = Outbox::open(dir.path(), ps(), limits(5)).unwrap();
        let (got, _) = o.read(0, o.positions()[0].at(), 10).unwrap();
        assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
        assert_eq!(got[0].json, br#"{"n":3}"#);
    }
}
