//! The outbox: order, bounds, cursors, the tail, replay after a crash.

use super::*;

fn entry(o: &Outbox, n: u32) -> Entry<'static> {
    let mask = o.wanted_by(Action::Push, "m");
    Entry { action: Action::Push, media_type: "m", mask, json: format!("{{\"n\":{n}}}").into_bytes().leak() }
}

fn limits(max_events: u64) -> Limits {
    Limits { max_events, max_bytes: 1 << 30, lazy_flush: Duration::from_millis(20) }
}

/// Limits under which no pull is due within a test: only what a test commits is written.
fn slow() -> Limits {
    Limits { max_events: 100, max_bytes: 1 << 30, lazy_flush: Duration::from_secs(3600) }
}

/// Endpoints that want every event.
fn wanting_everything(names: &[&str]) -> Vec<Arc<Position>> {
    names.iter().map(|name| Arc::new(Position::new(name.to_string(), |_, _| true))).collect()
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
    o.append(&(0..3).map(|n| entry(&o, n)).collect::<Vec<_>>(), Flush::Now).await.unwrap();
    let (got, last) = o.read(0, 0, 10).unwrap();
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(last, 3);
    // b wants no pushes: it holds nothing back, and is owed nothing.
    assert_eq!(o.pending(1), 0);
    o.advance(0, 1);
    o.append(&(3..8).map(|n| entry(&o, n)).collect::<Vec<_>>(), Flush::Now).await.unwrap();
    o.commit_now().await.unwrap();
    // 7 held by a, bound 5: 2..=3 dropped (1 was taken).
    assert_eq!(o.positions()[0].dropped.load(Ordering::Relaxed), 2);
    assert_eq!(o.pending(0), 5);
    drop(o);
    let o = Outbox::open(dir.path(), ps(), limits(5)).unwrap();
    let (got, _) = o.read(0, o.positions()[0].at(), 10).unwrap();
    assert_eq!(got.iter().map(|s| s.seq).collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
    assert_eq!(got[0].json, br#"{"n":3}"#.as_slice());
}

fn seqs(got: &[Stored]) -> Vec<u64> {
    got.iter().map(|s| s.seq).collect()
}

#[tokio::test]
async fn pulls_taken_from_the_tail_are_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let ps = || wanting_everything(&["a"]);
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    o.append(&(0..3).map(|n| entry(&o, n)).collect::<Vec<_>>(), Flush::Lazy).await.unwrap();
    assert_eq!(o.head(), 3, "readable before any commit");
    let (got, last) = o.read(0, 0, 2).unwrap();
    assert_eq!((seqs(&got), last), (vec![1, 2], 2));
    o.advance(0, last);
    // A commit: 3 is still owed, 1 and 2 were taken.
    o.append(&[entry(&o, 3)], Flush::Now).await.unwrap();
    o.commit_now().await.unwrap();
    assert_eq!(o.size().0, 2);
    assert_eq!(o.pending(0), 2);
    drop(o);
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    let (got, last) = o.read(0, o.positions()[0].at(), 10).unwrap();
    assert_eq!(seqs(&got), [3, 4]);
    assert_eq!(got[1].json, br#"{"n":3}"#.as_slice());
    // Taken from the tail past what was committed, then a restart: the numbers given out
    // next are past the cursor, so nothing new is skipped.
    o.advance(0, last);
    o.append(&[entry(&o, 5)], Flush::Lazy).await.unwrap();
    let (got, last) = o.read(0, 4, 10).unwrap();
    assert_eq!(seqs(&got), [5]);
    o.advance(0, last);
    drop(o);
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    assert_eq!(o.positions()[0].at(), 5);
    assert_eq!(o.size().0, 0, "taken before the commit: never kept");
    o.append(&[entry(&o, 6)], Flush::Now).await.unwrap();
    let (got, _) = o.read(0, 5, 10).unwrap();
    assert_eq!(seqs(&got), [6]);
}

/// The events the file holds.
fn in_file(o: &Outbox) -> Vec<u64> {
    let txn = o.db.begin_read().unwrap();
    let t = txn.open_table(EVENTS).unwrap();
    t.iter().unwrap().map(|item| item.unwrap().0.value()).collect()
}

#[tokio::test]
async fn a_commit_writes_only_what_is_due_and_still_owed() {
    let dir = tempfile::tempdir().unwrap();
    let ps = || wanting_everything(&["a", "b"]);
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    o.append(&(0..4).map(|n| entry(&o, n)).collect::<Vec<_>>(), Flush::Lazy).await.unwrap();
    o.append(&[entry(&o, 4)], Flush::Now).await.unwrap();
    // a takes everything, b the first two.
    o.advance(0, 5);
    o.advance(1, 2);
    o.commit_taking(Take::Due).await.unwrap();
    // 1 and 2 were taken by both; 3 and 4 (pulls) and 5 (journaled) are not due yet.
    assert_eq!(in_file(&o), Vec::<u64>::new());
    assert_eq!(o.size().0, 3);
    assert_eq!(seqs(&o.read(1, 2, 10).unwrap().0), [3, 4, 5]);
    // A crash: the pulls not yet due are lost, as `lazy_flush` allows; 5 is journaled. a's
    // cursor (and the recorded head) is past it, but b is still owed it.
    o.crash();
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    assert_eq!(o.positions()[0].at(), 5);
    assert_eq!(seqs(&o.read(1, o.positions()[1].at(), 10).unwrap().0), [5]);
    assert_eq!(o.read(0, o.positions()[0].at(), 10).unwrap().0.len(), 0);
    drop(o);

    // Pulls past `lazy_flush` that someone still wants are due.
    let dir = tempfile::tempdir().unwrap();
    let o = Outbox::open(dir.path(), ps(), limits(100)).unwrap();
    o.append(&(0..3).map(|n| entry(&o, n)).collect::<Vec<_>>(), Flush::Lazy).await.unwrap();
    o.advance(0, 3);
    o.advance(1, 1);
    tokio::time::sleep(Duration::from_millis(40)).await;
    o.commit_taking(Take::Due).await.unwrap();
    assert_eq!(in_file(&o), [2, 3]);
    assert_eq!(o.size().0, 2);
}

#[tokio::test]
async fn what_the_tail_let_go_counts_as_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let ps = || wanting_everything(&["a", "b"]);
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    o.append(&[entry(&o, 0)], Flush::Now).await.unwrap();
    // Taken by both: the tail lets it go at once, before any commit wrote it.
    o.advance(0, 1);
    o.advance(1, 1);
    assert_eq!(o.size().0, 0);
    o.commit_taking(Take::Due).await.unwrap();
    // So the commit, finding the tail empty, still records that nothing up to 1 needs the
    // journal: a restart does not replay it.
    let flushed = {
        let txn = o.db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get("flushed").unwrap().map(|v| v.value())
    };
    assert_eq!(flushed, Some(1));
}

#[tokio::test]
async fn journaled_events_survive_a_crash_before_any_commit() {
    let dir = tempfile::tempdir().unwrap();
    let ps = || wanting_everything(&["a"]);
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    o.append(&[entry(&o, 0)], Flush::Now).await.unwrap();
    o.append(&[entry(&o, 1)], Flush::Lazy).await.unwrap();
    // Durable only through a storage sync that follows: a real one here.
    o.append(&[entry(&o, 2)], Flush::WithStorage).await.unwrap();
    std::fs::File::open(dir.path()).unwrap().sync_all().unwrap();
    o.crash();
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    let (got, _) = o.read(0, 0, 10).unwrap();
    // The pull (lazy) is what a crash may lose; the others are there, in order.
    assert_eq!(seqs(&got), [1, 3]);
    assert_eq!(got[1].json, br#"{"n":2}"#.as_slice());
    // Numbers go on after the replayed ones, and the replay is in the file now: a second
    // restart finds the same, once.
    o.append(&[entry(&o, 3)], Flush::Now).await.unwrap();
    drop(o);
    let o = Outbox::open(dir.path(), ps(), slow()).unwrap();
    let (got, _) = o.read(0, 0, 10).unwrap();
    assert_eq!(seqs(&got), [1, 3, 4]);
    assert_eq!(o.journal.segments(), 1, "replayed segments are let go");
}
