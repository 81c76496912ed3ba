//! OCI error bodies. Every `RegistryError` gets its spec code and HTTP status here, in one place.

use http::{HeaderValue, StatusCode};
use serde_json::json;

use crate::registry::RegistryError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: serde_json::Value,
    /// Extra headers the spec asks for with some errors (416's `Content-Range`).
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), detail: serde_json::Value::Null, headers: Vec::new() }
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", message)
    }

    pub fn body(&self) -> String {
        let mut err = json!({"code": self.code, "message": self.message});
        if !self.detail.is_null() {
            err["detail"] = self.detail.clone();
        }
        json!({ "errors": [err] }).to_string()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        use StatusCode as S;
        let message = e.to_string();
        let (status, code) = match &e {
            E::BlobUnknown(_) => (S::NOT_FOUND, "BLOB_UNKNOWN"),
            E::BlobUploadInvalid(_) | E::BodyRead(_) => (S::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            E::BlobUploadUnknown => (S::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            E::DigestInvalid(_) => (S::BAD_REQUEST, "DIGEST_INVALID"),
            E::ManifestBlobUnknown(_) => (S::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            E::ManifestInvalid(_) => (S::BAD_REQUEST, "MANIFEST_INVALID"),
            E::ManifestUnknown(_) => (S::NOT_FOUND, "MANIFEST_UNKNOWN"),
            E::ManifestUnverified(_) => (S::BAD_REQUEST, "MANIFEST_UNVERIFIED"),
            E::NameInvalid(_) => (S::BAD_REQUEST, "NAME_INVALID"),
            E::NameUnknown(_) => (S::NOT_FOUND, "NAME_UNKNOWN"),
            E::TagInvalid(_) => (S::BAD_REQUEST, "TAG_INVALID"),
            E::SizeInvalid(_) => (S::BAD_REQUEST, "SIZE_INVALID"),
            E::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            E::RangeNotSatisfiable { .. } => (S::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            E::Unsupported(_) => (S::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            E::PreconditionFailed(_) => (S::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
            E::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            E::Denied(_) => (S::FORBIDDEN, "DENIED"),
            E::Storage(_) => (S::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        };
        let mut err = ApiError::new(status, code, message);
        match &e {
            E::BlobUnknown(d) | E::ManifestBlobUnknown(d) => err.detail = json!({"digest": d.to_string()}),
            E::RangeNotSatisfiable { size, .. } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    err.headers.push(("content-range", v));
                }
            }
            E::Storage(_) => {
                tracing::error!(error = %e, "storage failure");
                err.message = "internal storage error".into();
            }
            _ => {}
        }
        err
    }
}
