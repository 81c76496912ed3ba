//! The manifest cache (`registry/cache.rs`) and its generations: a write or delete through the
//! registry invalidates, `storage_changed` forgets everything, a read that raced a change never
//! inserts its stale answer, and concurrent readers see the old or the new manifest, then the new.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::registry::cache::ManifestCache;
use crate::registry::{paths, RegistryError, StoredManifest};

fn stored(content: Bytes) -> Arc<StoredManifest> {
    Arc::new(StoredManifest { digest: sha256(&content), media_type: OCI_MANIFEST.into(), content })
}

/// Points `tag` at `digest` in storage directly, as another process sharing the storage would.
async fn retag_behind_registry(driver: &Arc<dyn StorageDriver>, repo: &RepoName, t: &str, digest: &Digest) {
    let path = paths::tag_current_link(repo, &Tag::parse(t).unwrap());
    driver.put_content(&path, Bytes::from(digest.to_string())).await.unwrap();
}

#[tokio::test]
async fn a_read_is_served_from_the_cache() {
    let (reg, driver) = registry();
    let r = repo("cache/hit");
    let v1 = push_image(&reg, &r, &tag("latest"), "v1").await;
    let v2 = push_image(&reg, &r, &tag("other"), "v2").await;
    assert_eq!(reg.get_manifest(&r, &tag("latest")).await.unwrap().digest, v1);
    retag_behind_registry(&driver, &r, "latest", &v2).await;
    // Storage changed without the registry knowing: the cached answer stands.
    assert_eq!(reg.get_manifest(&r, &tag("latest")).await.unwrap().digest, v1);
}

#[tokio::test]
async fn storage_changed_drops_every_entry() {
    let (reg, driver) = registry();
    let (a, b) = (repo("cache/a"), repo("cache/b"));
    let a1 = push_image(&reg, &a, &tag("t"), "a1").await;
    let a2 = push_image(&reg, &a, &tag("u"), "a2").await;
    let b1 = push_image(&reg, &b, &tag("t"), "b1").await;
    let b2 = push_image(&reg, &b, &tag("u"), "b2").await;
    assert_eq!(reg.get_manifest(&a, &tag("t")).await.unwrap().digest, a1);
    assert_eq!(reg.get_manifest(&b, &tag("t")).await.unwrap().digest, b1);
    retag_behind_registry(&driver, &a, "t", &a2).await;
    retag_behind_registry(&driver, &b, "t", &b2).await;
    reg.storage_changed();
    assert_eq!(reg.get_manifest(&a, &tag("t")).await.unwrap().digest, a2);
    assert_eq!(reg.get_manifest(&b, &tag("t")).await.unwrap().digest, b2);
}

#[tokio::test]
async fn a_manifest_put_invalidates_the_tag() {
    let (reg, _) = registry();
    let r = repo("cache/put");
    let v1 = push_image(&reg, &r, &tag("latest"), "v1").await;
    assert_eq!(reg.get_manifest(&r, &tag("latest")).await.unwrap().digest, v1);
    let v2 = push_image(&reg, &r, &tag("latest"), "v2").await;
    assert_ne!(v1, v2);
    assert_eq!(reg.get_manifest(&r, &tag("latest")).await.unwrap().digest, v2);
}

#[tokio::test]
async fn a_tag_delete_invalidates_the_tag() {
    let (reg, _) = registry();
    let r = repo("cache/deltag");
    push_image(&reg, &r, &tag("latest"), "v1").await;
    reg.get_manifest(&r, &tag("latest")).await.unwrap();
    reg.delete_manifest(&r, &tag("latest"), &Default::default()).await.unwrap();
    let err = reg.get_manifest(&r, &tag("latest")).await.unwrap_err();
    assert!(matches!(err, RegistryError::ManifestUnknown(_)), "{err}");
}

#[tokio::test]
async fn a_manifest_delete_invalidates_its_digest_and_tags() {
    let (reg, _) = registry();
    let r = repo("cache/deldigest");
    let d = push_image(&reg, &r, &tag("latest"), "v1").await;
    let by_digest = Reference::Digest(d.clone());
    reg.get_manifest(&r, &by_digest).await.unwrap();
    reg.get_manifest(&r, &tag("latest")).await.unwrap();
    reg.delete_manifest(&r, &by_digest, &Default::default()).await.unwrap();
    for reference in [by_digest, tag("latest")] {
        let err = reg.get_manifest(&r, &reference).await.unwrap_err();
        assert!(matches!(err, RegistryError::ManifestUnknown(_)), "{reference}: {err}");
    }
}

