//! One test per case and driver, e.g. `storage::suite::drivers::s3::rename_races`: the native
//! drivers, the object stores when their services are up (`tests/objectstores.py`), and the
//! first-party plugins when they are built. A missing service or plugin skips its tests, unless
//! `BERTH_REQUIRE_SERVICES` / `BERTH_REQUIRE_PLUGINS` says it must be there.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::plugins::{DirGrant, PluginSpec};
use crate::storage::{ComponentDriver, FilesystemDriver, InMemoryDriver, StorageDriver};

/// A driver under test and what must outlive it (its directory).
struct Subject {
    driver: Box<dyn StorageDriver>,
    _dir: Option<TempDir>,
}

async fn check(subject: Option<Subject>, case: &str) {
    if let Some(s) = subject {
        super::run_named(&*s.driver, case).await;
    }
}

macro_rules! stamp_tests {
    ([$open:ident] $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::check(super::$open().await, stringify!($case)).await
            }
        )*
    };
}

/// `mod $driver` with one test per case, each on a fresh driver from `$open`.
macro_rules! driver_tests {
    ($driver:ident, $open:ident) => {
        mod $driver {
            with_cases!(stamp_tests, $open);
        }
    };
}

driver_tests!(filesystem, open_filesystem);
driver_tests!(in_memory, open_in_memory);
driver_tests!(s3, open_s3);
driver_tests!(azure, open_azure);
driver_tests!(storage_fs_component, open_storage_fs);
driver_tests!(storage_memory_component, open_storage_memory);
driver_tests!(template_component, open_template);

async fn open_filesystem() -> Option<Subject> {
    let dir = tempfile::tempdir().unwrap();
    let driver = Box::new(FilesystemDriver::open(dir.path()).unwrap());
    Some(Subject { driver, _dir: Some(dir) })
}

async fn open_in_memory() -> Option<Subject> {
    Some(Subject { driver: Box::new(InMemoryDriver::new()), _dir: None })
}

async fn open_s3() -> Option<Subject> {
    let driver = crate::storage::object::tests::s3_test_driver()?;
    Some(Subject { driver: Box::new(driver), _dir: None })
}

async fn open_azure() -> Option<Subject> {
    let driver = crate::storage::object::tests::azure_test_driver()?;
    Some(Subject { driver: Box::new(driver), _dir: None })
}

/// Stateless plugins run with two instances, so the concurrent cases cross instances.
async fn open_storage_fs() -> Option<Subject> {
    open_component("berth_storage_fs.wasm", true, 2, 64).await
}

/// Keeps its objects in its instance: one instance, or each would see a store of its own, and
/// memory for what the cases store (`large_file` holds 20 MiB, copied while it is appended to).
async fn open_storage_memory() -> Option<Subject> {
    open_component("berth_storage_memory.wasm", false, 1, 256).await
}

async fn open_template() -> Option<Subject> {
    open_component("berth_plugin_template.wasm", true, 2, 64).await
}

/// Loads a first-party plugin from `plugins/target` (with a fresh directory granted as `/data`
/// if `grant`), or `None` if it is not built.
async fn open_component(file: &str, grant: bool, instances: usize, memory_mib: usize) -> Option<Subject> {
    let path = built(file)?;
    let dir = grant.then(|| tempfile::tempdir().unwrap());
    let mut spec = PluginSpec::new(file.trim_end_matches(".wasm"), path);
    spec.memory_bytes = memory_mib << 20;
    spec.instances = instances;
    spec.dirs = dir
        .iter()
        .map(|d| DirGrant { host: d.path().to_path_buf(), guest: "/data".into(), read_only: false })
        .collect();
    // Compiled once for the whole run: every test loads a fresh driver.
    spec.cache_dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/suite-components"));
    // One load at a time, so the first one compiles and the rest read the cache.
    static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = LOADING.lock().await;
    let driver = ComponentDriver::load(spec).await.unwrap_or_else(|e| panic!("loading {file}: {e}"));
    Some(Subject { driver: Box::new(driver), _dir: dir })
}

/// A first-party plugin from `plugins/target`, or None (test skipped) if it is not built; under
/// `BERTH_REQUIRE_PLUGINS` (the full test run, which just built them) a missing one fails.
pub(crate) fn built(file: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release").join(file);
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("BERTH_REQUIRE_PLUGINS").is_none(),
        "{} is not built, and BERTH_REQUIRE_PLUGINS is set",
        p.display()
    );
    eprintln!("SKIPPED: {} is not built (cd plugins && cargo build --target wasm32-wasip2 --release)", p.display());
    None
}
