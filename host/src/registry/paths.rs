//! distribution's storage layout, so Berth and distribution can serve each other's data.

use super::digest::Digest;
use super::names::{RepoName, Tag};

pub const ROOT: &str = "/docker/registry/v2";

pub fn blob_data(d: &Digest) -> String {
    format!("{ROOT}/blobs/{}/{}/{}/data", d.algorithm().as_str(), &d.hex()[..2], d.hex())
}

pub fn repositories() -> String {
    format!("{ROOT}/repositories")
}

pub fn repo(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}")
}

pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    format!("{}/_layers/{}/{}/link", repo(name), d.algorithm().as_str(), d.hex())
}

pub fn revision_link(name: &RepoName, d: &Digest) -> String {
    format!("{}/_manifests/revisions/{}/{}/link", repo(name), d.algorithm().as_str(), d.hex())
}

pub fn tags(name: &RepoName) -> String {
    format!("{}/_manifests/tags", repo(name))
}

pub fn tag(name: &RepoName, tag: &Tag) -> String {
    format!("{}/_manifests/tags/{tag}", repo(name))
}

pub fn tag_current_link(name: &RepoName, t: &Tag) -> String {
    format!("{}/current/link", tag(name, t))
}

pub fn tag_index_link(name: &RepoName, t: &Tag, d: &Digest) -> String {
    format!("{}/index/{}/{}/link", tag(name, t), d.algorithm().as_str(), d.hex())
}

pub fn upload_dir(name: &RepoName, id: &str) -> String {
    format!("{}/_uploads/{id}", repo(name))
}

pub fn upload_data(name: &RepoName, id: &str) -> String {
    format!("{}/data", upload_dir(name, id))
}

pub fn upload_started_at(name: &RepoName, id: &str) -> String {
    format!("{}/startedat", upload_dir(name, id))
}

/// Berth's own index of referrers (OCI 1.1), beside distribution's data and rebuildable from it.
pub fn referrers(name: &RepoName, subject: &Digest) -> String {
    format!("{}/_berth/referrers/{}/{}", repo(name), subject.algorithm().as_str(), subject.hex())
}

pub fn referrer_link(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!("{}/{}/{}/link", referrers(name, subject), referrer.algorithm().as_str(), referrer.hex())
}

/// A schema 1 manifest exactly as pushed, signatures and all. distribution keeps only the
/// payload without signatures (the revision's blob), and serves it signed by its own key.
pub fn schema1_pushed(name: &RepoName, d: &Digest) -> String {
    format!("{}/_berth/schema1/{}/{}/pushed", repo(name), d.algorithm().as_str(), d.hex())
}
