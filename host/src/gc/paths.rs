//! Where garbage collection keeps its own state: beside distribution's layout, under
//! `_berth/gc/`, which distribution never reads. Everything here can be deleted when no run holds
//! the lock.

use crate::registry::paths::ROOT;
use crate::registry::Digest;

pub fn dir() -> String {
    format!("{ROOT}/_berth/gc")
}

pub fn lock() -> String {
    format!("{}/lock", dir())
}

pub fn runs() -> String {
    format!("{}/runs", dir())
}

pub fn run(id: &str) -> String {
    format!("{}/{id}", runs())
}

/// A digest a running server linked during run `id`: the run spares it.
pub fn journal(id: &str, d: &Digest) -> String {
    format!("{}/journal/{}/{}", run(id), d.algorithm().as_str(), d.hex())
}

pub fn journal_dir(id: &str) -> String {
    format!("{}/journal", run(id))
}

/// A digest run `id` is deleting: a server's write that needs it fails.
pub fn doomed(id: &str, d: &Digest) -> String {
    format!("{}/doomed/{}/{}", run(id), d.algorithm().as_str(), d.hex())
}

pub fn blobs() -> String {
    format!("{ROOT}/blobs")
}

/// The directory of a blob (`blobs/sha256/ab/<hex>`), deleted whole.
pub fn blob_dir(d: &Digest) -> String {
    format!("{ROOT}/blobs/{}/{}/{}", d.algorithm().as_str(), &d.hex()[..2], d.hex())
}

/// The directory holding a link file (`.../<hex>/link` -> `.../<hex>`).
pub fn parent(link: &str) -> &str {
    link.rsplit_once('/').map_or(link, |(p, _)| p)
}
