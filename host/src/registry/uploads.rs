//! Blob uploads: sessions under `_uploads/<id>/` in the repository, hashed while they stream,
//! moved into `blobs/` only once the digest matches, so no client ever sees a partial blob.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::storage::FileWriter;

use super::digest::{Algorithm, Digest, Hasher};
use super::paths::blob_data as blob_path;
use super::{paths, BodyStream, Registry, RegistryError, RepoName, Result};

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    pub size: u64,
}

/// The running hash of each session, so finishing an upload does not read it back. A session
/// without one (after a restart, or after a failed chunk) is re-hashed from storage.
#[derive(Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<HashState>>>>,
    /// Completed sessions whose directories are still being removed.
    finished: Mutex<HashSet<String>>,
}

#[derive(Default)]
pub(super) struct HashState {
    hasher: Option<Hasher>,
    hashed: u64,
}

impl Sessions {
    fn get(&self, id: &str) -> Arc<tokio::sync::Mutex<HashState>> {
        self.map.lock().unwrap().entry(id.to_string()).or_default().clone()
    }

    /// The session's lock if no request holds it (for purging an idle session).
    pub(super) fn try_lock(&self, id: &str) -> Option<tokio::sync::OwnedMutexGuard<HashState>> {
        self.get(id).try_lock_owned().ok()
    }

    pub(super) fn remove(&self, id: &str) {
        self.map.lock().unwrap().remove(id);
    }

    fn is_finished(&self, id: &str) -> bool {
        self.finished.lock().unwrap().contains(id)
    }
}

fn new_upload_id() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Session ids come from URLs: accept only what we (or distribution) generate.
fn check_id(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(())
    } else {
        Err(RegistryError::BlobUploadUnknown)
    }
}

/// RFC 3339 UTC timestamp, the format distribution writes to `startedat`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Copies a body into a writer, hashing as it goes. Returns the bytes copied.
async fn pump(body: &mut BodyStream, w: &mut Box<dyn FileWriter>, mut hasher: Option<&mut Hasher>) -> Result<u64> {
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| RegistryError::BodyRead(e.to_string()))?;
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&chunk);
        }
        n += chunk.len() as u64;
        w.write(chunk).await?;
    }
    Ok(n)
}

impl Registry {
    pub async fn start_upload(&self, repo: &RepoName) -> Result<UploadStatus> {
        let id = new_upload_id();
        let now = Bytes::from(rfc3339(SystemTime::now()));
        self.driver.put_volatile(&paths::upload_started_at(repo, &id), now).await?;
        *self.uploads.get(&id).lock().await = HashState { hasher: Some(Algorithm::Sha256.hasher()), hashed: 0 };
        Ok(UploadStatus { id, size: 0 })
    }

