//! The outbox's writer thread: commits the tail to the redb file in groups, one transaction
//! and one sync each (see the parent module for what is written when).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use redb::{Database, Durability};
use tokio::sync::oneshot;

use super::{
    err, label, lock, scan, still_needed, taken_by_all, Fresh, Index, Journal, Limits, Msg, Position, Tail, CURSORS,
    EVENTS, META, TAIL_COMMIT_EVENTS,
};

/// The thread's state: the file, and what it shares with the outbox (tail, index, cursors).
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) journal: Arc<Journal>,
    pub(super) cursor_moved: Arc<std::sync::atomic::AtomicBool>,
    pub(super) positions: Arc<[Arc<Position>]>,
    pub(super) index: Arc<Mutex<Index>>,
    pub(super) tail: Arc<Mutex<Tail>>,
    /// The highest sequence number the file records as given out.
    pub(super) head: u64,
    /// Every event up to here is in the file, or was let go.
    pub(super) flushed: u64,
    pub(super) limits: Limits,
}

/// Which part of the tail a commit takes (always a prefix: the file holds everything up to
/// `flushed` that anyone still wants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// All of it (a test's commit, shutdown).
    All,
    /// What is due, what every endpoint has taken already, and all of it once the rest would
    /// still be `TAIL_COMMIT_EVENTS` long. A pull event a healthy endpoint takes within
    /// `lazy_flush` is never written, whatever else (a cursor move, a push) made the commit.
    Due,
}

impl Writer {
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut waiting: Vec<oneshot::Sender<Result<(), String>>> = Vec::new();
        let mut take = Take::Due;
        // When the next commit is due (nothing waiting: none).
        let mut due: Option<Instant> = None;
        let mut open = true;
        while open {
            let first = match due {
                Some(t) => match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        None
                    }
                },
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => {
                        open = false;
                        None
                    }
                },
            };
            // Everything already queued joins this commit.
            for m in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match m {
                    Msg::Commit { take: t, done } => {
                        waiting.push(done);
                        if t == Take::All {
                            take = Take::All;
                        }
                    }
                    #[cfg(test)]
                    Msg::Crash => return,
                    Msg::Due(within) => {
                        let t = Instant::now() + within;
                        due = Some(due.map_or(t, |d| d.min(t)));
                    }
                }
            }
            if !waiting.is_empty() || due.is_some_and(|t| Instant::now() >= t) || !open {
                let result = self.commit(if open { take } else { Take::All });
                take = Take::Due;
                due = match &result {
                    // What it left in the tail is due later; appends after it tell anew.
                    Ok(next) => *next,
                    Err(e) => {
                        tracing::error!(error = %e, "event outbox: commit failed; its events were not recorded");
                        self.reindex();
                        // What it should have written is still in the tail: try again.
                        Some(Instant::now() + self.limits.lazy_flush)
                    }
                };
                // Every waiter's events were in the tail this commit took.
                for w in waiting.drain(..) {
                    let _ = w.send(result.clone().map(|_| ()));
                }
            }
        }
    }

    /// Rebuilds the in-memory index from the file, after a commit that failed midway (the
    /// transaction was rolled back; the index had already moved).
    fn reindex(&mut self) {
        let fresh = (|| {
            let txn = self.db.begin_read()?;
            let events = txn.open_table(EVENTS)?;
            scan(&events, &self.positions)
        })();
        match fresh {
            Ok(index) => *lock(&self.index) = index,
            Err(e) => tracing::error!(error = %e, "event outbox: cannot re-read the index"),
        }
    }

    /// One transaction, one sync: writes what it takes of the tail (what some endpoint still
    /// needs of it), lets go of what every endpoint has taken, drops the oldest beyond the
    /// bounds, and writes the cursors. Whatever is appended from the moment it takes the tail
    /// tells the writer anew; returns when what it left there is due.
    pub(super) fn commit(&mut self, take: Take) -> Result<Option<Instant>, String> {
        let metrics = crate::metrics::get();
        // Cursors are read below: a move after this point tells the writer again.
        self.cursor_moved.store(false, Ordering::Release);
        let pruned;
        let fresh: Vec<Fresh> = {
            let mut t = lock(&self.tail);
            t.told = 0;
            let n = match take {
                Take::All => t.fresh.len(),
                Take::Due => {
                    let now = Instant::now();
                    let taken = match taken_by_all(&self.positions) {
                        Some(at) => t.fresh.partition_point(|f| f.seq <= at),
                        None => t.fresh.len(),
                    };
                    let due = t.fresh.iter().rposition(|f| f.due <= now).map_or(0, |i| i + 1);
                    let n = taken.max(due);
                    if t.fresh.len() - n >= TAIL_COMMIT_EVENTS {
                        t.fresh.len()
                    } else {
                        n
                    }
                }
            };
            // What the tail let go before this commit (taken by everyone) counts as done too:
            // the journal need not keep it, and a restart need not replay it.
            pruned = t.flushed;
            t.fresh.range(..n).cloned().collect()
        };
        let upto = fresh.last().map_or(self.flushed.max(pruned), |f| f.seq);
        let mut txn = self.db.begin_write().map_err(err)?;
        txn.set_durability(Durability::Immediate);
        let mut head = upto.max(self.head);
        {
            let mut events = txn.open_table(EVENTS).map_err(err)?;
            let mut idx = lock(&self.index);
            for f in &fresh {
                if !still_needed(&self.positions, f.mask, f.seq) {
                    continue;
                }
                events.insert(f.seq, &f.record[..]).map_err(err)?;
                idx.entries.push_back((f.seq, f.record.len() as u32, f.mask));
                idx.bytes += f.record.len() as u64;
            }
            // Taken by everyone who wanted it.
            while let Some(&(seq, len, m)) = idx.entries.front() {
                if still_needed(&self.positions, m, seq) {
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
                let at = p.at();
                // A cursor may be past the tail taken here (delivered from the tail since):
                // the recorded head never falls behind a cursor, so that after a restart no
                // new event gets a number an endpoint counts as taken.
                head = head.max(at);
                cursors.insert(p.name.as_str(), at).map_err(err)?;
            }
            let mut meta = txn.open_table(META).map_err(err)?;
            meta.insert("head", head).map_err(err)?;
            meta.insert("flushed", upto).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.head = head;
        self.flushed = upto;
        // The journal's records up to here are in the file now (or were taken by everyone).
        if let Err(e) = self.journal.release(upto) {
            tracing::warn!(error = %e, "event outbox: journal segments not let go");
        }
        for (i, p) in self.positions.iter().enumerate() {
            let n = fresh.iter().filter(|f| f.mask & (1 << i) != 0).count() as u64;
            if n > 0 {
                metrics.events_queued.get_or_create(&label(&p.name)).inc_by(n);
            }
        }
        let mut t = lock(&self.tail);
        t.retire(upto);
        t.flushed = t.flushed.max(upto);
        Ok(t.fresh.iter().map(|f| f.due).min())
    }
}
