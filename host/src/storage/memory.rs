//! In-memory driver on `object_store`'s `InMemory`: for tests and throwaway registries. The same
//! adapter shape serves the object-store backends (S3, Azure, GCS) that build on it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};

use super::{validate_path, ByteStream, FileInfo, FileWriter, Result, StorageDriver, StorageError};

pub struct InMemoryDriver {
    store: Arc<dyn ObjectStore>,
}

impl Default for InMemoryDriver {
    fn default() -> Self {
        Self { store: Arc::new(InMemory::new()) }
    }
}

fn key(path: &str) -> Result<ObjPath> {
    validate_path(path)?;
    Ok(ObjPath::from(&path[1..]))
}

fn map_err(path: &str) -> impl FnOnce(object_store::Error) -> StorageError + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound(path.to_string()),
        other => StorageError::Backend(other.to_string()),
    }
}

impl InMemoryDriver {
    /// Every object at or below `prefix`, which is how a "directory" exists in an object store.
    async fn objects_under(&self, path: &str) -> Result<Vec<ObjPath>> {
        let prefix = key(path)?;
        self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.map_err(map_err(path))
    }
}

#[async_trait]
impl StorageDriver for InMemoryDriver {
    fn name(&self) -> &'static str {
        "inmemory"
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        let got = self.store.get(&key(path)?).await.map_err(map_err(path))?;
        got.bytes().await.map_err(map_err(path))
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        self.store.put(&key(path)?, PutPayload::from(content)).await.map_err(map_err(path))?;
        Ok(())
    }

    async fn reader(&self, path: &str, offset: u64) -> Result<ByteStream> {
        let k = key(path)?;
        let size = self.store.head(&k).await.map_err(map_err(path))?.size;
        if offset > size {
            return Err(StorageError::InvalidOffset { path: path.to_string(), offset });
        }
        if offset == size {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let opts = GetOptions { range: Some(GetRange::Offset(offset)), ..Default::default() };
        let got = self.store.get_opts(&k, opts).await.map_err(map_err(path))?;
        let owned = path.to_string();
        Ok(Box::pin(got.into_stream().map(move |r| r.map_err(|e| map_err(&owned)(e)))))
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let k = key(path)?;
        let mut buf = BytesMut::new();
        if append {
            match self.get_content(path).await {
                Ok(b) => buf.extend_from_slice(&b),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let start = buf.len();
        Ok(Box::new(MemWriter { store: self.store.clone(), key: k, path: path.to_string(), buf, start }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        let k = key(path)?;
        match self.store.head(&k).await {
            Ok(m) => {
                Ok(FileInfo { path: path.to_string(), size: m.size, modified: m.last_modified.into(), is_dir: false })
            }
            Err(object_store::Error::NotFound { .. }) => {
                if self.objects_under(path).await?.is_empty() {
                    Err(StorageError::NotFound(path.to_string()))
                } else {
                    Ok(FileInfo { path: path.to_string(), size: 0, modified: std::time::UNIX_EPOCH, is_dir: true })
                }
            }
            Err(e) => Err(map_err(path)(e)),
        }
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        let k = key(path)?;
        let res = self.store.list_with_delimiter(Some(&k)).await.map_err(map_err(path))?;
        let out: Vec<String> = res
            .common_prefixes
            .iter()
            .chain(res.objects.iter().map(|o| &o.location))
            .map(|p| format!("/{p}"))
            .collect();
        if out.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        Ok(out)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.store.rename(&key(from)?, &key(to)?).await.map_err(map_err(from))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let k = key(path)?;
        match self.store.head(&k).await {
            Ok(_) => return self.store.delete(&k).await.map_err(map_err(path)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(map_err(path)(e)),
        }
        let under = self.objects_under(path).await?;
        if under.is_empty() {
            return Err(StorageError::NotFound(path.to_string()));
        }
        for p in under {
            self.store.delete(&p).await.map_err(map_err(path))?;
        }
        Ok(())
    }
}

/// Buffers the object and puts it whole on commit: objects appear atomically, as in a real store.
struct MemWriter {
    store: Arc<dyn ObjectStore>,
    key: ObjPath,
    path: String,
    buf: BytesMut,
    start: usize,
}

#[async_trait]
impl FileWriter for MemWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let payload = PutPayload::from(self.buf.freeze());
        self.store.put(&self.key, payload).await.map_err(map_err(&self.path))?;
        Ok(())
    }

    async fn cancel(mut self: Box<Self>) -> Result<()> {
        self.buf.truncate(self.start);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_driver_suite() {
        crate::storage::suite::run_all(&super::InMemoryDriver::default()).await;
    }
}
