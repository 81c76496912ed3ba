//! A decorator that times every storage operation and counts its failures into the process
//! metrics, whatever the driver. It forwards every trait method, defaulted ones included, so the
//! inner driver's own behaviour (verification, atomic writers, redirects, durability) is kept.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::{
    ByteStream, Expect, FileInfo, FileWriter, FlatPage, ListPage, Result, StorageDriver, StorageError, Version,
};
use crate::metrics::{self, StorageLabels};

/// The operations measured, in the order of `MeteredDriver::ops`.
#[derive(Clone, Copy)]
enum Op {
    RedirectUrl,
    GetContent,
    PutContent,
    PutVolatile,
    Sync,
    Reader,
    Writer,
    Write,
    Commit,
    Cancel,
    Stat,
    List,
    ListPage,
    ListFlat,
    Rename,
    Delete,
    GetVersioned,
    PutIf,
}

const OPS: [(Op, &str); 18] = [
    (Op::RedirectUrl, "redirect_url"),
    (Op::GetContent, "get_content"),
    (Op::PutContent, "put_content"),
    (Op::PutVolatile, "put_volatile"),
    (Op::Sync, "sync"),
    (Op::Reader, "reader"),
    (Op::Writer, "writer"),
    (Op::Write, "write"),
    (Op::Commit, "commit"),
    (Op::Cancel, "cancel"),
    (Op::Stat, "stat"),
    (Op::List, "list"),
    (Op::ListPage, "list_page"),
    (Op::ListFlat, "list_flat"),
    (Op::Rename, "rename"),
    (Op::Delete, "delete"),
    (Op::GetVersioned, "get_versioned"),
    (Op::PutIf, "put_if"),
];

/// One operation's metric handles, resolved once so the hot path takes no label lookup.
#[derive(Clone)]
struct OpMetrics {
    latency: Histogram,
    errors: Counter,
}

impl OpMetrics {
    fn record<T>(&self, started: Instant, result: &Result<T>) {
        self.latency.observe(started.elapsed().as_secs_f64());
        // A missing path and a lost compare-and-swap are answers, not failures of the storage.
        if result.as_ref().is_err_and(|e| !e.is_not_found() && !matches!(e, StorageError::Conflict { .. })) {
            self.errors.inc();
        }
    }
}

pub struct MeteredDriver {
    inner: Arc<dyn StorageDriver>,
    ops: Arc<[OpMetrics]>,
}

impl MeteredDriver {
    pub fn new(inner: Arc<dyn StorageDriver>) -> MeteredDriver {
        let m = metrics::get();
        let driver = inner.name();
        let ops = OPS
            .iter()
            .map(|&(_, op)| {
                let labels = StorageLabels { driver, op };
                OpMetrics {
                    latency: m.storage_duration.get_or_create(&labels).clone(),
                    errors: m.storage_errors.get_or_create(&labels).clone(),
                }
            })
            .collect();
        MeteredDriver { inner, ops }
    }

    fn op(&self, op: Op) -> &OpMetrics {
        &self.ops[op as usize]
    }

    async fn timed<T>(&self, op: Op, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = f.await;
        self.op(op).record(started, &result);
        result
    }
}

#[async_trait]
impl StorageDriver for MeteredDriver {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn atomic_writers(&self) -> bool {
        self.inner.atomic_writers()
    }

    fn sync_covers(&self, local: &std::path::Path) -> bool {
        self.inner.sync_covers(local)
    }

    fn conditional_writes(&self) -> bool {
        self.inner.conditional_writes()
    }

    async fn get_versioned(&self, path: &str) -> Result<(Bytes, Version)> {
        self.timed(Op::GetVersioned, self.inner.get_versioned(path)).await
    }

    async fn put_if(&self, path: &str, content: Bytes, expect: Expect) -> Result<()> {
        self.timed(Op::PutIf, self.inner.put_if(path, content, expect)).await
    }

    async fn redirect_url(&self, path: &str) -> Result<Option<String>> {
        self.timed(Op::RedirectUrl, self.inner.redirect_url(path)).await
    }

