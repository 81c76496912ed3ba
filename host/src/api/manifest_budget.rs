//! One budget of bytes for every manifest body held in memory at once (`http.manifestmemory`).
//!
//! A manifest `PUT` is read whole before it is parsed, up to the 8 MiB manifest cap. Without a
//! shared budget, N clients that each send most of a maximal body and stall pin N × 8 MiB (100
//! of them held over 800 MiB). With it, a body with a declared length reserves that many bytes
//! before the first is read and is refused at once (503 UNAVAILABLE, `Retry-After`) when they
//! are not there; a chunked body reserves as its bytes arrive. The reservation is released when
//! the request is done with the bytes.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::request_body::{BodyError, RequestBody};

/// Reservations of a chunked body grow by at least this much at a time.
const CHUNKED_STEP: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ManifestReadError {
    #[error("manifest exceeds {0} bytes")]
    TooLarge(usize),
    #[error("manifest memory budget (http.manifestmemory) is in use by other uploads")]
    OverBudget,
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// The budget; `None` inside: no limit (`http.manifestmemory: 0`).
#[derive(Debug, Clone)]
pub struct ManifestBudget(Option<Arc<Semaphore>>);

/// Bytes of the budget held by one body, given back on drop.
pub struct Reservation(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl ManifestBudget {
    pub fn new(bytes: usize) -> Self {
        ManifestBudget((bytes > 0).then(|| Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)))))
    }

    fn reserve(&self, bytes: usize, into: &mut Option<OwnedSemaphorePermit>) -> Result<(), ManifestReadError> {
        let Some(sem) = &self.0 else { return Ok(()) };
        let n = u32::try_from(bytes).map_err(|_| ManifestReadError::OverBudget)?;
        let p = sem.clone().try_acquire_many_owned(n).map_err(|_| ManifestReadError::OverBudget)?;
        match into {
            Some(held) => held.merge(p),
            None => *into = Some(p),
        }
        Ok(())
    }

    /// Reads `body` whole: at most `cap` bytes, `declared` (its Content-Length) reserved up
    /// front, within the budget.
    pub async fn read(
        &self,
        mut body: RequestBody,
        declared: Option<u64>,
        cap: usize,
    ) -> Result<(Bytes, Reservation), ManifestReadError> {
        let mut held = None;
        let mut reserved = 0usize;
        let mut buf = match declared {
            Some(n) if n > cap as u64 => return Err(ManifestReadError::TooLarge(cap)),
            Some(n) => {
                self.reserve(n as usize, &mut held)?;
                reserved = n as usize;
                BytesMut::with_capacity(n as usize)
            }
            None => BytesMut::new(),
        };
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            let len = buf.len() + data.len();
            if len > cap {
                return Err(ManifestReadError::TooLarge(cap));
            }
            if len > reserved {
                let more = (len - reserved).max(CHUNKED_STEP).min(cap - reserved);
                self.reserve(more, &mut held)?;
                reserved += more;
            }
            buf.extend_from_slice(&data);
        }
        Ok((buf.freeze(), Reservation(held)))
    }
}
