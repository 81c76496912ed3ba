use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;

use super::verify::{verify_same_file, FileState};
use super::*;
use crate::plugins::DirGrant;
use crate::storage::suite::drivers::built;

fn spec(path: PathBuf, root: Option<&Path>, instances: usize) -> PluginSpec {
    let mut spec = PluginSpec::new(path.file_stem().unwrap().to_string_lossy().into_owned(), path);
    spec.instances = instances;
    spec.dirs =
        root.map(|r| DirGrant { host: r.to_path_buf(), guest: "/data".into(), read_only: false }).into_iter().collect();
    spec.config = root.map(|_| ("root".to_string(), "/data".to_string())).into_iter().collect();
    spec
}

/// storage-fs writes distribution's layout into its preopened directory, nowhere else (the
/// driver suite itself runs per case in `storage::suite::drivers`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_fs_writes_into_its_grant() {
    let Some(wasm) = built("berth_storage_fs.wasm") else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = ComponentDriver::load(spec(wasm, Some(dir.path()), 2)).await.unwrap();
    d.put_content("/docker/registry/v2/x", Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("docker/registry/v2/x")).unwrap(), b"1");
}

fn with_config(mut spec: PluginSpec, pairs: &[(&str, &str)]) -> PluginSpec {
    spec.config.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spec
}

/// A directory with more children than one page: every child comes back, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_large_directories() {
    let n = LIST_PAGE as usize * 2 + 345;
    let mut want: Vec<String> = (0..n).map(|i| format!("/big/e{i:05}")).collect();
    want.push("/big/sub".to_string());
    want.sort();
    if let Some(wasm) = built("berth_storage_fs.wasm") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("big/sub")).unwrap();
        for i in 0..n {
            std::fs::write(dir.path().join(format!("big/e{i:05}")), b"x").unwrap();
        }
        // A put-content in flight leaves a temporary name; listings never show it.
        std::fs::write(dir.path().join("big/e00001.tmp-0123456789abcdef"), b"x").unwrap();
        let d = ComponentDriver::load(spec(wasm, Some(dir.path()), 1)).await.unwrap();
        assert_eq!(d.list("/big").await.unwrap(), want);
        assert!(d.list("/nope").await.unwrap_err().is_not_found());
    }
    if let Some(wasm) = built("berth_storage_memory.wasm") {
        let d = ComponentDriver::load(spec(wasm, None, 1)).await.unwrap();
        for p in want.iter().map(|p| if p == "/big/sub" { "/big/sub/x".to_string() } else { p.clone() }) {
            d.put_content(&p, Bytes::from_static(b"x")).await.unwrap();
        }
        assert_eq!(d.list("/big").await.unwrap(), want);
    }
}

/// A plugin whose pages repeat a token, or never end, fails the listing; the host goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_refuses_pages_that_never_end() {
    let Some(wasm) = built("berth_hostile.wasm") else { return };
    for (mode, why) in [("list-loop", "came back twice"), ("list-endless", "more than")] {
        let d = ComponentDriver::load(with_config(spec(wasm.clone(), None, 1), &[("mode", mode)])).await.unwrap();
        d.put_content("/d/a", Bytes::from_static(b"1")).await.unwrap();
        let started = std::time::Instant::now();
        let e = d.list("/d").await.unwrap_err();
        assert!(matches!(&e, StorageError::Backend(m) if m.contains(why)), "{mode}: {e}");
        assert!(started.elapsed() < Duration::from_secs(30), "{mode}: {:?}", started.elapsed());
        assert_eq!(d.get_content("/d/a").await.unwrap(), Bytes::from_static(b"1"));
    }
}

async fn write(d: &ComponentDriver, path: &str, append: bool, data: Bytes) -> Result<()> {
    let mut w = d.writer(path, append).await?;
    for chunk in data.chunks(65_521) {
        w.write(data.slice_ref(chunk)).await?;
    }
    w.commit().await
}

/// Writes are read back through the plugin: one that serves other bytes than it was given
/// fails the commit, while an honest one passes whatever the chunking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_check_what_the_plugin_stored() {
    let data: Bytes = (0..3_000_017u32).map(|i| (i % 251) as u8).collect::<Vec<_>>().into();
    if let Some(wasm) = built("berth_hostile.wasm") {
        let d = ComponentDriver::load(with_config(spec(wasm, None, 1), &[("mode", "bad-data")])).await.unwrap();
        let e = write(&d, "/up/data", false, data.clone()).await.unwrap_err();
        assert!(matches!(&e, StorageError::Backend(m) if m.contains("differ")), "{e}");
        // Paths that are not blob data are not corrupted: they pass.
        write(&d, "/up/other", false, data.clone()).await.unwrap();
    }
    if let Some(wasm) = built("berth_storage_fs.wasm") {
        let dir = tempfile::tempdir().unwrap();
        let d = ComponentDriver::load(spec(wasm, Some(dir.path()), 2)).await.unwrap();
        write(&d, "/up/data", false, data.slice(..1_000_000)).await.unwrap();
        write(&d, "/up/data", true, data.slice(1_000_000..)).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("up/data")).unwrap(), data);
        // A file the host wrote is checked by identity: what open-file gives must be that
        // file, unchanged since the host synced it.
        write(&d, "/up/other", false, data.slice(..5)).await.unwrap();
        let state = |rel: &str| FileState::of(&std::fs::metadata(dir.path().join(rel)).unwrap());
        let p = d.plugin();
        verify_same_file(&p, "/up/data", data.len() as u64, state("up/data")).await.unwrap();
        assert!(verify_same_file(&p, "/up/other", data.len() as u64, state("up/data")).await.is_err());
        let before = state("up/data");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("up/data"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"!"))
            .unwrap();
        assert!(verify_same_file(&p, "/up/data", data.len() as u64, before).await.is_err());
    }
    // The other ways bytes reach storage-fs: its streams (hashed by the pump) and copies.
    for handover in ["stream", "copy"] {
        let Some(wasm) = built("berth_storage_fs.wasm") else { return };
        let dir = tempfile::tempdir().unwrap();
        let d = ComponentDriver::load(with_config(spec(wasm, Some(dir.path()), 2), &[("handover", handover)]))
            .await
            .unwrap();
        write(&d, "/up/data", false, data.slice(..1_000_000)).await.unwrap();
        write(&d, "/up/data", true, data.slice(1_000_000..)).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("up/data")).unwrap(), data, "{handover}");
        let back: Vec<Bytes> = d.reader("/up/data", 7).await.unwrap().map(|c| c.unwrap()).collect().await;
        assert_eq!(back.concat(), data[7..], "{handover}");
    }
}
