//! Checking that a plugin stores what it was given: a file the host wrote by identity and
//! times, anything else read back under a keyed hash (`check`).

use std::sync::Arc;

use futures_util::StreamExt;

use super::check;
use super::reader::{open_file, open_reader};
use super::StoragePlugin;
use crate::storage::{Result, StorageError};

/// A file the host wrote, as it was once written and synced: which file it is, and the state
/// that any later write or truncation would change. The kernel gives a change after a
/// `stat` a fresh timestamp, so nothing can touch the file unnoticed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FileState {
    dev: u64,
    ino: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileState {
    pub(super) fn of(m: &std::fs::Metadata) -> FileState {
        use std::os::unix::fs::MetadataExt;
        FileState {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            modified: (m.mtime(), m.mtime_nsec()),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Refuses a write whose object is not what the plugin's store holds.
pub(super) fn not_stored(p: &StoragePlugin, path: &str, why: String) -> StorageError {
    tracing::error!(plugin = %p.name(), path, error = %why, "plugin does not store what it was given; write refused");
    StorageError::Backend(format!("plugin {}: {path}: {why}", p.name()))
}

/// Checks that what the plugin's `open-file` opens for `path` after its commit is the file the
/// host wrote and synced, `size` bytes long and untouched since: then the registry's digest of
/// what it streamed into that file is the digest of what the plugin will serve, with no need
/// to read the file back.
pub(super) async fn verify_same_file(p: &Arc<StoragePlugin>, path: &str, size: u64, wrote: FileState) -> Result<()> {
    if wrote.size != size {
        return Err(not_stored(p, path, format!("the file has {} bytes after the write, not {size}", wrote.size)));
    }
    match open_file(p, path).await? {
        Some(file) => match file.metadata() {
            Ok(m) if FileState::of(&m) == wrote => Ok(()),
            Ok(m) => Err(not_stored(
                p,
                path,
                format!(
                    "open-file gives another file, or one changed since the host wrote it ({:?})",
                    FileState::of(&m)
                ),
            )),
            Err(e) => Err(StorageError::io(path, e)),
        },
        None => Err(not_stored(p, path, "it hands its writers' files over but has no open-file to check them".into())),
    }
}

/// Reads back through the plugin what a writer wrote at `offset` (`len` bytes) and compares
/// its keyed hash with that of what was sent. The plugin never sees the key nor either hash,
/// so it cannot serve other bytes that pass, short of storing the right ones.
pub(super) async fn verify_stored(
    p: &Arc<StoragePlugin>,
    path: &str,
    offset: u64,
    len: u64,
    sent: check::Hasher,
) -> Result<()> {
    let mut back = sent.fresh();
    let mut stream = open_reader(p.clone(), path, offset).await?;
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        got += chunk.len() as u64;
        if got > len {
            break;
        }
        back.update(&chunk);
    }
    if got == len && back.finish() == sent.finish() {
        return Ok(());
    }
    let why = if got == len {
        format!("the {len} bytes read back differ from those written")
    } else {
        format!("{}{got} bytes read back, {len} written", if got > len { "more than " } else { "" })
    };
    Err(not_stored(p, path, why))
}
