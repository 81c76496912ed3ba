//! The domain's errors. `api::error` maps each to its OCI error code and HTTP status in one place.

use crate::storage::StorageError;

use super::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(Digest),
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("provided digest did not match uploaded content or is malformed: {0}")]
    DigestInvalid(String),
    #[error("blob unknown to registry: {0}")]
    ManifestBlobUnknown(Digest),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest failed signature verification: {0}")]
    ManifestUnverified(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("manifest tag did not match URI: invalid tag {0:?}")]
    TagInvalid(String),
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    #[error("content too large: {0}")]
    TooLarge(String),
    #[error("requested range not satisfiable: {message}")]
    RangeNotSatisfiable { message: String, size: u64 },
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// A garbage collection is deleting content this write needs: retry after it.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    /// An admission policy refused the write (`crate::admission`).
    #[error(transparent)]
    Denied(#[from] crate::admission::Denied),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