    /// Bytes received so far by a session.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus> {
        check_id(id)?;
        if self.uploads.is_finished(id) {
            return Err(RegistryError::BlobUploadUnknown);
        }
        let size = match self.driver.stat_file(&paths::upload_data(repo, id)).await {
            Ok(info) => info.size,
            // No data yet: the session exists if it was started.
            Err(e) if e.is_not_found() => match self.driver.stat_file(&paths::upload_started_at(repo, id)).await {
                Ok(_) => 0,
                Err(e) if e.is_not_found() => return Err(RegistryError::BlobUploadUnknown),
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(UploadStatus { id: id.to_string(), size })
    }

    /// Appends a chunk. `range` is the client's `Content-Range` (inclusive start and end): the
    /// chunk must start where the session ends, or nothing is written and the session is kept.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<(u64, u64)>,
        mut body: BodyStream,
    ) -> Result<UploadStatus> {
        self.upload_status(repo, id).await?;
        let session = self.uploads.get(id);
        let mut state = session.lock().await;
        // Read the size under the session lock: another chunk may have landed meanwhile.
        let size = self.upload_status(repo, id).await?.size;
        if let Some((start, end)) = range {
            if start != size || end < start {
                return Err(RegistryError::RangeNotSatisfiable {
                    message: format!("chunk {start}-{end} does not continue the upload at offset {size}"),
                    size,
                });
            }
        }
        if state.hashed != size {
            state.hasher = None;
        }
        let mut w = self.driver.writer(&paths::upload_data(repo, id), true).await?;
        let mut hasher = state.hasher.take();
        let copied = match pump(&mut body, &mut w, hasher.as_mut()).await {
            Ok(n) => n,
            Err(e) => {
                // Roll the chunk back so the session stays usable at its previous offset.
                let _ = w.cancel().await;
                state.hasher = None;
                return Err(e);
            }
        };
        if let Some((start, end)) = range {
            if copied != end - start + 1 {
                let _ = w.cancel().await;
                return Err(RegistryError::SizeInvalid(format!(
                    "Content-Range {start}-{end} announced {} bytes, the body had {copied}",
                    end - start + 1
                )));
            }
        }
        let new_size = w.size();
        w.commit().await?;
        state.hasher = hasher;
        state.hashed = new_size;
        Ok(UploadStatus { id: id.to_string(), size: new_size })
    }

