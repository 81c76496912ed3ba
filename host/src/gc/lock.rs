//! The lock that keeps two runs apart: one small object in storage, so it holds across
//! processes and hosts on any driver. It names its owner and expires; the owner renews it while
//! it runs, so a crashed run's lock lapses by itself, and a lock whose owner process on this
//! host is gone is taken over at once.
//!
//! Where the driver has conditional writes (the filesystem and the object stores), taking,
//! taking over and renewing the lock are compare-and-swaps on that object: of runs racing for
//! it, exactly one writes it, and a run whose lock another took over fails its next renewal.
//! Without them (a storage plugin), taking the lock is write-then-read-back after a short
//! pause: of two runs racing for a free lock, the later writer wins and the other sees a name
//! that is not its own and stops. A write still in flight at the read-back escapes that. Either
//! way, the run reads the lock again (`renew`) before it marks and before it deletes, and its
//! sweep stops at the first renewal that finds another name. Servers read the same object to
//! learn that a run is on (and its id, which names its journal).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{paths, GcError};
use crate::storage::{Expect, StorageDriver, StorageError};

/// How long a lock holds without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// How often the owner renews it.
pub const RENEW: Duration = Duration::from_secs(10);
/// The pause between writing the lock and reading it back.
const SETTLE: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockRecord {
    /// The run's id: names its journal under `_berth/gc/runs/`.
    pub run: String,
    pub host: String,
    pub pid: u32,
    /// Seconds since the epoch.
    pub expires: u64,
}

impl LockRecord {
    fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires)
    }

    pub fn live(&self) -> bool {
        self.expires_at() > SystemTime::now() && !self.owner_gone()
    }

    /// The owner ran on this host and its process no longer exists.
    fn owner_gone(&self) -> bool {
        if self.host != hostname() || self.pid == std::process::id() {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(self.pid as libc::pid_t, 0) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    fn owner(&self) -> String {
        format!("run {} by pid {} on {}", self.run, self.pid, self.host)
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The lock as stored, if any (an unreadable one counts as absent).
pub async fn read(driver: &dyn StorageDriver) -> Result<Option<LockRecord>, GcError> {
    match driver.get_content(&paths::lock()).await {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A held lock. Renew it with [`Lock::renew`]; release it with [`Lock::release`].
#[derive(Debug)]
pub struct Lock {
    pub record: LockRecord,
}

fn expiry() -> u64 {
    (SystemTime::now() + TTL).duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Lock {
    /// Takes the lock for run `run`, or says who holds it.
    pub async fn acquire(driver: &dyn StorageDriver, run: &str) -> Result<Lock, GcError> {
        let record = LockRecord { run: run.to_string(), host: hostname(), pid: std::process::id(), expires: expiry() };
        if driver.conditional_writes() {
            let (held, expect) = read_versioned(driver).await?;
            free_or_stale(held)?;
            match write(driver, &record, Some(expect)).await {
                Err(GcError::Storage(StorageError::Unsupported { .. })) => {}
                Err(GcError::Storage(StorageError::Conflict { .. })) => {
                    // Another run took it between the read and the write.
                    return match read(driver).await? {
                        Some(r) => Err(GcError::Locked { owner: r.owner(), expires: r.expires_at() }),
                        None => Err(GcError::LockLost),
                    };
                }
                other => return other.map(|()| Lock { record }),
            }
        }
        free_or_stale(read(driver).await?)?;
        write(driver, &record, None).await?;
        tokio::time::sleep(SETTLE).await;
        match read(driver).await? {
            Some(r) if r == record => Ok(Lock { record }),
            Some(r) => Err(GcError::Locked { owner: r.owner(), expires: r.expires_at() }),
            None => Err(GcError::LockLost),
        }
    }

    /// Pushes the expiry on; fails if another run has taken the lock meanwhile.
    pub async fn renew(&mut self, driver: &dyn StorageDriver) -> Result<(), GcError> {
        let mut renewed = self.record.clone();
        renewed.expires = expiry();
        if driver.conditional_writes() {
            match read_versioned(driver).await? {
                (Some(r), expect) if r.run == self.record.run => match write(driver, &renewed, Some(expect)).await {
                    Err(GcError::Storage(StorageError::Unsupported { .. })) => {}
                    Err(GcError::Storage(StorageError::Conflict { .. })) => return Err(GcError::LockLost),
                    other => {
                        self.record = renewed;
                        return other;
                    }
                },
                _ => return Err(GcError::LockLost),
            }
        }
        match read(driver).await? {
            Some(r) if r.run == self.record.run => {}
            _ => return Err(GcError::LockLost),
        }
        self.record = renewed;
        write(driver, &self.record, None).await
    }

    pub async fn release(self, driver: &dyn StorageDriver) {
        match read(driver).await {
            Ok(Some(r)) if r.run == self.record.run => {
                if let Err(e) = driver.delete(&paths::lock()).await {
                    tracing::warn!(error = %e, "garbage collection: could not release the lock (it expires by itself)");
                }
            }
            _ => {}
        }
    }
}

/// Refuses a lock that is held (live), and says so when one is taken over (stale).
fn free_or_stale(held: Option<LockRecord>) -> Result<(), GcError> {
    match held {
        Some(h) if h.live() => Err(GcError::Locked { owner: h.owner(), expires: h.expires_at() }),
        Some(h) => {
            tracing::warn!(owner = h.owner(), "garbage collection: taking over a stale lock");
            Ok(())
        }
        None => Ok(()),
    }
}

/// The lock as stored (if any, and readable) and the condition for replacing exactly that.
async fn read_versioned(driver: &dyn StorageDriver) -> Result<(Option<LockRecord>, Expect), GcError> {
    match driver.get_versioned(&paths::lock()).await {
        Ok((b, version)) => Ok((serde_json::from_slice(&b).ok(), Expect::Version(version))),
        Err(e) if e.is_not_found() => Ok((None, Expect::Absent)),
        Err(e) => Err(e.into()),
    }
}

/// Writes `r` as the lock: if the lock is still as `expect` says, when given (else `Conflict`),
/// or whatever is there.
async fn write(driver: &dyn StorageDriver, r: &LockRecord, expect: Option<Expect>) -> Result<(), GcError> {
    let body = Bytes::from(serde_json::to_vec(r).expect("a lock record serializes"));
    match expect {
        Some(expect) => driver.put_if(&paths::lock(), body, expect).await?,
        None => driver.put_content(&paths::lock(), body).await?,
    }
    driver.sync(&[paths::lock()]).await?;
    Ok(())
}
