//! `admission-rules`: what may be pushed, as a Berth admission policy. The Rust port of the
//! Python plugin (`plugins/admission-rules-py/app.py`): the same config, the same verdict and
//! message for every write, so the three languages are compared on one policy.
//!
//! Config (every key optional; an absent key checks nothing):
//! - `maxlayerbytes`: the largest layer (and declared blob upload) in bytes;
//! - `maximagebytes`: the largest image: manifest + config + layers, in bytes;
//! - `mediatypes`: manifest media types allowed, comma-separated;
//! - `artifacttypes`: artifact types allowed (a manifest's `artifactType`, else its config's
//!   media type), comma-separated;
//! - `annotations`: annotation keys every manifest must carry, comma-separated;
//! - `tags`: tag name patterns a pushed tag must match one of, comma-separated (`*` matches any
//!   run of characters).

use berth_plugin_sdk::admission::{AdmissionPolicy, Identity, ManifestPut, Verdict, Write};
use berth_plugin_sdk::{Config, InitError, RequestInfo};

#[derive(Default)]
struct Rules {
    max_layer: Option<u64>,
    max_image: Option<u64>,
    media_types: Option<Vec<String>>,
    artifact_types: Option<Vec<String>>,
    annotations: Option<Vec<String>>,
    tags: Option<Vec<String>>,
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `*` matches any run of characters; everything else matches itself.
fn star_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

impl Rules {
    fn put(&self, put: &ManifestPut) -> Verdict {
        let m = &put.manifest;
        let deny = |s: String| Verdict::Deny(s);
        if let Some(allowed) = &self.media_types {
            if !allowed.contains(&m.media_type) {
                return deny(format!("media type {} is not allowed (allowed: {})", m.media_type, allowed.join(", ")));
            }
        }
        if let (Some(allowed), Some(at)) = (&self.artifact_types, &m.artifact_type) {
            if !allowed.contains(at) {
                return deny(format!("artifact type {at} is not allowed"));
            }
        }
        if let (Some(patterns), Some(tag)) = (&self.tags, &put.tag) {
            if !patterns.iter().any(|p| star_match(p, tag)) {
                return deny(format!("tag {tag} does not match any allowed pattern ({})", patterns.join(", ")));
            }
        }
        if let Some(required) = &self.annotations {
            for key in required {
                if !m.annotations.iter().any(|(k, _)| k == key) {
                    return deny(format!("missing required annotation {key}"));
                }
            }
        }
        if let Some(max) = self.max_layer {
            if let Some(l) = m.layers.iter().find(|l| l.size > max) {
                return deny(format!("layer {} is {} bytes; the limit is {max}", l.digest, l.size));
            }
        }
        if let (Some(max), Some(config)) = (self.max_image, &m.config) {
            let total = m.size + config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
            if total > max {
                return deny(format!("image is {total} bytes; the limit is {max}"));
            }
        }
        Verdict::Allow
    }
}

impl AdmissionPolicy for Rules {
    fn init(config: Config) -> Result<Self, InitError> {
        let mut r = Rules::default();
        for (key, value) in config.iter() {
            let bytes = || {
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| InitError::InvalidConfig((key.to_string(), "must be a whole number of bytes".into())))
            };
            match key {
                "maxlayerbytes" => r.max_layer = Some(bytes()?),
                "maximagebytes" => r.max_image = Some(bytes()?),
                "mediatypes" => r.media_types = Some(list(value)),
                "artifacttypes" => r.artifact_types = Some(list(value)),
                "annotations" => r.annotations = Some(list(value)),
                "tags" => r.tags = Some(list(value)),
                _ => return Err(InitError::InvalidConfig((key.to_string(), "unknown key".into()))),
            }
        }
        Ok(r)
    }

    fn check(&self, write: Write, _identity: Option<&Identity>, _request: &RequestInfo) -> Verdict {
        match write {
            Write::ManifestPut(p) => self.put(&p),
            Write::UploadStart(u) => match self.max_layer {
                Some(max) if u.size > max => {
                    Verdict::Deny(format!("blob of {} bytes exceeds the layer limit of {max}", u.size))
                }
                _ => Verdict::Allow,
            },
            Write::ManifestDelete(_) => Verdict::Allow,
        }
    }
}

berth_plugin_sdk::export_admission_policy!(Rules);
berth_plugin_sdk::declare_stateless!();

#[cfg(test)]
mod tests {
    use super::star_match;

    #[test]
    fn stars() {
        assert!(star_match("v*", "v1.2.3"));
        assert!(!star_match("v*", "latest"));
        assert!(star_match("*-rc*", "1.0-rc2"));
        assert!(star_match("latest", "latest"));
        assert!(!star_match("latest", "latest2"));
    }
}