#[tokio::test]
async fn a_write_invalidates_only_its_repository() {
    let (reg, driver) = registry();
    let (a, b) = (repo("cache/one"), repo("cache/two"));
    push_image(&reg, &a, &tag("t"), "a").await;
    let b1 = push_image(&reg, &b, &tag("t"), "b1").await;
    let b2 = push_image(&reg, &b, &tag("u"), "b2").await;
    assert_eq!(reg.get_manifest(&b, &tag("t")).await.unwrap().digest, b1);
    retag_behind_registry(&driver, &b, "t", &b2).await;
    push_image(&reg, &a, &tag("t"), "a2").await;
    // b's entry survived a's write, so b still reads its cached (now stale) answer.
    assert_eq!(reg.get_manifest(&b, &tag("t")).await.unwrap().digest, b1);
}

#[test]
fn a_read_that_raced_a_change_is_not_inserted() {
    let cache = ManifestCache::default();
    let r = repo("cache/race");
    let before = cache.generation();
    cache.invalidate(&r);
    cache.insert(before, &r, "latest", stored(Bytes::from_static(b"{}")));
    assert!(cache.get(&r, "latest").is_none());
    cache.insert(cache.generation(), &r, "latest", stored(Bytes::from_static(b"{}")));
    assert!(cache.get(&r, "latest").is_some());
}

#[test]
fn a_read_that_raced_storage_changed_is_not_inserted() {
    let cache = ManifestCache::default();
    let r = repo("cache/race2");
    let before = cache.generation();
    cache.clear();
    cache.insert(before, &r, "latest", stored(Bytes::from_static(b"{}")));
    assert!(cache.get(&r, "latest").is_none());
}

#[test]
fn an_oversized_manifest_is_not_cached() {
    let cache = ManifestCache::default();
    let r = repo("cache/big");
    let big = Bytes::from(vec![b' '; (256 << 10) + 1]);
    cache.insert(cache.generation(), &r, "big", stored(big));
    assert!(cache.get(&r, "big").is_none());
    let largest = Bytes::from(vec![b' '; 256 << 10]);
    cache.insert(cache.generation(), &r, "largest", stored(largest));
    assert!(cache.get(&r, "largest").is_some());
}

#[test]
fn the_cache_starts_over_past_its_total_size() {
    let cache = ManifestCache::default();
    let r = repo("cache/full");
    let entry = |_| stored(Bytes::from(vec![b' '; 200 << 10]));
    cache.insert(cache.generation(), &r, "first", entry(0));
    // 16 MiB of 200 KiB entries: the 82nd does not fit, and the cache starts over.
    for i in 1..=81 {
        cache.insert(cache.generation(), &r, &format!("e{i}"), entry(i));
    }
    assert!(cache.get(&r, "first").is_none());
    assert!(cache.get(&r, "e81").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_see_the_old_or_new_manifest_then_the_new() {
    let (reg, _) = registry();
    let reg = Arc::new(reg);
    let r = repo("cache/concurrent");
    let v1 = push_image(&reg, &r, &tag("latest"), "v1").await;
    let v2 = push_image(&reg, &r, &tag("staging"), "v2").await;
    let v2_body = reg.get_manifest(&r, &tag("staging")).await.unwrap().content.clone();
    let writer_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let (reg, r, done) = (reg.clone(), r.clone(), writer_done.clone());
            let (v1, v2) = (v1.clone(), v2.clone());
            tokio::spawn(async move {
                let mut after_write = 0;
                while after_write < 50 {
                    // Read the flag first: a read that starts after the writer finished must see v2.
                    let finished = done.load(std::sync::atomic::Ordering::Acquire);
                    let got = reg.get_manifest(&r, &tag("latest")).await.unwrap().digest.clone();
                    assert!(got == v1 || got == v2, "unexpected {got}");
                    if finished {
                        assert_eq!(got, v2, "a read after the tag moved saw the old manifest");
                        after_write += 1;
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    reg.put_manifest(&r, &tag("latest"), Some(OCI_MANIFEST), v2_body, &Default::default()).await.unwrap();
    writer_done.store(true, std::sync::atomic::Ordering::Release);
    for reader in readers {
        reader.await.unwrap();
    }
}
