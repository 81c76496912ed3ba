//! Unit tests of the mark, the estimate, the lock and the journal handshake, over the in-memory
//! driver through the registry's own write paths. The black-box suite (tests/test_gc.py) drives
//! the binary.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::registry::{Algorithm, Digest, Reference, Registry, RepoName, Tag, WriteWatch};
use crate::storage::{InMemoryDriver, StorageDriver};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn repo(n: &str) -> RepoName {
    RepoName::parse(n).unwrap()
}

fn tag(t: &str) -> Tag {
    Tag::parse(t).unwrap()
}

async fn blob(reg: &Registry, r: &RepoName, data: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, data);
    let body = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(data))]));
    reg.upload_monolithic(r, &d, body).await.unwrap();
    d
}

fn desc(mt: &str, d: &Digest, size: usize) -> serde_json::Value {
    json!({"mediaType": mt, "digest": d.to_string(), "size": size})
}

/// An image over a config unique to `seed` and the given layers; returns (digest, bytes).
async fn image(reg: &Registry, r: &RepoName, reference: Option<&str>, seed: &str, layers: &[&[u8]]) -> (Digest, usize) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let c = blob(reg, r, config.as_bytes()).await;
    let mut ls = Vec::new();
    for l in layers {
        ls.push(desc("application/vnd.oci.image.layer.v1.tar", &blob(reg, r, l).await, l.len()));
    }
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": desc("application/vnd.oci.image.config.v1+json", &c, config.len()), "layers": ls});
    let body = Bytes::from(m.to_string());
    let len = body.len();
    let d = Digest::of(Algorithm::Sha256, &body);
    let reference = match reference {
        Some(t) => Reference::Tag(tag(t)),
        None => Reference::Digest(d.clone()),
    };
    reg.put_manifest(r, &reference, Some(OCI_MANIFEST), body, &Default::default()).await.unwrap();
    (d, len + config.len() + layers.iter().map(|l| l.len()).sum::<usize>())
}

fn registry() -> (Registry, Arc<dyn StorageDriver>) {
    let driver: Arc<dyn StorageDriver> = Arc::new(InMemoryDriver::new());
    (Registry::new(driver.clone()), driver)
}

fn now() -> Options {
    Options { dry_run: false, delete_untagged: false, grace: Duration::ZERO, concurrency: 8, pace: 1.0 }
}

#[tokio::test]
async fn estimate_counts_what_only_the_pretended_tags_hold() {
    let (reg, _) = registry();
    let (a, b) = (repo("a"), repo("b"));
    // "shared" is in both images: it stays while b:y does.
    let (_, a_bytes) = image(&reg, &a, Some("x"), "a", &[b"only in a", b"shared"]).await;
    image(&reg, &b, Some("y"), "b", &[b"shared"]).await;
    let gone = [(a.clone(), tag("x"))];
    let expected = (a_bytes - b"shared".len()) as u64;
    assert_eq!(estimate_freed(&reg, &gone, true).await.unwrap(), expected);
    // Without --delete-untagged an untagged manifest keeps its blobs (distribution's rule).
    assert_eq!(estimate_freed(&reg, &gone, false).await.unwrap(), 0);
    assert_eq!(estimate_freed(&reg, &[], true).await.unwrap(), 0);
    // Both tags gone: everything.
    let all = [(a, tag("x")), (b, tag("y"))];
    assert!(estimate_freed(&reg, &all, true).await.unwrap() > expected);
    // An estimate deletes nothing.
    assert_eq!(estimate_freed(&reg, &gone, true).await.unwrap(), expected);
}

#[tokio::test]
async fn untagged_goes_only_with_delete_untagged_and_index_children_stay() {
    let (reg, _) = registry();
    let r = repo("r");
    let (untagged, untagged_bytes) = image(&reg, &r, None, "u", &[b"untagged layer"]).await;
    let (child, _) = image(&reg, &r, None, "c", &[b"child layer"]).await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc(OCI_MANIFEST, &child, 1)]});
    reg.put_manifest(
        &r,
        &Reference::Tag(tag("multi")),
        Some(OCI_INDEX),
        Bytes::from(index.to_string()),
        &Default::default(),
    )
    .await
    .unwrap();
    let report = run(&reg, &now(), None, &Quiet).await.unwrap();
    assert_eq!((report.blobs_swept, report.manifests_swept), (0, 0), "{report:?}");
    let report = run(&reg, &Options { delete_untagged: true, ..now() }, None, &Quiet).await.unwrap();
    assert_eq!((report.blobs_swept, report.manifests_swept), (3, 1), "{report:?}");
    assert_eq!(report.bytes_freed, untagged_bytes as u64);
    assert!(reg.get_manifest(&r, &Reference::Digest(untagged)).await.is_err());
    assert!(reg.get_manifest(&r, &Reference::Digest(child)).await.is_ok());
    // Nothing is left to find.
    let again = run(&reg, &Options { delete_untagged: true, ..now() }, None, &Quiet).await.unwrap();
    assert_eq!((again.blobs_swept, again.manifests_swept, again.errors), (0, 0, 0));
}

