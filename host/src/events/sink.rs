//! What an endpoint delivers through: the native webhook or a plugin.

use async_trait::async_trait;

use super::outbox::Stored;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Not delivered this time: retried (with backoff past the threshold).
    #[error("{0}")]
    Retry(String),
    /// Never deliverable: dropped and counted.
    #[error("dropped: {0}")]
    Drop(String),
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// `webhook` or `plugin`, for `/debug/vars`.
    fn kind(&self) -> &'static str;
    /// Delivers a batch, oldest first; each element is one event's JSON.
    async fn deliver(&self, events: &[Stored]) -> Result<(), SinkError>;
}
