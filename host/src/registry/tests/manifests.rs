//! Manifest validation (`registry/manifests.rs`) through `put_manifest`: each media type, the
//! blobs and child manifests that must be in the repository, malformed bodies, size limits.

use serde_json::json;

use super::*;
use crate::registry::manifests::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX};
use crate::registry::{ManifestPut, RegistryError, MAX_MANIFEST_SIZE};

const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

async fn put(
    reg: &Registry,
    r: &RepoName,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Result<ManifestPut, RegistryError> {
    reg.put_manifest(r, &tag("t"), content_type, body.into(), &Default::default()).await
}

fn manifest_invalid(result: Result<ManifestPut, RegistryError>) -> String {
    match result {
        Err(RegistryError::ManifestInvalid(why)) => why,
        other => panic!("expected MANIFEST_INVALID, got {other:?}"),
    }
}

/// A config and a layer pushed to `r`, and their descriptors.
async fn pushed_blobs(reg: &Registry, r: &RepoName) -> (Value, Value) {
    push_blob(reg, r, b"{}").await;
    push_blob(reg, r, b"layer").await;
    (descriptor("application/vnd.oci.image.config.v1+json", b"{}"), descriptor("application/octet-stream", b"layer"))
}

async fn image_of_type(reg: &Registry, r: &RepoName, media_type: &str) -> Bytes {
    let (config, layer) = pushed_blobs(reg, r).await;
    Bytes::from(json!({"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": [layer]}).to_string())
}

/// Stores the body and reads it back: same bytes, same media type.
async fn round_trip(reg: &Registry, r: &RepoName, media_type: &str, body: Bytes) {
    let put = put(reg, r, Some(media_type), body.clone()).await.unwrap();
    assert_eq!(put.digest, sha256(&body));
    let m = reg.get_manifest(r, &tag("t")).await.unwrap();
    assert_eq!(m.content, body);
    assert_eq!(m.media_type, media_type);
}

#[tokio::test]
async fn an_oci_image_manifest_is_accepted() {
    let (reg, _) = registry();
    let r = repo("m/oci");
    let body = image_of_type(&reg, &r, OCI_MANIFEST).await;
    round_trip(&reg, &r, OCI_MANIFEST, body).await;
}

#[tokio::test]
async fn a_docker_v2_manifest_is_accepted() {
    let (reg, _) = registry();
    let r = repo("m/docker");
    let body = image_of_type(&reg, &r, DOCKER_MANIFEST).await;
    round_trip(&reg, &r, DOCKER_MANIFEST, body).await;
}

#[tokio::test]
async fn an_oci_index_is_accepted() {
    let (reg, _) = registry();
    let r = repo("m/index");
    let child = push_image(&reg, &r, &tag("child"), "c").await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}}]});
    round_trip(&reg, &r, OCI_INDEX, Bytes::from(index.to_string())).await;
}

#[tokio::test]
async fn a_docker_manifest_list_is_accepted() {
    let (reg, _) = registry();
    let r = repo("m/list");
    let child = push_image(&reg, &r, &tag("child"), "c").await;
    let list = json!({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": child.to_string(), "size": 1}]});
    round_trip(&reg, &r, DOCKER_LIST, Bytes::from(list.to_string())).await;
}

#[tokio::test]
async fn the_media_type_is_detected_without_content_type() {
    let (reg, _) = registry();
    let r = repo("m/detect");
    let child = push_image(&reg, &r, &tag("child"), "c").await;
    let index =
        json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 1}]});
    put(&reg, &r, None, index.to_string()).await.unwrap();
    assert_eq!(reg.get_manifest(&r, &tag("t")).await.unwrap().media_type, OCI_INDEX);
}

#[tokio::test]
async fn a_content_type_that_contradicts_the_body_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/contradict");
    let body = image_of_type(&reg, &r, OCI_MANIFEST).await;
    let why = manifest_invalid(put(&reg, &r, Some(DOCKER_MANIFEST), body).await);
    assert!(why.contains("differs from Content-Type"), "{why}");
}

