//! Domain tests: the registry over the in-memory driver, one named test per case, so a failure
//! names what broke. Run them with `cargo test --release -p berth --lib registry`.

mod cache;
mod manifests;
mod purge;
mod ranges;
mod uploads;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::manifests::OCI_MANIFEST;
use super::{Algorithm, BodyStream, Digest, Reference, Registry, RepoName, Tag};
use crate::storage::{InMemoryDriver, StorageDriver};

/// A registry over a fresh in-memory driver, and the driver (to build a second registry over it,
/// or to change storage behind the registry's back).
fn registry() -> (Registry, Arc<dyn StorageDriver>) {
    let driver: Arc<dyn StorageDriver> = Arc::new(InMemoryDriver::new());
    (Registry::new(driver.clone()), driver)
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(t: &str) -> Reference {
    Reference::Tag(Tag::parse(t).unwrap())
}

fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

/// A request body arriving in these chunks.
fn body(chunks: &[&[u8]]) -> BodyStream {
    let chunks: Vec<_> = chunks.iter().map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    Box::pin(futures_util::stream::iter(chunks))
}

/// Pushes a blob in one request and returns its digest.
async fn push_blob(reg: &Registry, repo: &RepoName, data: &[u8]) -> Digest {
    let d = sha256(data);
    reg.upload_monolithic(repo, &d, body(&[data])).await.unwrap();
    d
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(data).to_string(), "size": data.len()})
}

/// An OCI image manifest over a config and layers (not pushed).
fn image_manifest(config: &[u8], layers: &[&[u8]]) -> Bytes {
    let layers: Vec<_> = layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": layers,
    });
    Bytes::from(m.to_string())
}

/// Pushes a config and a layer unique to `seed`, and an image manifest over them under
/// `reference`; returns the manifest's digest.
async fn push_image(reg: &Registry, repo: &RepoName, reference: &Reference, seed: &str) -> Digest {
    let (config, layer) = (format!("{{\"seed\":\"{seed}\"}}"), format!("layer {seed}"));
    push_blob(reg, repo, config.as_bytes()).await;
    push_blob(reg, repo, layer.as_bytes()).await;
    let m = image_manifest(config.as_bytes(), &[layer.as_bytes()]);
    let put = reg.put_manifest(repo, reference, Some(OCI_MANIFEST), m, &Default::default()).await.unwrap();
    put.digest
}
