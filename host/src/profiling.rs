//! Profiling for the debug server: CPU profiles in pprof's format (a gzip-compressed
//! `perftools.profiles.Profile`, what `go tool pprof` and the `pprof` tools read), and heap
//! statistics from glibc's allocator.
//!
//! The CPU profiler samples every thread on a timer signal (SIGPROF) and is process-wide, so one
//! profile runs at a time; a second request is refused rather than queued.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

/// Longest profile: a request that holds the debug connection longer helps no one.
pub const MAX_SECONDS: u64 = 60;
/// Go's default for `/debug/pprof/profile`.
pub const DEFAULT_SECONDS: u64 = 30;
/// Samples per second per thread; just off 100 Hz so sampling does not beat with periodic work.
const FREQUENCY_HZ: i32 = 99;
/// Frames in these libraries are not unwound from the signal handler (unwinding through them can
/// deadlock), as pprof-rs advises.
const BLOCKLIST: [&str; 4] = ["libc", "libgcc", "pthread", "vdso"];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("seconds must be a whole number from 1 to {MAX_SECONDS}, not {0:?}")]
    BadSeconds(String),
    #[error("a CPU profile is already being taken; retry when it is done")]
    Busy,
    #[error("the profiler failed: {0}")]
    Profiler(#[from] pprof::Error),
    #[error("the profile could not be compressed: {0}")]
    Compress(#[from] std::io::Error),
    #[error("the profiling task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl ProfileError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProfileError::BadSeconds(_) => StatusCode::BAD_REQUEST,
            ProfileError::Busy => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The `seconds` parameter of a query string (default 30, at most 60).
pub fn seconds(query: Option<&str>) -> Result<u64, ProfileError> {
    let value = query.unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("seconds="));
    match value {
        None => Ok(DEFAULT_SECONDS),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(n),
            _ => Err(ProfileError::BadSeconds(v.to_string())),
        },
    }
}

static RUNNING: AtomicBool = AtomicBool::new(false);

/// The right to run the (process-wide) profiler, released on drop.
struct Claim;

impl Claim {
    fn take() -> Result<Claim, ProfileError> {
        RUNNING.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).map_err(|_| ProfileError::Busy)?;
        Ok(Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Samples the whole process for `seconds` and returns the gzip-compressed pprof profile.
pub async fn cpu_profile(seconds: u64) -> Result<Vec<u8>, ProfileError> {
    let claim = Claim::take()?;
    // The profiler guard is not `Send`; it lives on a blocking thread for the duration.
    tokio::task::spawn_blocking(move || {
        let _claim = claim;
        sample(Duration::from_secs(seconds))
    })
    .await?
}

fn sample(duration: Duration) -> Result<Vec<u8>, ProfileError> {
    use pprof::protos::Message;
    let guard = pprof::ProfilerGuardBuilder::default().frequency(FREQUENCY_HZ).blocklist(&BLOCKLIST).build()?;
    std::thread::sleep(duration);
    let report = guard.report().build()?;
    drop(guard);
    let profile = report.pprof()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&profile.encode_to_vec())?;
    Ok(gz.finish()?)
}

/// Heap statistics: glibc's `mallinfo2` (all arenas) and the resident set size. WebAssembly
/// plugin memories are mapped by wasmtime itself, so they count in RSS but not in the heap.
pub fn heap_stats() -> Value {
    let rss = crate::debug::rss_bytes();
    match malloc_stats() {
        Some(m) => json!({
            "allocator": "glibc",
            "arena_bytes": m.arena,
            "mmap_bytes": m.mmap,
            "in_use_bytes": m.in_use,
            "free_bytes": m.free,
            "releasable_bytes": m.releasable,
            "rss_bytes": rss,
        }),
        None => json!({"allocator": null, "rss_bytes": rss}),
    }
}

/// The allocator's counters, in bytes.
struct MallocStats {
    /// Heap obtained with brk/sbrk, in use or free.
    arena: usize,
    /// Large blocks mapped one by one with mmap (all in use).
    mmap: usize,
    /// Allocated and not yet freed, mapped blocks included.
    in_use: usize,
    /// Freed but kept by the allocator.
    free: usize,
    /// Free at the top of the heap, which `malloc_trim` could return to the system.
    releasable: usize,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn malloc_stats() -> Option<MallocStats> {
    // SAFETY: mallinfo2 (glibc 2.33 and later) only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    Some(MallocStats {
        arena: m.arena,
        mmap: m.hblkhd,
        in_use: m.uordblks + m.hblkhd,
        free: m.fordblks,
        releasable: m.keepcost,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn malloc_stats() -> Option<MallocStats> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_bounded() {
        assert_eq!(seconds(None).unwrap(), DEFAULT_SECONDS);
        assert_eq!(seconds(Some("debug=1")).unwrap(), DEFAULT_SECONDS);
        assert_eq!(seconds(Some("seconds=1")).unwrap(), 1);
        assert_eq!(seconds(Some("x=y&seconds=60")).unwrap(), 60);
        for bad in ["seconds=0", "seconds=61", "seconds=-1", "seconds=1.5", "seconds="] {
            assert!(matches!(seconds(Some(bad)), Err(ProfileError::BadSeconds(_))), "{bad}");
        }
    }
}
