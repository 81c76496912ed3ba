//! Upload state (`registry/uploads.rs`): offsets, chunk continuation, rollback of a bad chunk,
//! digest verification, cancel, and resuming a session in a new `Registry` over the same storage
//! (a restart).

use futures_util::StreamExt;

use super::*;
use crate::registry::RegistryError;

async fn read_all(reg: &Registry, r: &RepoName, d: &Digest) -> Vec<u8> {
    let mut read = reg.read_blob(r, d, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = read.body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn a_new_session_is_at_offset_zero() {
    let (reg, _) = registry();
    let r = repo("up/new");
    let s = reg.start_upload(&r).await.unwrap();
    assert_eq!(s.size, 0);
    assert_eq!(reg.upload_status(&r, &s.id).await.unwrap(), s);
}

#[tokio::test]
async fn each_chunk_advances_the_offset() {
    let (reg, _) = registry();
    let r = repo("up/offsets");
    let id = reg.start_upload(&r).await.unwrap().id;
    assert_eq!(reg.append_upload(&r, &id, None, body(&[b"abc"])).await.unwrap().size, 3);
    assert_eq!(reg.append_upload(&r, &id, Some((3, 5)), body(&[b"d", b"ef"])).await.unwrap().size, 6);
    assert_eq!(reg.upload_status(&r, &id).await.unwrap().size, 6);
}

#[tokio::test]
async fn a_chunk_that_does_not_continue_the_session_is_refused() {
    let (reg, _) = registry();
    let r = repo("up/gap");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"abc"])).await.unwrap();
    for range in [(4, 6), (0, 2), (2, 4)] {
        let err = reg.append_upload(&r, &id, Some(range), body(&[b"xyz"])).await.unwrap_err();
        assert!(matches!(err, RegistryError::RangeNotSatisfiable { size: 3, .. }), "{range:?}: {err}");
    }
    assert_eq!(reg.upload_status(&r, &id).await.unwrap().size, 3);
}

#[tokio::test]
async fn a_chunk_shorter_than_its_content_range_is_rolled_back() {
    let (reg, _) = registry();
    let r = repo("up/short");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"abc"])).await.unwrap();
    let err = reg.append_upload(&r, &id, Some((3, 9)), body(&[b"de"])).await.unwrap_err();
    assert!(matches!(err, RegistryError::SizeInvalid(_)), "{err}");
    assert_eq!(reg.upload_status(&r, &id).await.unwrap().size, 3);
}

#[tokio::test]
async fn a_chunk_whose_body_fails_is_rolled_back_and_the_session_completes() {
    let (reg, _) = registry();
    let r = repo("up/broken");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"abc"])).await.unwrap();
    let failing: BodyStream = Box::pin(futures_util::stream::iter(vec![
        Ok(bytes::Bytes::from_static(b"zz")),
        Err(std::io::Error::other("client went away")),
    ]));
    let err = reg.append_upload(&r, &id, None, failing).await.unwrap_err();
    assert!(matches!(err, RegistryError::BodyRead(_)), "{err}");
    assert_eq!(reg.upload_status(&r, &id).await.unwrap().size, 3);
    // The running hash was dropped with the chunk; completing re-hashes what is stored.
    reg.append_upload(&r, &id, Some((3, 5)), body(&[b"def"])).await.unwrap();
    let d = sha256(b"abcdef");
    assert_eq!(reg.complete_upload(&r, &id, &d, None).await.unwrap(), 6);
    assert_eq!(read_all(&reg, &r, &d).await, b"abcdef");
}

#[tokio::test]
async fn completing_with_the_right_digest_publishes_the_blob() {
    let (reg, _) = registry();
    let r = repo("up/complete");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"hello "])).await.unwrap();
    let d = sha256(b"hello world");
    assert_eq!(reg.complete_upload(&r, &id, &d, Some(body(&[b"world"]))).await.unwrap(), 11);
    assert_eq!(reg.stat_blob(&r, &d).await.unwrap(), 11);
    assert_eq!(read_all(&reg, &r, &d).await, b"hello world");
    let gone = reg.upload_status(&r, &id).await.unwrap_err();
    assert!(matches!(gone, RegistryError::BlobUploadUnknown), "{gone}");
}

#[tokio::test]
async fn completing_a_whole_blob_in_one_request_publishes_it() {
    let (reg, _) = registry();
    let r = repo("up/oneshot");
    let id = reg.start_upload(&r).await.unwrap().id;
    let d = sha256(b"all at once");
    assert_eq!(reg.complete_upload(&r, &id, &d, Some(body(&[b"all ", b"at once"]))).await.unwrap(), 11);
    assert_eq!(read_all(&reg, &r, &d).await, b"all at once");
}

