//! What can stop a garbage collection run.

use std::time::SystemTime;

use crate::registry::RegistryError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Another run holds the lock (in this process or another one on the same storage).
    #[error("another garbage collection is running ({owner}); its lock expires at {}", crate::registry::rfc3339(*.expires))]
    Locked { owner: String, expires: SystemTime },
    /// The registry is in read-only mode: a server must not delete (run `berth garbage-collect`).
    #[error("the registry is read-only (storage.maintenance.readonly)")]
    ReadOnly,
    #[error("the lock was lost during the run (taken over after it expired): stopped")]
    LockLost,
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl GcError {
    /// Whether the run was refused because another one holds the lock.
    pub fn is_locked(&self) -> bool {
        matches!(self, GcError::Locked { .. })
    }
}