    async fn get_content(&self, path: &str) -> Result<Bytes> {
        self.timed(Op::GetContent, self.inner.get_content(path)).await
    }

    async fn put_content(&self, path: &str, content: Bytes) -> Result<()> {
        self.timed(Op::PutContent, self.inner.put_content(path, content)).await
    }

    async fn put_volatile(&self, path: &str, content: Bytes) -> Result<()> {
        self.timed(Op::PutVolatile, self.inner.put_volatile(path, content)).await
    }

    async fn sync(&self, paths: &[String]) -> Result<()> {
        self.timed(Op::Sync, self.inner.sync(paths)).await
    }

    /// Times opening the stream; the bytes flow at the client's pace and are not timed.
    async fn reader(&self, path: &str, offset: u64) -> Result<ByteStream> {
        self.timed(Op::Reader, self.inner.reader(path, offset)).await
    }

    async fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let inner = self.timed(Op::Writer, self.inner.writer(path, append)).await?;
        Ok(Box::new(MeteredWriter { inner, ops: self.ops.clone() }))
    }

    async fn stat(&self, path: &str) -> Result<FileInfo> {
        self.timed(Op::Stat, self.inner.stat(path)).await
    }

    async fn stat_file(&self, path: &str) -> Result<FileInfo> {
        self.timed(Op::Stat, self.inner.stat_file(path)).await
    }

    async fn list(&self, path: &str) -> Result<Vec<String>> {
        self.timed(Op::List, self.inner.list(path)).await
    }

    async fn list_page(&self, path: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        self.timed(Op::ListPage, self.inner.list_page(path, start_after, limit)).await
    }

    async fn list_flat(&self, path: &str, start_after: &str, limit: usize) -> Result<Option<FlatPage>> {
        self.timed(Op::ListFlat, self.inner.list_flat(path, start_after, limit)).await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.timed(Op::Rename, self.inner.rename(from, to)).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.timed(Op::Delete, self.inner.delete(path)).await
    }
}

/// Times each chunk written, the commit and the cancel of a writer.
struct MeteredWriter {
    inner: Box<dyn FileWriter>,
    ops: Arc<[OpMetrics]>,
}

#[async_trait]
impl FileWriter for MeteredWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.write(data).await;
        self.ops[Op::Write as usize].record(started, &result);
        result
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.commit().await;
        self.ops[Op::Commit as usize].record(started, &result);
        result
    }

    async fn cancel(self: Box<Self>) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.cancel().await;
        self.ops[Op::Cancel as usize].record(started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::FilesystemDriver;

    #[tokio::test]
    async fn forwards_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let d = MeteredDriver::new(Arc::new(FilesystemDriver::open(dir.path()).unwrap()));
        let series = |name: &str, op: &str| {
            metrics::sample(&format!(r#"berth_storage_operation_{name}{{driver="filesystem",op="{op}"}}"#))
        };
        let stats_before = series("duration_seconds_count", "stat");
        let errors_before = series("errors_total", "rename");
        d.put_content("/a/b", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(d.stat("/a/b").await.unwrap().size, 1);
        assert!(d.stat("/a/missing").await.unwrap_err().is_not_found());
        assert!(d.rename("/bad//path", "/a/c").await.is_err());
        let mut w = d.writer("/a/w", false).await.unwrap();
        w.write(Bytes::from_static(b"yz")).await.unwrap();
        assert_eq!(w.size(), 2);
        w.commit().await.unwrap();
        assert_eq!(d.get_content("/a/w").await.unwrap(), Bytes::from_static(b"yz"));
        assert_eq!(d.name(), "filesystem");
        // Tests share the process's metrics: compare with what was there before.
        assert_eq!(series("duration_seconds_count", "stat"), stats_before + 2.0);
        assert_eq!(series("errors_total", "rename"), errors_before + 1.0);
        assert_eq!(series("errors_total", "stat"), 0.0, "not-found is not an error");
        assert!(series("duration_seconds_count", "commit") >= 1.0);
    }
}