#[tokio::test]
async fn a_schema1_manifest_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/schema1");
    let body = json!({"schemaVersion": 1, "name": "m/schema1", "tag": "t", "fsLayers": [], "history": []});
    let why = manifest_invalid(put(&reg, &r, Some(DOCKER_V1_SIGNED), body.to_string()).await);
    assert!(why.contains("schema 1"), "{why}");
    let why = manifest_invalid(put(&reg, &r, None, body.to_string()).await);
    assert!(why.contains("schema 1"), "{why}");
}

#[tokio::test]
async fn an_unknown_media_type_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/unknown");
    let body = image_of_type(&reg, &r, "application/vnd.example.thing+json").await;
    let why = manifest_invalid(put(&reg, &r, None, body).await);
    assert!(why.contains("unsupported manifest media type"), "{why}");
}

#[tokio::test]
async fn a_schema_version_other_than_2_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/version");
    let (config, layer) = pushed_blobs(&reg, &r).await;
    let body = json!({"schemaVersion": 3, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
    let why = manifest_invalid(put(&reg, &r, Some(OCI_MANIFEST), body.to_string()).await);
    assert!(why.contains("schemaVersion"), "{why}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused() {
    let (reg, _) = registry();
    let why = manifest_invalid(put(&reg, &repo("m/json"), Some(OCI_MANIFEST), "{\"schemaVersion\": 2,").await);
    assert!(why.contains("not valid JSON"), "{why}");
}

#[tokio::test]
async fn a_body_that_is_not_an_object_is_refused() {
    let (reg, _) = registry();
    let why = manifest_invalid(put(&reg, &repo("m/array"), Some(OCI_MANIFEST), "[1, 2]").await);
    assert!(why.contains("not a JSON object"), "{why}");
}

#[tokio::test]
async fn an_image_without_layers_or_config_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/parts");
    let (config, layer) = pushed_blobs(&reg, &r).await;
    let no_layers = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config});
    assert!(manifest_invalid(put(&reg, &r, None, no_layers.to_string()).await).contains("layers"));
    let no_config = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [layer]});
    assert!(manifest_invalid(put(&reg, &r, None, no_config.to_string()).await).contains("config"));
}

#[tokio::test]
async fn a_malformed_descriptor_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/descriptor");
    let (config, layer) = pushed_blobs(&reg, &r).await;
    let cases = [
        ("digest", json!({"mediaType": "x", "digest": "sha256:nothex", "size": 1})),
        ("size", json!({"mediaType": "x", "digest": layer["digest"], "size": -1})),
        ("mediaType", json!({"digest": layer["digest"], "size": 5})),
        ("descriptor object", json!("sha256:abc")),
    ];
    for (what, bad) in cases {
        let body = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [bad]});
        let why = manifest_invalid(put(&reg, &r, None, body.to_string()).await);
        assert!(why.contains("layers[0]"), "{what}: {why}");
    }
}

#[tokio::test]
async fn a_missing_layer_blob_is_named() {
    let (reg, _) = registry();
    let r = repo("m/nolayer");
    push_blob(&reg, &r, b"{}").await;
    let body = image_manifest(b"{}", &[b"never pushed"]);
    match put(&reg, &r, Some(OCI_MANIFEST), body).await {
        Err(RegistryError::ManifestBlobUnknown(d)) => assert_eq!(d, sha256(b"never pushed")),
        other => panic!("expected MANIFEST_BLOB_UNKNOWN, got {other:?}"),
    }
    assert!(reg.get_manifest(&r, &tag("t")).await.is_err());
}

#[tokio::test]
async fn a_missing_config_blob_is_named() {
    let (reg, _) = registry();
    let r = repo("m/noconfig");
    push_blob(&reg, &r, b"layer").await;
    match put(&reg, &r, Some(OCI_MANIFEST), image_manifest(b"{\"never\":1}", &[b"layer"])).await {
        Err(RegistryError::ManifestBlobUnknown(d)) => assert_eq!(d, sha256(b"{\"never\":1}")),
        other => panic!("expected MANIFEST_BLOB_UNKNOWN, got {other:?}"),
    }
}

#[tokio::test]
async fn a_blob_in_another_repository_does_not_count() {
    let (reg, _) = registry();
    let (a, b) = (repo("m/has"), repo("m/hasnot"));
    pushed_blobs(&reg, &a).await;
    let body = image_manifest(b"{}", &[b"layer"]);
    assert!(matches!(put(&reg, &b, Some(OCI_MANIFEST), body).await, Err(RegistryError::ManifestBlobUnknown(_))));
}

