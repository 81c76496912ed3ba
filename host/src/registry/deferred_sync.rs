//! One storage sync for a write and its event. A push, delete or mount must have its event on
//! stable storage before the answer; the filesystem driver's sync (`syncfs`) flushes the event
//! journal too when it sits on the same filesystem. So the API layer runs such a request with
//! its syncs deferred (`deferring`), journals the event, and then syncs what the operation
//! owed (`Registry::sync_owed`), once, before answering. Every operation syncs as its last
//! storage step, so moving that step to just after the operation changes nothing it relies on.

use std::cell::RefCell;
use std::future::Future;

use super::Registry;
use crate::storage::Result;

tokio::task_local! {
    /// The paths the operations of the current request asked to sync, while deferred.
    static OWED: RefCell<Vec<String>>;
}

/// Runs `f` with the registry's syncs deferred; returns its output and the paths it owed a
/// sync. Tasks `f` spawns sync for themselves.
pub fn deferring<F: Future>(f: F) -> impl Future<Output = (F::Output, Vec<String>)> {
    use futures_util::FutureExt;
    // A combinator, not `async` blocks: each of those held `f` twice (as captured and as
    // awaited), and the request's future went from 14 to 42 KiB, copied on every request.
    // `map`'s closure runs inside the scope, while `OWED` is still set.
    OWED.scope(RefCell::new(Vec::new()), f.map(|out| (out, OWED.with(|o| o.take()))))
}

impl Registry {
    /// The durability barrier every operation ends with (see `StorageDriver::sync`), or a
    /// note of it when the request defers it.
    pub(super) async fn sync(&self, paths: &[String]) -> Result<()> {
        let deferred = OWED.try_with(|o| o.borrow_mut().extend_from_slice(paths)).is_ok();
        if deferred {
            return paths.iter().try_for_each(|p| crate::storage::validate_path(p));
        }
        self.driver.sync(paths).await
    }

    /// The sync a request deferred (nothing when it owed none).
    pub async fn sync_owed(&self, mut paths: Vec<String>) -> Result<()> {
        paths.sort_unstable();
        paths.dedup();
        self.driver.sync(&paths).await
    }
}
