//! A hook told before a write links content that may already exist (a mount, a finished upload,
//! a manifest and what it references), so a garbage collection running beside the server can
//! spare that content, or refuse the write while it deletes it (see `crate::gc`).

use async_trait::async_trait;

use super::{Digest, Registry};
use crate::storage::StorageDriver;

#[async_trait]
pub trait WriteWatch: Send + Sync + 'static {
    /// Records that a write is about to rely on `digests`. `Err(d)`: `d` is being deleted and
    /// the write must fail (it may be retried once the collection is over).
    async fn linking(&self, driver: &dyn StorageDriver, digests: &[Digest]) -> Result<(), Digest>;
}

impl Registry {
    /// Installs the write watch (once; later calls are ignored).
    pub fn set_write_watch(&self, w: std::sync::Arc<dyn WriteWatch>) {
        let _ = self.watch.set(w);
    }

    /// Tells the watch, if any, what a write is about to link.
    pub(super) async fn announce(&self, digests: &[Digest]) -> Result<(), Digest> {
        match self.watch.get() {
            Some(w) => w.linking(&*self.driver, digests).await,
            None => Ok(()),
        }
    }
}
