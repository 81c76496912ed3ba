//! `wasi:filesystem` helpers for plugins confined to a directory Berth's config grants:
//!
//! ```yaml
//! plugins:
//!   storage-fs:
//!     grants:
//!       dirs: [{host: ./data, guest: /data, mode: rw}]
//! ```
//!
//! The host preopens `./data` as `/data` inside the plugin; the plugin sees nothing else of the
//! host's filesystem, and the host's WASI implementation refuses `..`, absolute paths and
//! symlinks that would climb out of it.
//!
//! The raw `wasi:filesystem` bindings are re-exported here because that is what a storage
//! driver wants for speed: [`Descriptor::read_via_stream`] and
//! [`Descriptor::write_via_stream`] hand the host a stream on the file, which it pumps
//! natively (several GB/s) instead of copying every byte through the plugin's memory. Rust's
//! `std::fs` works too (wasi-libc sees the same preopens) but cannot produce those streams.

pub use crate::bindings::common::wasi::filesystem::types::{
    Datetime, Descriptor, DescriptorFlags, DescriptorStat, DescriptorType, DirectoryEntry, DirectoryEntryStream,
    ErrorCode, Filesize, OpenFlags, PathFlags,
};

use crate::storage::{Path, StorageError};

/// The directories the host preopened for this plugin, with their guest paths (e.g. `/data`).
/// Each call returns fresh handles; call it once (in `init`) and keep what you need.
pub fn preopens() -> Vec<(Descriptor, String)> {
    crate::bindings::common::wasi::filesystem::preopens::get_directories()
}

/// Opens the directory at guest path `path` (e.g. `/data`, or `/data/registry` below a `/data`
/// preopen): finds the granted preopen that is `path` or its closest ancestor and opens the rest
/// below it, creating missing directories if `create`. The result is writable if the grant is
/// (`mode: rw`), read-only otherwise.
///
/// The error is a message for `InitError`, naming the preopens that exist.
pub fn open_dir(path: &str, create: bool) -> Result<Descriptor, String> {
    let wanted: Vec<&str> = components(path);
    let mut best: Option<(usize, Descriptor)> = None;
    let mut seen = Vec::new();
    for (dir, guest) in preopens() {
        let have = components(&guest);
        if wanted.starts_with(&have) && best.as_ref().is_none_or(|(n, _)| have.len() > *n) {
            best = Some((have.len(), dir));
        }
        seen.push(guest);
    }
    let Some((matched, base)) = best else {
        return Err(if seen.is_empty() {
            format!("no directory is granted to this plugin (wanted {path}); add one under grants.dirs")
        } else {
            format!("{path} is not inside a granted directory (granted: {})", seen.join(", "))
        });
    };
    let rest = wanted[matched..].join("/");
    if rest.is_empty() {
        return Ok(base);
    }
    if rest.split('/').any(|c| c == "..") {
        return Err(format!("{path}: `..` is not allowed"));
    }
    if create {
        create_dir_all(&base, &rest).map_err(|e| format!("creating {path}: {e}"))?;
    }
    // A directory below a preopen inherits the preopen's permissions.
    base.open_at(PathFlags::empty(), &rest, OpenFlags::DIRECTORY, DescriptorFlags::READ)
        .map_err(|e| format!("opening {path}: {e}"))
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

/// `mkdir -p` of `rel` (relative, `/`-separated) below `dir`. Tries the full path first, so
/// the common case (parent exists) is one call.
pub fn create_dir_all(dir: &Descriptor, rel: &str) -> Result<(), ErrorCode> {
    match dir.create_directory_at(rel) {
        Ok(()) | Err(ErrorCode::Exist) => Ok(()),
        Err(ErrorCode::NoEntry) => match rel.rsplit_once('/') {
            Some((parent, _)) => {
                create_dir_all(dir, parent)?;
                match dir.create_directory_at(rel) {
                    Ok(()) | Err(ErrorCode::Exist) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            None => Err(ErrorCode::NoEntry),
        },
        Err(e) => Err(e),
    }
}

/// The entries of the directory `dir`, skipping any that vanished while it was read. The host
/// stats every entry as it reads a directory, so a file renamed or deleted in between (another
/// instance's temporary file renamed into place, say) comes back as a `no-entry` error for that
/// entry alone; it is no longer there, so it is not listed. Any other error is returned.
pub fn entries(dir: &Descriptor) -> Result<impl Iterator<Item = Result<DirectoryEntry, ErrorCode>>, ErrorCode> {
    let stream = dir.read_directory()?;
    Ok(std::iter::from_fn(move || loop {
        match stream.read_directory_entry() {
            Ok(Some(entry)) => return Some(Ok(entry)),
            Ok(None) => return None,
            Err(ErrorCode::NoEntry) => continue,
            Err(e) => return Some(Err(e)),
        }
    }))
}

/// Maps a `wasi:filesystem` error on `path` to a storage error. A missing file or a missing
/// directory along the way (`no-entry`, `not-directory`) is `path-not-found`, which is what
/// Berth's registry logic keys on; everything else is `other` with the error's name.
pub fn storage_error(code: ErrorCode, path: &Path) -> StorageError {
    match code {
        ErrorCode::NoEntry | ErrorCode::NotDirectory => StorageError::PathNotFound(path.to_string()),
        ErrorCode::InsufficientMemory | ErrorCode::InsufficientSpace | ErrorCode::Quota | ErrorCode::WouldBlock => {
            StorageError::Unavailable(format!("{path}: {}", code.name()))
        }
        other => StorageError::Other(format!("{path}: {}", other.name())),
    }
}

/// Milliseconds since the Unix epoch of a `wasi:filesystem` timestamp (0 if unknown).
pub fn millis(ts: Option<Datetime>) -> u64 {
    ts.map_or(0, |t| t.seconds.saturating_mul(1000) + u64::from(t.nanoseconds / 1_000_000))
}

/// Reads a whole file (or what is left of it from `offset`).
pub fn read_all(file: &Descriptor, mut offset: u64) -> Result<Vec<u8>, ErrorCode> {
    let size = file.stat()?.size;
    let mut out = Vec::with_capacity(size.saturating_sub(offset) as usize);
    loop {
        let want = size.saturating_sub(offset).max(64 << 10);
        let (chunk, eof) = file.read(want, offset)?;
        offset += chunk.len() as u64;
        let empty = chunk.is_empty();
        out.extend_from_slice(&chunk);
        if eof || empty {
            return Ok(out);
        }
    }
}

/// Writes all of `data` at `offset` (a single `write` may be short).
pub fn write_all(file: &Descriptor, mut data: &[u8], mut offset: u64) -> Result<(), ErrorCode> {
    while !data.is_empty() {
        let n = file.write(data, offset)?;
        if n == 0 {
            return Err(ErrorCode::Io);
        }
        data = &data[n as usize..];
        offset += n;
    }
    Ok(())
}