#[tokio::test]
async fn a_foreign_layer_needs_no_blob() {
    let (reg, _) = registry();
    let r = repo("m/foreign");
    push_blob(&reg, &r, b"{}").await;
    let mut foreign = descriptor("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", b"elsewhere");
    foreign["urls"] = json!(["https://example.com/layer"]);
    let body = json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": descriptor("application/vnd.docker.container.image.v1+json", b"{}"), "layers": [foreign]});
    put(&reg, &r, Some(DOCKER_MANIFEST), body.to_string()).await.unwrap();
}

#[tokio::test]
async fn an_index_with_a_missing_child_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/nochild");
    let missing = sha256(b"no such manifest");
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": missing.to_string(), "size": 1}]});
    match put(&reg, &r, Some(OCI_INDEX), index.to_string()).await {
        Err(RegistryError::ManifestBlobUnknown(d)) => assert_eq!(d, missing),
        other => panic!("expected MANIFEST_BLOB_UNKNOWN, got {other:?}"),
    }
}

#[tokio::test]
async fn an_index_whose_child_is_only_a_blob_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/blobchild");
    // The child's bytes are stored as a blob, but it was never pushed as a manifest.
    let child = push_blob(&reg, &r, &image_manifest(b"{}", &[])).await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 1}]});
    assert!(matches!(
        put(&reg, &r, Some(OCI_INDEX), index.to_string()).await,
        Err(RegistryError::ManifestBlobUnknown(_))
    ));
}

#[tokio::test]
async fn a_manifest_over_the_size_limit_is_refused() {
    let (reg, _) = registry();
    let r = repo("m/large");
    let mut body = image_of_type(&reg, &r, OCI_MANIFEST).await.to_vec();
    body.resize(MAX_MANIFEST_SIZE + 1, b' ');
    let err = put(&reg, &r, Some(OCI_MANIFEST), body).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge(_)), "{err}");
}

#[tokio::test]
async fn a_manifest_at_the_size_limit_is_accepted() {
    let (reg, _) = registry();
    let r = repo("m/limit");
    let mut body = image_of_type(&reg, &r, OCI_MANIFEST).await.to_vec();
    // Trailing whitespace is valid JSON: the body is exactly the limit.
    body.resize(MAX_MANIFEST_SIZE, b' ');
    let put = put(&reg, &r, Some(OCI_MANIFEST), body.clone()).await.unwrap();
    assert_eq!(put.digest, sha256(&body));
    assert_eq!(reg.get_manifest(&r, &tag("t")).await.unwrap().content.len(), MAX_MANIFEST_SIZE);
}

#[tokio::test]
async fn a_digest_reference_must_match_the_body() {
    let (reg, _) = registry();
    let r = repo("m/digestref");
    let body = image_of_type(&reg, &r, OCI_MANIFEST).await;
    let wrong = Reference::Digest(sha256(b"not this body"));
    let err = reg.put_manifest(&r, &wrong, Some(OCI_MANIFEST), body.clone(), &Default::default()).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestInvalid(_)), "{err}");
    let right = Reference::Digest(sha256(&body));
    reg.put_manifest(&r, &right, Some(OCI_MANIFEST), body, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn a_subject_is_recorded_as_a_referrer() {
    let (reg, _) = registry();
    let r = repo("m/subject");
    let subject = push_image(&reg, &r, &tag("base"), "base").await;
    let (config, layer) = pushed_blobs(&reg, &r).await;
    let body = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": config, "layers": [layer],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": 1}});
    let put = put(&reg, &r, Some(OCI_MANIFEST), body.to_string()).await.unwrap();
    assert_eq!(put.subject, Some(subject.clone()));
    let referrers = reg.referrers(&r, &subject, None).await.unwrap();
    let index: Value = serde_json::from_slice(&referrers.index).unwrap();
    assert_eq!(index["manifests"][0]["digest"], put.digest.to_string());
    assert_eq!(index["manifests"][0]["artifactType"], "application/vnd.example.sig");
}
