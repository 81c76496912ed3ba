//! The conformance suite every storage driver must pass, as named cases in the manner of
//! distribution's `storagedriver/testsuites`: each case runs under a fresh prefix of its own,
//! and afterwards the prefix is listed recursively, so a case that leaves a file behind fails
//! even when everything it asserted held.
//!
//! It is part of the library so that it runs against any driver: one `#[tokio::test]` per case
//! and driver in `drivers` (the native drivers and the first-party plugins), and
//! `berth plugin test FILE` (`cli`) for a plugin author's own component.
//!
//! Cases need a multi-threaded tokio runtime: the concurrent ones run their workers on threads
//! of their own.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::StorageDriver;

/// How long one case may take before it counts as failed (a driver that hangs).
const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a case failed: what was expected, what the driver did, and the path involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    pub fn new(why: impl Into<String>) -> Self {
        Failure(why.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// A case: runs against a driver with every path under the prefix it is given.
type CaseFn = for<'a> fn(&'a dyn StorageDriver, &'a str) -> BoxFuture<'a, Result<(), Failure>>;

/// One named case of the suite.
pub struct Case {
    pub name: &'static str,
    run: CaseFn,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// Calls `$callback!` with every case's name: the one list the table (`CASES`) and the
/// per-driver tests (`drivers`) are both stamped from, so neither can miss a case.
macro_rules! with_cases {
    ($callback:ident $(, $arg:ident)?) => {
        $callback! {
            [$($arg)?]
            content_round_trip,
            overwrite,
            zero_length,
            missing_paths,
            bad_paths,
            reader_offsets,
            large_file,
            append_resumes,
            cancel_discards,
            listing_and_stat,
            list_paging,
            rename_replaces,
            delete_subtree,
            deep_paths,
            sync_barrier,
            concurrent_writers_and_readers,
            concurrent_appends,
            rename_races,
            list_while_writing,
            conditional_writes,
            compare_and_swap_races
        }
    };
}

macro_rules! case_table {
    ([] $($case:ident),*) => {
        /// Every case, in the order `berth plugin test` runs them.
        pub const CASES: &[Case] = &[$(Case { name: stringify!($case), run: |d, p| Box::pin(cases::$case(d, p)) }),*];
    };
}

with_cases!(case_table);

// After the macros: their textual scope covers these.
mod cases;
pub mod cli;
#[cfg(test)]
pub(crate) mod drivers;

/// The result of one case on one driver.
#[derive(Debug)]
pub struct Outcome {
    pub case: &'static str,
    pub elapsed: Duration,
    pub result: Result<(), Failure>,
}

/// Runs `case` under a fresh prefix, then checks that it left no file there, then removes the
/// prefix (whatever the outcome, so a failed case does not disturb the next one).
pub async fn run_case(d: &dyn StorageDriver, case: &Case) -> Outcome {
    let prefix = format!("/suite-{}-{:08x}", case.name.replace('_', "-"), rand::random::<u32>());
    let started = Instant::now();
    let run = AssertUnwindSafe((case.run)(d, &prefix)).catch_unwind();
    let mut result = match tokio::time::timeout(CASE_TIMEOUT, run).await {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => Err(Failure::new(format!("panicked: {}", panic_message(&*panic)))),
        Err(_) => Err(Failure::new(format!("did not finish within {} s", CASE_TIMEOUT.as_secs()))),
    };
    if result.is_ok() {
        result = match leftovers(d, &prefix).await {
            Ok(files) if files.is_empty() => Ok(()),
            Ok(files) => Err(Failure::new(format!(
                "left {} file(s) behind under its prefix {prefix}: {}",
                files.len(),
                files.iter().take(10).map(String::as_str).collect::<Vec<_>>().join(", ")
            ))),
            Err(e) => Err(e),
        };
    }
    let _ = d.delete(&prefix).await;
    Outcome { case: case.name, elapsed: started.elapsed(), result }
}

/// Runs the case called `name` and panics with its failure.
pub async fn run_named(d: &dyn StorageDriver, name: &str) {
    let case = CASES.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no suite case named {name}"));
    if let Err(e) = run_case(d, case).await.result {
        panic!("{name} on {}: {e}", d.name());
    }
}

/// Every file below `prefix`, found by listing it recursively. Directories left empty do not
/// count: a filesystem keeps them until the prefix is deleted, an object store has none.
async fn leftovers(d: &dyn StorageDriver, prefix: &str) -> Result<Vec<String>, Failure> {
    let mut files = Vec::new();
    let mut dirs = vec![prefix.to_string()];
    while let Some(dir) = dirs.pop() {
        let children = match d.list(&dir).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(Failure::new(format!("leak check: list {dir}: {e}"))),
        };
        for child in children {
            match d.stat(&child).await {
                Ok(info) if info.is_dir => dirs.push(child),
                Ok(_) => files.push(child),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(Failure::new(format!("leak check: stat {child}: {e}"))),
            }
        }
    }
    files.sort();
    Ok(files)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs `workers` copies of `work` (given their index) in parallel, each on a thread of its
/// own driving its future on the current runtime, and returns the first failure. Threads, not
/// tasks, so the workers may borrow the driver; the calling task is moved off the runtime's
/// worker while it waits.
fn parallel<F, Fut>(workers: usize, work: F) -> Result<(), Failure>
where
    F: Fn(usize) -> Fut + Sync,
    Fut: Future<Output = Result<(), Failure>>,
{
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(Failure::new("the concurrent cases need a multi-threaded tokio runtime"));
    }
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..workers)
                .map(|i| {
                    let (work, handle) = (&work, &handle);
                    s.spawn(move || handle.block_on(work(i)))
                })
                .collect();
            let results: Vec<_> = threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|p| Err(Failure::new(format!("worker panicked: {}", panic_message(&*p)))))
                })
                .collect();
            results.into_iter().collect()
        })
    })
}
