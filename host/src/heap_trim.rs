//! Gives freed heap memory back to the system after a wave of connections has gone.
//!
//! Each connection's buffers are small blocks from glibc's arenas; when thousands of them close
//! (an idle flood shed, a load over), the arenas are full of free blocks between live ones, and
//! glibc returns only the free space at the top of a heap. Without this, 2,000 idle connections
//! left 58 MiB resident after they all closed; `malloc_trim` releases every free page. It walks
//! the arenas under their locks, so it runs only after many connections closed, at most once
//! per [`PERIOD`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the closed-connection count is looked at.
const PERIOD: Duration = Duration::from_secs(5);

/// Connections closed since the last trim that make a trim worth its cost.
const CLOSED_BEFORE_TRIM: u64 = 64;

/// Counts closed connections; the task started by [`spawn`] trims after enough of them.
#[derive(Debug, Default)]
pub struct HeapTrim {
    closed: AtomicU64,
}

impl HeapTrim {
    pub fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// One connection that held as much as a wave of them closed (stalled HTTP/2 downloads,
    /// about 370 KiB a stream, up to 100 streams): trim at the next look.
    pub fn soon(&self) {
        self.closed.fetch_max(CLOSED_BEFORE_TRIM, Ordering::Relaxed);
    }
}

/// Starts the trimming task; it ends when `trim` is dropped everywhere else.
pub fn spawn(trim: &Arc<HeapTrim>) {
    let weak = Arc::downgrade(trim);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(t) = weak.upgrade() else { return };
            if t.closed.load(Ordering::Relaxed) >= CLOSED_BEFORE_TRIM {
                t.closed.store(0, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(trim_now).await;
            }
        }
    });
}

fn trim_now() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
