//! What a policy is shown of one repository: its tags with digest, media type, size and the
//! time each was pushed.

use serde_json::Value;

use crate::plugins::cleanup::TagInfo;
use crate::registry::{Reference, Registry, RegistryError, RepoName, Result};

/// The repository's tags as a policy sees them, in tag order.
pub async fn tags(registry: &Registry, repo: &RepoName) -> Result<Vec<TagInfo>> {
    let mut out = Vec::new();
    for record in registry.tag_records(repo).await? {
        let manifest = match registry.get_manifest(repo, &Reference::Digest(record.digest.clone())).await {
            Ok(m) => m,
            // A tag whose manifest is gone cannot be pulled; show it with what is known.
            Err(RegistryError::ManifestUnknown(_)) => {
                out.push(TagInfo {
                    name: record.tag.to_string(),
                    digest: record.digest.to_string(),
                    media_type: String::new(),
                    size: 0,
                    created: record.pushed,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        out.push(TagInfo {
            name: record.tag.to_string(),
            digest: record.digest.to_string(),
            media_type: manifest.media_type.clone(),
            size: image_size(&manifest.content),
            created: record.pushed,
        });
    }
    Ok(out)
}

/// The manifest's own bytes plus every descriptor it lists (config and layers of an image, the
/// manifests of an index): what the tag's image weighs, shared blobs counted in full.
fn image_size(content: &[u8]) -> u64 {
    let Ok(v) = serde_json::from_slice::<Value>(content) else { return content.len() as u64 };
    let size = |d: &Value| d.get("size").and_then(Value::as_u64).unwrap_or(0);
    let listed = |key: &str| v.get(key).and_then(Value::as_array).map(|a| a.iter().map(size).sum()).unwrap_or(0u64);
    content.len() as u64 + v.get("config").map(size).unwrap_or(0) + listed("layers") + listed("manifests")
}

#[cfg(test)]
mod tests {
    use super::image_size;

    #[test]
    fn sizes_count_every_descriptor() {
        let m = br#"{"config":{"size":10},"layers":[{"size":100},{"size":1000}]}"#;
        assert_eq!(image_size(m), m.len() as u64 + 1110);
        let i = br#"{"manifests":[{"size":5},{"size":7}]}"#;
        assert_eq!(image_size(i), i.len() as u64 + 12);
        assert_eq!(image_size(b"not json"), 8);
    }
}
