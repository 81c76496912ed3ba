//! `berth plugin bench-admission FILE`: what an admission plugin costs, measured in-process on
//! the runtime that serves it: the first load (compile into an empty cache, instantiate, init),
//! a load from that cache (what a restart or a reload of the same file pays), a fresh instance
//! from the pre-linked component, and `check` calls on a warm instance with a representative
//! manifest push (p50 and p99 of each call, through the pool's funnel as a request makes it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Entry, Manifest, ManifestPut, Verdict, Write};
use crate::plugins::admission::PolicyPlugin;
use crate::plugins::wit::latest::types::RequestInfo;
use crate::plugins::{AdmissionKind, Failure, PluginSpec, Swap};

#[derive(Debug)]
pub struct Figures {
    pub first_load: Duration,
    pub cached_load: Duration,
    pub instantiate: Duration,
    pub call_p50: Duration,
    pub call_p99: Duration,
    pub allowed: bool,
}

/// A two-layer OCI image pushed to `bench/app:v1`, with a source annotation.
pub fn sample_write() -> Write {
    let entry = |mt: &str, n: u8, size: u64| Entry {
        media_type: mt.to_string(),
        digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
        size,
        artifact_type: None,
        annotations: Vec::new(),
    };
    Write::ManifestPut(ManifestPut {
        repository: "bench/app".into(),
        tag: Some("v1".into()),
        manifest: Manifest {
            digest: format!("sha256:{}", "ab".repeat(32)),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: Some("application/vnd.oci.image.config.v1+json".into()),
            size: 700,
            config: Some(entry("application/vnd.oci.image.config.v1+json", 1, 600)),
            layers: vec![
                entry("application/vnd.oci.image.layer.v1.tar+gzip", 2, 3 << 20),
                entry("application/vnd.oci.image.layer.v1.tar+gzip", 3, 40 << 20),
            ],
            manifests: Vec::new(),
            subject: None,
            annotations: vec![("org.opencontainers.image.source".into(), "https://example.test/app".into())],
        },
        tag_current: None,
    })
}

pub async fn run(file: &Path, config: Vec<(String, String)>, iterations: u32) -> Result<Figures, Failure> {
    let cache = std::env::temp_dir().join(format!("berth-bench-admission-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut spec = PluginSpec::new(name, file.to_path_buf());
    spec.config = config;
    spec.cache_dir = Some(cache.clone());
    let t = Instant::now();
    let first = Swap::<AdmissionKind>::load(spec.clone()).await;
    let first_load = t.elapsed();
    drop(first?);
    let t = Instant::now();
    let swap = Arc::new(Swap::<AdmissionKind>::load(spec).await?);
    let cached_load = t.elapsed();
    let _ = std::fs::remove_dir_all(&cache);

    let pool = swap.current();
    let n = (iterations / 20).max(5);
    let t = Instant::now();
    for _ in 0..n {
        pool.instantiate().await?;
    }
    let instantiate = t.elapsed() / n;

    let plugin = PolicyPlugin(swap);
    let write = sample_write();
    let request =
        RequestInfo { id: "bench".into(), method: "PUT".into(), addr: "127.0.0.1:1".into(), user_agent: None };
    let mut allowed = true;
    for _ in 0..iterations.min(200) {
        allowed &= matches!(plugin.check(write.clone(), None, request.clone()).await?, Verdict::Allow);
    }
    let mut times = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        let t = Instant::now();
        let v = plugin.check(write.clone(), None, request.clone()).await?;
        times.push(t.elapsed());
        allowed &= matches!(v, Verdict::Allow);
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok(Figures { first_load, cached_load, instantiate, call_p50: at(0.50), call_p99: at(0.99), allowed })
}