#[tokio::test]
async fn a_dry_run_deletes_nothing_and_the_grace_period_spares_new_content() {
    let (reg, _) = registry();
    let r = repo("r");
    image(&reg, &r, None, "u", &[b"l"]).await;
    let dry = run(&reg, &Options { dry_run: true, delete_untagged: true, ..now() }, None, &Quiet).await.unwrap();
    assert_eq!((dry.blobs_swept, dry.manifests_swept), (3, 1));
    let graced = Options { delete_untagged: true, grace: Duration::from_secs(3600), ..now() };
    let report = run(&reg, &graced, None, &Quiet).await.unwrap();
    assert_eq!((report.blobs_swept, report.manifests_swept), (0, 0), "{report:?}");
    let real = run(&reg, &Options { delete_untagged: true, ..now() }, None, &Quiet).await.unwrap();
    assert_eq!((real.blobs_swept, real.manifests_swept), (3, 1));
}

#[tokio::test]
async fn a_second_run_is_refused_while_the_lock_is_held() {
    let (reg, driver) = registry();
    let held = lock::Lock::acquire(&*driver, "other").await.unwrap();
    let e = run(&reg, &now(), None, &Quiet).await.unwrap_err();
    assert!(e.is_locked(), "{e}");
    // A dry run takes no lock.
    run(&reg, &Options { dry_run: true, ..now() }, None, &Quiet).await.unwrap();
    held.release(&*driver).await;
    run(&reg, &now(), None, &Quiet).await.unwrap();
}

/// Taking the lock is write-then-read-back: a rival's write still in flight when a run read its
/// own back lands after it, and both runs believe they hold the lock (the servers follow the
/// rival's journal). The run looks again before it marks and before it deletes: it finds the
/// rival's name and stops, with nothing deleted.
#[tokio::test]
async fn a_run_whose_lock_a_rival_overwrote_deletes_nothing() {
    let (reg, driver) = registry();
    let r = repo("r");
    let (untagged, _) = image(&reg, &r, None, "u", &[b"untagged layer"]).await;
    let d = driver.clone();
    // Lands after the run's read-back (150 ms) and within its wait for the servers (2 s).
    let rival = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
        let record = lock::LockRecord { run: "rival".into(), host: "elsewhere".into(), pid: 1, expires };
        d.put_content(&paths::lock(), Bytes::from(serde_json::to_vec(&record).unwrap())).await.unwrap();
    });
    let e = run(&reg, &Options { delete_untagged: true, ..now() }, None, &Quiet).await.unwrap_err();
    rival.await.unwrap();
    assert!(matches!(e, GcError::LockLost), "{e}");
    assert!(reg.get_manifest(&r, &Reference::Digest(untagged)).await.is_ok(), "deleted under a rival's lock");
    // The rival's lock is left as it is.
    assert_eq!(lock::read(&*driver).await.unwrap().unwrap().run, "rival");
}

#[tokio::test]
async fn the_handshake_spares_a_recorded_digest_and_fails_a_write_to_a_doomed_one() {
    let (_, driver) = registry();
    let j = Journal::default();
    let (a, b) = (Digest::of(Algorithm::Sha256, b"a"), Digest::of(Algorithm::Sha256, b"b"));
    // No run: nothing recorded.
    j.linking(&*driver, std::slice::from_ref(&a)).await.unwrap();
    j.set(Some("run1".into()));
    j.linking(&*driver, std::slice::from_ref(&a)).await.unwrap();
    assert!(!journal::doom(&*driver, "run1", &a).await.unwrap(), "a recorded digest is spared");
    assert!(journal::doom(&*driver, "run1", &b).await.unwrap());
    assert_eq!(j.linking(&*driver, &[a.clone(), b.clone()]).await.unwrap_err(), b);
    // The spared one is not doomed: writes needing it go on.
    j.linking(&*driver, std::slice::from_ref(&a)).await.unwrap();
    assert!(journal::recorded(&*driver, "run1", &a).await.unwrap());
}