#[tokio::test]
async fn completing_with_the_wrong_digest_stores_nothing() {
    let (reg, _) = registry();
    let r = repo("up/mismatch");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"abc"])).await.unwrap();
    let claimed = sha256(b"something else");
    let err = reg.complete_upload(&r, &id, &claimed, None).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid(_)), "{err}");
    assert!(matches!(reg.stat_blob(&r, &claimed).await, Err(RegistryError::BlobUnknown(_))));
    assert!(matches!(reg.stat_blob(&r, &sha256(b"abc")).await, Err(RegistryError::BlobUnknown(_))));
    assert!(matches!(reg.upload_status(&r, &id).await, Err(RegistryError::BlobUploadUnknown)));
}

#[tokio::test]
async fn an_empty_blob_completes_without_a_chunk() {
    let (reg, _) = registry();
    let r = repo("up/empty");
    let id = reg.start_upload(&r).await.unwrap().id;
    let d = sha256(b"");
    assert_eq!(reg.complete_upload(&r, &id, &d, None).await.unwrap(), 0);
    assert_eq!(reg.stat_blob(&r, &d).await.unwrap(), 0);
}

#[tokio::test]
async fn a_monolithic_upload_with_the_wrong_digest_leaves_no_session() {
    let (reg, driver) = registry();
    let r = repo("up/mono");
    let claimed = sha256(b"other");
    let err = reg.upload_monolithic(&r, &claimed, body(&[b"data"])).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid(_)), "{err}");
    let sessions = driver.list(&format!("{}/_uploads", crate::registry::paths::repo(&r))).await;
    assert!(sessions.as_ref().map_or(true, |s| s.is_empty()), "{sessions:?}");
}

#[tokio::test]
async fn a_cancelled_session_is_unknown() {
    let (reg, _) = registry();
    let r = repo("up/cancel");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"abc"])).await.unwrap();
    reg.cancel_upload(&r, &id).await.unwrap();
    assert!(matches!(reg.upload_status(&r, &id).await, Err(RegistryError::BlobUploadUnknown)));
    let err = reg.append_upload(&r, &id, None, body(&[b"more"])).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobUploadUnknown), "{err}");
    let err = reg.cancel_upload(&r, &id).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobUploadUnknown), "{err}");
}

#[tokio::test]
async fn a_session_is_scoped_to_its_repository() {
    let (reg, _) = registry();
    let (a, b) = (repo("up/a"), repo("up/b"));
    let id = reg.start_upload(&a).await.unwrap().id;
    assert!(matches!(reg.upload_status(&b, &id).await, Err(RegistryError::BlobUploadUnknown)));
}

#[tokio::test]
async fn unknown_and_malformed_session_ids_are_unknown() {
    let (reg, _) = registry();
    let r = repo("up/ids");
    for id in ["0b7c5a5e-0000-4000-8000-000000000000", "../../etc", "", "a/b", &"x".repeat(129)] {
        let err = reg.upload_status(&r, id).await.unwrap_err();
        assert!(matches!(err, RegistryError::BlobUploadUnknown), "{id:?}: {err}");
    }
}

#[tokio::test]
async fn a_session_resumes_after_a_restart() {
    let (reg, driver) = registry();
    let r = repo("up/restart");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"before "])).await.unwrap();
    drop(reg);
    // A new process over the same storage: no running hash, the offset comes from storage.
    let reg = Registry::new(driver);
    assert_eq!(reg.upload_status(&r, &id).await.unwrap().size, 7);
    let err = reg.append_upload(&r, &id, Some((0, 2)), body(&[b"xyz"])).await.unwrap_err();
    assert!(matches!(err, RegistryError::RangeNotSatisfiable { size: 7, .. }), "{err}");
    assert_eq!(reg.append_upload(&r, &id, Some((7, 11)), body(&[b"after"])).await.unwrap().size, 12);
    let d = sha256(b"before after");
    assert_eq!(reg.complete_upload(&r, &id, &d, None).await.unwrap(), 12);
    assert_eq!(read_all(&reg, &r, &d).await, b"before after");
}

#[tokio::test]
async fn a_restarted_session_still_verifies_the_digest() {
    let (reg, driver) = registry();
    let r = repo("up/restart-bad");
    let id = reg.start_upload(&r).await.unwrap().id;
    reg.append_upload(&r, &id, None, body(&[b"before "])).await.unwrap();
    drop(reg);
    let reg = Registry::new(driver);
    let err = reg.complete_upload(&r, &id, &sha256(b"before "), Some(body(&[b"tampered"]))).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid(_)), "{err}");
}