    /// Finishes an upload (with an optional last chunk), verifies the digest, and moves the blob
    /// into place. A digest mismatch discards the session and stores nothing.
    pub async fn complete_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        mut body: Option<BodyStream>,
    ) -> Result<u64> {
        check_id(id)?;
        if let Err(d) = self.announce(std::slice::from_ref(digest)).await {
            return Err(RegistryError::Unavailable(format!("garbage collection is deleting {d}; retry")));
        }
        let session = self.uploads.get(id);
        let mut state = session.lock().await;
        let size = match self.upload_status(repo, id).await {
            Ok(status) => status.size,
            Err(e) => {
                self.uploads.remove(id);
                return Err(e);
            }
        };
        if state.hashed != size {
            state.hasher = None;
        }
        let data_path = paths::upload_data(repo, id);
        let mut hasher = state.hasher.take().filter(|h| h.algorithm() == digest.algorithm());
        if size == 0 && self.driver.atomic_writers() {
            if let (Some(body), Some(h)) = (body.as_mut(), hasher.take()) {
                // The whole blob is in this request and the driver publishes objects only when
                // they commit: stream it straight to its final path, no copy.
                let (n, actual) = self.upload_in_place(repo, digest, body, h).await?;
                if &actual != digest {
                    self.discard_upload(repo, id).await;
                    return Err(RegistryError::DigestInvalid(format!(
                        "uploaded content has digest {actual}, not {digest}"
                    )));
                }
                self.sync(&[blob_path(digest), paths::layer_link(repo, digest)]).await?;
                self.discard_upload_later(repo, id);
                return Ok(n);
            }
        }
        // The digest of what the client sent; a driver that does not trust its backend (a
        // plugin) checks what was stored itself, in its writer's commit.
        let mut linked = false;
        let (size, streamed) = match body {
            Some(mut body) => {
                let mut w = self.driver.writer(&data_path, true).await?;
                if let Err(e) = pump(&mut body, &mut w, hasher.as_mut()).await {
                    let _ = w.cancel().await;
                    return Err(e);
                }
                let n = w.size();
                let actual = hasher.map(Hasher::finish);
                if actual.as_ref() == Some(digest) {
                    // Flush the data while the repository's link is written; the blob becomes
                    // visible only with the rename below, so a crash in between leaves a link
                    // to an unknown blob, which reads as unknown.
                    let (committed, link) = tokio::join!(w.commit(), self.link_layer(repo, digest));
                    committed?;
                    link?;
                    linked = true;
                } else {
                    w.commit().await?;
                }
                (n, actual)
            }
            None => {
                if size == 0 {
                    // An empty blob: nothing was ever written, so there is no data to move yet.
                    self.driver.put_content(&data_path, Bytes::new()).await?;
                }
                (size, hasher.map(Hasher::finish))
            }
        };
        // Without a running hash (after a restart, or a failed chunk) the data is read back.
        let actual = match streamed {
            Some(d) => d,
            None => self.hash_file(&data_path, digest.algorithm()).await?,
        };
        if &actual != digest {
            self.discard_upload(repo, id).await;
            return Err(RegistryError::DigestInvalid(format!("uploaded content has digest {actual}, not {digest}")));
        }
        if !linked {
            self.link_layer(repo, digest).await?;
        }
        // Replacing a blob that is already there is harmless: same digest, same bytes, and
        // readers keep the file they opened.
        let blob = blob_path(digest);
        self.driver.rename(&data_path, &blob).await?;
        self.sync(&[blob, paths::layer_link(repo, digest)]).await?;
        self.discard_upload_later(repo, id);
        Ok(size)
    }

    /// Streams a whole blob to its final path through a writer that publishes only on commit,
    /// and commits only if the digest matches, so a bad upload leaves nothing. The link is
    /// written while the object completes: a link to a blob not yet there reads as unknown.
    /// Returns the size and the digest of what the client sent.
    async fn upload_in_place(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: &mut BodyStream,
        mut h: Hasher,
    ) -> Result<(u64, Digest)> {
        let mut w = self.driver.writer(&blob_path(digest), false).await?;
        if let Err(e) = pump(body, &mut w, Some(&mut h)).await {
            let _ = w.cancel().await;
            return Err(e);
        }
        let (n, actual) = (w.size(), h.finish());
        if &actual != digest {
            w.cancel().await?;
            return Ok((n, actual));
        }
        let (committed, linked) = tokio::join!(w.commit(), self.link_layer(repo, digest));
        committed?;
        linked?;
        Ok((n, actual))
    }

    /// Pushes a whole blob in one request (`POST ?digest=`).
    pub async fn upload_monolithic(&self, repo: &RepoName, digest: &Digest, body: BodyStream) -> Result<u64> {
        let status = self.start_upload(repo).await?;
        *self.uploads.get(&status.id).lock().await = HashState { hasher: Some(digest.algorithm().hasher()), hashed: 0 };
        let result = self.complete_upload(repo, &status.id, digest, Some(body)).await;
        if result.is_err() {
            self.discard_upload(repo, &status.id).await;
        }
        result
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.upload_status(repo, id).await?;
        // Wait for a chunk in flight to finish before the directory goes.
        let session = self.uploads.get(id);
        let _guard = session.lock().await;
        self.discard_upload(repo, id).await;
        Ok(())
    }

    /// Removes a finished session's debris after the answer has gone out.
    fn discard_upload_later(&self, repo: &RepoName, id: &str) {
        self.uploads.remove(id);
        self.uploads.finished.lock().unwrap().insert(id.to_string());
        let driver = self.driver.clone();
        let dir = paths::upload_dir(repo, id);
        let uploads = self.uploads.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = driver.delete(&dir).await {
                tracing::warn!(path = dir, error = %e, "could not remove upload directory");
            }
            uploads.finished.lock().unwrap().remove(&id);
        });
    }

    async fn discard_upload(&self, repo: &RepoName, id: &str) {
        self.uploads.remove(id);
        if let Err(e) = self.driver.delete(&paths::upload_dir(repo, id)).await {
            if !e.is_not_found() {
                tracing::warn!(upload = id, error = %e, "could not remove upload directory");
            }
        }
    }

    async fn hash_file(&self, path: &str, algorithm: Algorithm) -> Result<Digest> {
        let mut h = algorithm.hasher();
        let mut stream = self.driver.reader(path, 0).await?;
        while let Some(chunk) = stream.next().await {
            h.update(&chunk?);
        }
        Ok(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096)), "2024-02-29T12:34:56Z");
    }
}