/// A driver whose writes of the lock reach storage only after `delay`, as a request still in
/// flight does, and which has conditional writes only if the driver it wraps has them.
struct SlowLockWrites {
    inner: Arc<dyn StorageDriver>,
    delay: Duration,
}

#[async_trait::async_trait]
impl StorageDriver for SlowLockWrites {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn conditional_writes(&self) -> bool {
        self.inner.conditional_writes()
    }
    async fn get_versioned(&self, path: &str) -> crate::storage::Result<(Bytes, crate::storage::Version)> {
        self.inner.get_versioned(path).await
    }
    async fn put_if(&self, path: &str, content: Bytes, expect: crate::storage::Expect) -> crate::storage::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.put_if(path, content, expect).await
    }
    async fn get_content(&self, path: &str) -> crate::storage::Result<Bytes> {
        self.inner.get_content(path).await
    }
    async fn put_content(&self, path: &str, content: Bytes) -> crate::storage::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.put_content(path, content).await
    }
    async fn reader(&self, path: &str, offset: u64) -> crate::storage::Result<crate::storage::ByteStream> {
        self.inner.reader(path, offset).await
    }
    async fn writer(&self, path: &str, append: bool) -> crate::storage::Result<Box<dyn crate::storage::FileWriter>> {
        self.inner.writer(path, append).await
    }
    async fn stat(&self, path: &str) -> crate::storage::Result<crate::storage::FileInfo> {
        self.inner.stat(path).await
    }
    async fn list(&self, path: &str) -> crate::storage::Result<Vec<String>> {
        self.inner.list(path).await
    }
    async fn rename(&self, from: &str, to: &str) -> crate::storage::Result<()> {
        self.inner.rename(from, to).await
    }
    async fn delete(&self, path: &str) -> crate::storage::Result<()> {
        self.inner.delete(path).await
    }
}

/// Two runs reach for a free lock at once, one of them over a slow link: its write lands
/// after the other's read-back. Exactly one holds the lock, on the filesystem and on an
/// object store (with write-then-read-back both would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_runs_racing_for_the_lock_exactly_one_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let drivers: [Arc<dyn StorageDriver>; 2] =
        [Arc::new(InMemoryDriver::new()), Arc::new(crate::storage::FilesystemDriver::open(dir.path()).unwrap())];
    for driver in drivers {
        let slow: Arc<dyn StorageDriver> =
            Arc::new(SlowLockWrites { inner: driver.clone(), delay: Duration::from_millis(400) });
        // The slow one reads first (the lock is free), and its write is in flight while the
        // fast one reads, writes and reads back.
        let (slow, fast) = tokio::join!(lock::Lock::acquire(&*slow, "slow"), lock::Lock::acquire(&*driver, "fast"));
        let held: Vec<&str> = [&fast, &slow].iter().filter_map(|r| r.as_ref().ok()).map(|l| &*l.record.run).collect();
        assert_eq!(held, ["fast"], "{}: fast {:?}, slow {:?}", driver.name(), fast.as_ref().err(), slow.as_ref().err());
        assert!(slow.unwrap_err().is_locked());
        assert_eq!(lock::read(&*driver).await.unwrap().unwrap().run, "fast");
    }
}

/// A lapsed lock is taken over (replaced at the version read), and its old owner cannot renew it.
#[tokio::test]
async fn a_lapsed_lock_is_taken_over_and_its_owner_cannot_renew_it() {
    let (_, driver) = registry();
    let mut first = lock::Lock::acquire(&*driver, "first").await.unwrap();
    // It lapses (its expiry is in the past) and a second run takes it over.
    let mut stale = first.record.clone();
    stale.expires = 1;
    driver.put_content(&paths::lock(), Bytes::from(serde_json::to_vec(&stale).unwrap())).await.unwrap();
    let second = lock::Lock::acquire(&*driver, "second").await.unwrap();
    assert!(matches!(first.renew(&*driver).await, Err(GcError::LockLost)));
    assert_eq!(lock::read(&*driver).await.unwrap().unwrap().run, second.record.run);
}
