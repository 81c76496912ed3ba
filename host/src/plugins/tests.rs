//! The runtime over real components from the plugins workspace: the generic pool with a
//! second kind (cleanup), typed load and call errors, WIT version checks, pool growth.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::cleanup::{Deletion, PolicyPlugin, RetentionPolicy, TagInfo};
use super::*;

fn built(file: &str) -> PathBuf {
    crate::storage::suite::drivers::built(file).unwrap_or_else(|| panic!("{file} is not built"))
}

fn spec(file: &str, config: &[(&str, &str)]) -> PluginSpec {
    let mut s = PluginSpec::new(file.trim_end_matches(".wasm"), built(file));
    s.config = config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    s.deadline = Duration::from_millis(1000);
    s
}

fn tag(name: &str, age_days: u64) -> TagInfo {
    TagInfo {
        name: name.into(),
        digest: format!("sha256:{:064x}", age_days),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: 1234,
        created: SystemTime::now() - Duration::from_secs(age_days * 86_400),
    }
}

/// A second plugin kind on the generic runtime: the cleanup adapter is all it took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_policy_runs_on_the_generic_pool_and_reloads() {
    let swap = Arc::new(
        Swap::<CleanupKind>::load(spec("berth_cleanup_keep_latest.wasm", &[("keep", "2"), ("protect", "latest")]))
            .await
            .unwrap(),
    );
    assert!(swap.current().stateless, "keep-latest declares itself stateless");
    assert_eq!(swap.current().version, semver::Version::new(0, 1, 0));
    let policy = PolicyPlugin(swap.clone());
    let tags = [tag("v3", 1), tag("v2", 10), tag("latest", 40), tag("v1", 30), tag("old", 50)];
    let mut plan = policy.plan("team/app", &tags, &[]).await.unwrap();
    plan.sort_by(|a, b| a.tag.cmp(&b.tag));
    let names: Vec<&str> = plan.iter().map(|d: &Deletion| d.tag.as_str()).collect();
    assert_eq!(names, ["old", "v1"], "{plan:?}");
    assert!(plan[0].reason.contains("keep=2"), "{plan:?}");
    // Reload with another config: the new version serves, the adapter is unchanged.
    swap.reload(spec("berth_cleanup_keep_latest.wasm", &[("keep", "4")])).await.unwrap();
    let plan = policy.plan("team/app", &tags, &[]).await.unwrap();
    assert_eq!(plan.iter().map(|d| d.tag.as_str()).collect::<Vec<_>>(), ["old"]);
    // A config the plugin refuses is a typed init error and keeps the old version.
    let f = swap.reload(spec("berth_cleanup_keep_latest.wasm", &[("keep", "many")])).await.unwrap_err();
    assert!(matches!(&f.error, PluginError::InitInvalidConfig { key, .. } if key == "keep"), "{f}");
    assert_eq!(policy.plan("team/app", &tags, &[]).await.unwrap().len(), 1);
    assert!(policy.plan("team/app", &[], &[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_of_another_world_is_refused_by_type() {
    let f = Swap::<CleanupKind>::load(spec("berth_storage_memory.wasm", &[])).await.err().unwrap();
    assert_eq!(
        f.error,
        PluginError::WrongWorld {
            path: built("berth_storage_memory.wasm").display().to_string(),
            found: "storage-driver-plugin",
            wanted: "cleanup-policy-plugin"
        }
    );
    assert_eq!(f.error.kind(), "wrong_world");
}

#[test]
fn a_plugin_built_against_another_wit_version_is_refused_naming_both() {
    let e = loader::check(&built("berth_wit_future.wasm"), None, None).err().unwrap();
    assert!(
        matches!(&e, PluginError::WitVersion { found, supported, .. } if found == "0.2.0" && supported == "0.1.x"),
        "{e}"
    );
    let shown = e.to_string();
    assert!(shown.contains("berth:plugin@0.2.0") && shown.contains("berth:plugin@0.1.x"), "{shown}");
}

#[test]
fn load_errors_are_typed() {
    let kind = |path: &Path, pin: Option<&str>| loader::check(path, pin, None).err().map(|e| e.kind());
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(kind(&dir.path().join("missing.wasm"), None), Some("file_missing"));
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
    assert_eq!(kind(&dir.path().join("junk.wasm"), None), Some("not_component"));
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    assert_eq!(kind(&dir.path().join("core.wasm"), None), Some("not_component"));
    let fs = built("berth_storage_fs.wasm");
    assert_eq!(kind(&fs, Some("sha256:<placeholder>")), Some("pin_mismatch"));
    let want = loader::check(&fs, None, Some(World::CleanupPolicy)).err().unwrap();
    assert_eq!(want.kind(), "wrong_world");
    let ok = loader::check(&fs, None, Some(World::StorageDriver)).unwrap();
    assert_eq!(ok.world, World::StorageDriver);
    assert!(ok.stateless);
    assert!(!loader::check(&built("berth_storage_memory.wasm"), None, None).unwrap().stateless);
}

/// Stat through the storage pool, returning the failure's kind.
async fn stat_failure(p: &Pool<StorageKind>, path: &str) -> Option<&'static str> {
    let path = path.to_string();
    p.call("stat", |i| {
        Box::pin(async move { i.bindings.berth_plugin_storage_driver().call_stat(&mut i.store, &path).await })
    })
    .await
    .err()
    .map(|f| f.error.kind())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_failures_are_typed_and_the_pool_recovers() {
    for (mode, kind) in [("loop", "deadline"), ("oom", "memory_cap"), ("panic", "trap")] {
        let mut s = spec("berth_hostile.wasm", &[("mode", mode)]);
        s.memory_bytes = 32 << 20;
        let p = Pool::<StorageKind>::load(s).await.unwrap();
        assert_eq!(stat_failure(&p, "/x").await, Some(kind), "{mode}");
        // The discarded instance is replaced on the next call, which fails the same way.
        assert_eq!(stat_failure(&p, "/x").await, Some(kind), "{mode}");
        assert!(p.broken().is_none(), "{mode}: instances still start");
    }
    let f = Pool::<StorageKind>::load(spec("berth_hostile.wasm", &[("mode", "init-fail")])).await.err().unwrap();
    assert!(matches!(&f.error, PluginError::InitInvalidConfig { key, .. } if key == "mode"), "{f}");
}

/// A stateless plugin's pool grows past a stuck call: the other call is answered at once.
/// A stateful one never runs in more instances than configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_call_does_not_hold_up_a_stateless_plugin() {
    let mut s = spec("berth_hostile.wasm", &[("mode", "stuck")]);
    s.deadline = Duration::from_secs(3);
    let p = Pool::<StorageKind>::load(s).await.unwrap();
    assert!(p.stateless);
    let stuck = tokio::spawn({
        let p = p.clone();
        async move { stat_failure(&p, "/stuck").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert_eq!(stat_failure(&p, "/other").await, None, "a missing path is an answer, not a failure");
    assert!(t.elapsed() < Duration::from_millis(1000), "answered after {:?}", t.elapsed());
    assert_eq!(stuck.await.unwrap(), Some("deadline"));

    let p = Pool::<StorageKind>::load(spec("berth_storage_memory.wasm", &[])).await.unwrap();
    assert!(!p.stateless);
    let held = p.pick();
    let _guard = held.lock().await;
    let second = p.pick();
    assert!(Arc::ptr_eq(&held, &second), "a stateful plugin with one instance has one slot");
}

/// A call abandoned mid-way (its request was cancelled, so its future was dropped) leaves an
/// instance wasmtime will not enter again: the next call must get a fresh one, not a trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_abandoned_mid_way_does_not_poison_the_next() {
    let mut s = spec("berth_hostile.wasm", &[("mode", "stuck")]);
    s.deadline = Duration::from_secs(5);
    s.max_instances = 1;
    let p = Pool::<StorageKind>::load(s).await.unwrap();
    let abandoned = tokio::time::timeout(Duration::from_millis(100), stat_failure(&p, "/stuck")).await;
    assert!(abandoned.is_err(), "the stuck call was cut off by the caller");
    assert_eq!(stat_failure(&p, "/other").await, None, "the next call is answered by a fresh instance");
    assert_eq!(stat_failure(&p, "/other").await, None);
}

/// The fifth kind: an admission policy (the Rust admission-rules) allows and denies with its
/// message, and refuses a config it does not understand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_policy_allows_and_denies() {
    use super::admission::{PolicyPlugin, Verdict, Write};
    let swap = Arc::new(
        Swap::<AdmissionKind>::load(spec("berth_admission_rules.wasm", &[("tags", "v*"), ("maxlayerbytes", "1000")]))
            .await
            .unwrap(),
    );
    let policy = PolicyPlugin(swap.clone());
    let request = wit::latest::types::RequestInfo {
        id: "t".into(),
        method: "PUT".into(),
        addr: "127.0.0.1:1".into(),
        user_agent: None,
    };
    let mut write = crate::admission::bench::sample_write();
    // The sample's layers are megabytes: over this config's limit.
    match policy.check(write.clone(), None, request.clone()).await.unwrap() {
        Verdict::Deny(m) => assert!(m.contains("the limit is 1000"), "{m}"),
        v => panic!("{v:?}"),
    }
    if let Write::ManifestPut(p) = &mut write {
        p.manifest.layers.clear();
        p.manifest.config = None;
    }
    assert!(matches!(policy.check(write.clone(), None, request.clone()).await.unwrap(), Verdict::Allow));
    if let Write::ManifestPut(p) = &mut write {
        p.tag = Some("nightly".into());
    }
    assert!(matches!(policy.check(write, None, request).await.unwrap(), Verdict::Deny(_)));
    let f = swap.reload(spec("berth_admission_rules.wasm", &[("bogus", "1")])).await.unwrap_err();
    assert!(matches!(&f.error, PluginError::InitInvalidConfig { key, .. } if key == "bogus"), "{f}");
}
