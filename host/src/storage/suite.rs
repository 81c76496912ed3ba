//! The conformance suite every storage driver must pass. Each driver's test module calls
//! `run_all` with a fresh driver.

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::{StorageDriver, StorageError};

async fn read_all(d: &dyn StorageDriver, path: &str, offset: u64) -> Vec<u8> {
    let chunks: Vec<Bytes> = d.reader(path, offset).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

pub async fn run_all(d: &dyn StorageDriver) {
    content_round_trip(d).await;
    missing_paths(d).await;
    streaming_writer_and_ranges(d).await;
    append_resumes(d).await;
    cancel_discards(d).await;
    listing_and_stat(d).await;
    rename_replaces(d).await;
    delete_tree(d).await;
    bad_paths(d).await;
    sync_barrier(d).await;
}

async fn content_round_trip(d: &dyn StorageDriver) {
    d.put_content("/a/b/c", Bytes::from_static(b"hello")).await.unwrap();
    assert_eq!(&d.get_content("/a/b/c").await.unwrap()[..], b"hello");
    d.put_content("/a/b/c", Bytes::from_static(b"bye")).await.unwrap();
    assert_eq!(&d.get_content("/a/b/c").await.unwrap()[..], b"bye");
    d.delete("/a").await.unwrap();
}

async fn missing_paths(d: &dyn StorageDriver) {
    assert!(d.get_content("/nope").await.unwrap_err().is_not_found());
    assert!(d.stat("/nope/x").await.unwrap_err().is_not_found());
    assert!(d.list("/nope").await.unwrap_err().is_not_found());
    assert!(d.delete("/nope").await.unwrap_err().is_not_found());
    assert!(d.reader("/nope", 0).await.err().unwrap().is_not_found());
}

async fn streaming_writer_and_ranges(d: &dyn StorageDriver) {
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut w = d.writer("/big/data", false).await.unwrap();
    for chunk in data.chunks(65_537) {
        w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(w.size(), data.len() as u64);
    w.commit().await.unwrap();
    assert_eq!(read_all(d, "/big/data", 0).await, data);
    assert_eq!(read_all(d, "/big/data", 1_234_567).await, &data[1_234_567..]);
    assert!(read_all(d, "/big/data", data.len() as u64).await.is_empty());
    assert!(matches!(
        d.reader("/big/data", data.len() as u64 + 1).await.err().unwrap(),
        StorageError::InvalidOffset { .. }
    ));
    assert_eq!(d.stat("/big/data").await.unwrap().size, data.len() as u64);
    d.delete("/big").await.unwrap();
}

async fn append_resumes(d: &dyn StorageDriver) {
    let mut w = d.writer("/up/data", false).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.commit().await.unwrap();
    let mut w = d.writer("/up/data", true).await.unwrap();
    assert_eq!(w.size(), 3);
    w.write(Bytes::from_static(b"def")).await.unwrap();
    assert_eq!(w.size(), 6);
    w.commit().await.unwrap();
    assert_eq!(read_all(d, "/up/data", 0).await, b"abcdef");
    d.delete("/up").await.unwrap();
}

async fn cancel_discards(d: &dyn StorageDriver) {
    let mut w = d.writer("/c/data", false).await.unwrap();
    w.write(Bytes::from_static(b"abc")).await.unwrap();
    w.commit().await.unwrap();
    let mut w = d.writer("/c/data", true).await.unwrap();
    w.write(Bytes::from_static(b"zzz")).await.unwrap();
    w.cancel().await.unwrap();
    assert_eq!(read_all(d, "/c/data", 0).await, b"abc");
    d.delete("/c").await.unwrap();
}

async fn listing_and_stat(d: &dyn StorageDriver) {
    for p in ["/l/x/1", "/l/x/2", "/l/y/deep/3", "/l/z"] {
        d.put_content(p, Bytes::from_static(b"1")).await.unwrap();
    }
    let mut got = d.list("/l").await.unwrap();
    got.sort();
    assert_eq!(got, ["/l/x", "/l/y", "/l/z"]);
    let mut got = d.list("/l/x").await.unwrap();
    got.sort();
    assert_eq!(got, ["/l/x/1", "/l/x/2"]);
    assert!(d.stat("/l/y").await.unwrap().is_dir);
    let f = d.stat("/l/z").await.unwrap();
    assert!(!f.is_dir);
    assert_eq!(f.size, 1);
    d.delete("/l").await.unwrap();
    assert!(d.stat("/l/x/1").await.unwrap_err().is_not_found());
}

async fn rename_replaces(d: &dyn StorageDriver) {
    d.put_content("/r/src", Bytes::from_static(b"new")).await.unwrap();
    d.put_content("/r/dst/data", Bytes::from_static(b"old")).await.unwrap();
    d.rename("/r/src", "/r/dst/data").await.unwrap();
    assert_eq!(&d.get_content("/r/dst/data").await.unwrap()[..], b"new");
    assert!(d.stat("/r/src").await.unwrap_err().is_not_found());
    d.rename("/r/dst/data", "/r/other/deep/data").await.unwrap();
    assert_eq!(&d.get_content("/r/other/deep/data").await.unwrap()[..], b"new");
    d.delete("/r").await.unwrap();
}

async fn delete_tree(d: &dyn StorageDriver) {
    d.put_content("/t/a/b", Bytes::from_static(b"1")).await.unwrap();
    d.put_content("/t/a/c", Bytes::from_static(b"1")).await.unwrap();
    d.put_content("/t/keep", Bytes::from_static(b"1")).await.unwrap();
    d.delete("/t/a").await.unwrap();
    assert!(d.stat("/t/a/b").await.unwrap_err().is_not_found());
    assert_eq!(d.list("/t").await.unwrap(), ["/t/keep"]);
    d.delete("/t").await.unwrap();
}

async fn bad_paths(d: &dyn StorageDriver) {
    for bad in ["/../etc/passwd", "relative", "/a/../../b", "/a//b", "/"] {
        let err = d.get_content(bad).await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidPath(_)), "{bad}: {err}");
        assert!(matches!(d.put_content(bad, Bytes::new()).await.unwrap_err(), StorageError::InvalidPath(_)));
    }
}

async fn sync_barrier(d: &dyn StorageDriver) {
    d.put_volatile("/s/a/link", Bytes::from_static(b"x")).await.unwrap();
    d.put_content("/s/b", Bytes::from_static(b"y")).await.unwrap();
    d.rename("/s/b", "/s/c/data").await.unwrap();
    // Files, renamed files, and paths already deleted (their directory is synced) are all fine.
    d.sync(&["/s/a/link".into(), "/s/c/data".into(), "/s/b".into()]).await.unwrap();
    assert_eq!(&d.get_content("/s/a/link").await.unwrap()[..], b"x");
    assert!(matches!(d.sync(&["/../x".into()]).await.unwrap_err(), StorageError::InvalidPath(_)));
    d.delete("/s").await.unwrap();
}
