//! Upload purging (`registry/purge.rs`): sessions older than the age limit go, younger ones stay,
//! a dry run only reports, and a session with a request in flight is never touched.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::registry::uploads::rfc3339;
use crate::registry::{paths, RegistryError};

const HOUR: Duration = Duration::from_secs(3600);

/// Starts a session and backdates its `startedat` by `age`.
async fn session_started_ago(reg: &Registry, driver: &Arc<dyn StorageDriver>, r: &RepoName, age: Duration) -> String {
    let id = reg.start_upload(r).await.unwrap().id;
    reg.append_upload(r, &id, None, body(&[b"partial"])).await.unwrap();
    let started = Bytes::from(rfc3339(SystemTime::now() - age));
    driver.put_content(&paths::upload_started_at(r, &id), started).await.unwrap();
    id
}

fn is_gone(result: crate::registry::Result<crate::registry::UploadStatus>) -> bool {
    matches!(result, Err(RegistryError::BlobUploadUnknown))
}

#[tokio::test]
async fn a_session_older_than_the_age_is_removed() {
    let (reg, driver) = registry();
    let r = repo("purge/old");
    let id = session_started_ago(&reg, &driver, &r, 2 * HOUR).await;
    let report = reg.purge_uploads(HOUR, false).await.unwrap();
    assert_eq!(report.purged, [format!("purge/old/_uploads/{id}")]);
    assert_eq!(report.kept, 0);
    assert!(is_gone(reg.upload_status(&r, &id).await));
    let left = driver.list(&format!("{}/_uploads", paths::repo(&r))).await;
    assert!(left.as_ref().map_or(true, |l| l.is_empty()), "{left:?}");
}

#[tokio::test]
async fn a_session_younger_than_the_age_is_kept() {
    let (reg, driver) = registry();
    let r = repo("purge/young");
    let young = session_started_ago(&reg, &driver, &r, Duration::from_secs(60)).await;
    let old = session_started_ago(&reg, &driver, &r, 2 * HOUR).await;
    let report = reg.purge_uploads(HOUR, false).await.unwrap();
    assert_eq!(report.purged, [format!("purge/young/_uploads/{old}")]);
    assert_eq!(report.kept, 1);
    assert_eq!(reg.upload_status(&r, &young).await.unwrap().size, b"partial".len() as u64);
}

#[tokio::test]
async fn a_fresh_session_without_backdating_is_kept() {
    let (reg, _) = registry();
    let r = repo("purge/fresh");
    let id = reg.start_upload(&r).await.unwrap().id;
    let report = reg.purge_uploads(HOUR, false).await.unwrap();
    assert!(report.purged.is_empty());
    assert_eq!(report.kept, 1);
    assert_eq!(reg.upload_status(&r, &id).await.unwrap().size, 0);
}

#[tokio::test]
async fn a_dry_run_reports_and_removes_nothing() {
    let (reg, driver) = registry();
    let r = repo("purge/dry");
    let id = session_started_ago(&reg, &driver, &r, 2 * HOUR).await;
    let report = reg.purge_uploads(HOUR, true).await.unwrap();
    assert_eq!(report.purged, [format!("purge/dry/_uploads/{id}")]);
    assert_eq!(reg.upload_status(&r, &id).await.unwrap().size, b"partial".len() as u64);
    // The session is still usable: it completes into a blob.
    let d = sha256(b"partial");
    reg.complete_upload(&r, &id, &d, None).await.unwrap();
    assert_eq!(reg.stat_blob(&r, &d).await.unwrap(), 7);
}

#[tokio::test]
async fn purging_spans_repositories() {
    let (reg, driver) = registry();
    let (a, b) = (repo("purge/a"), repo("purge/deep/b"));
    let ida = session_started_ago(&reg, &driver, &a, 2 * HOUR).await;
    let idb = session_started_ago(&reg, &driver, &b, 2 * HOUR).await;
    let mut purged = reg.purge_uploads(HOUR, false).await.unwrap().purged;
    purged.sort();
    assert_eq!(purged, [format!("purge/a/_uploads/{ida}"), format!("purge/deep/b/_uploads/{idb}")]);
}

#[tokio::test]
async fn a_session_with_a_chunk_in_flight_is_untouched() {
    let (reg, driver) = registry();
    let reg = Arc::new(reg);
    let r = repo("purge/busy");
    let id = session_started_ago(&reg, &driver, &r, 2 * HOUR).await;
    // A chunk whose body is still arriving holds the session.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let chunk: BodyStream =
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }));
    let append = {
        let (reg, r, id) = (reg.clone(), r.clone(), id.clone());
        tokio::spawn(async move { reg.append_upload(&r, &id, None, chunk).await })
    };
    tx.send(Ok(Bytes::from_static(b" more"))).await.unwrap();
    // Wait until the append holds the session lock (it does before it reads the body).
    while reg.uploads.try_lock(&id).is_some() {
        tokio::task::yield_now().await;
    }
    let report = reg.purge_uploads(HOUR, false).await.unwrap();
    assert!(report.purged.is_empty(), "{report:?}");
    assert_eq!(report.kept, 1);
    drop(tx);
    let status = append.await.unwrap().unwrap();
    assert_eq!(status.size, b"partial more".len() as u64);
    let d = sha256(b"partial more");
    reg.complete_upload(&r, &id, &d, None).await.unwrap();
    assert_eq!(reg.stat_blob(&r, &d).await.unwrap(), 12);
}

#[tokio::test]
async fn a_purged_session_is_unknown_to_its_client() {
    let (reg, driver) = registry();
    let r = repo("purge/client");
    let id = session_started_ago(&reg, &driver, &r, 2 * HOUR).await;
    reg.purge_uploads(HOUR, false).await.unwrap();
    let err = reg.append_upload(&r, &id, None, body(&[b"late"])).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobUploadUnknown), "{err}");
    let err = reg.complete_upload(&r, &id, &sha256(b"partial"), None).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobUploadUnknown), "{err}");
}
