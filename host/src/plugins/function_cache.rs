//! Cranelift's incremental compilation cache, kept on disk beside the compiled components.
//!
//! A JavaScript or Python plugin carries its language's interpreter: the same functions in
//! every plugin built with that toolchain for that world, and compiling them is nearly all of a
//! first load (about 30 s on two cores). With this cache only the first plugin of a kind pays
//! that; the next ones take each function already compiled from the cache and pay little more
//! than translating it.
//!
//! On disk, under the component cache: `functions/<engine>/<sha256>.pack`, one pack per
//! compiled component holding the functions its compile added (length-prefixed key/value
//! pairs). A pack is written whole and renamed into place, so processes sharing the cache need
//! no lock and never read a torn file; a pack that does not parse is ignored. Packs are read
//! into memory only while a component compiles, newest first up to [`MAX_LOADED_BYTES`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::CacheStore;

/// What one compile reads of the packs at most: bounds the memory a compile holds whatever the
/// cache has grown to (an interpreter's pack is 40-60 MiB).
const MAX_LOADED_BYTES: u64 = 512 << 20;

const MAGIC: &[u8; 8] = b"BERTHFN1";

/// The store wasmtime's compiler asks; answers only while [`compiling`] runs.
#[derive(Default)]
pub struct FunctionCache {
    session: Mutex<Option<Session>>,
}

#[derive(Default)]
struct Session {
    known: HashMap<Vec<u8>, Vec<u8>>,
    added: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for FunctionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FunctionCache")
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        session.as_ref()?.known.get(key).map(|v| Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        match session.as_mut() {
            Some(s) => {
                s.added.push((key.to_vec(), value));
                true
            }
            None => false,
        }
    }
}

/// The process's cache, given to the engine's configuration.
pub fn store() -> Arc<FunctionCache> {
    static STORE: OnceLock<Arc<FunctionCache>> = OnceLock::new();
    STORE.get_or_init(Default::default).clone()
}

/// Runs `compile` with the packs under `dir` (a private component cache directory) loaded, then
/// writes what it added as `name`'s pack. One compile at a time per process: each already uses
/// every core, and a pack then holds exactly one compile's functions.
pub fn compiling<T>(dir: Option<&Path>, engine: u64, name: &str, compile: impl FnOnce() -> T) -> T {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let Some(dir) = dir.map(|d| d.join("functions").join(format!("{engine:016x}"))) else { return compile() };
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cache = store();
    *cache.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(Session { known: load(&dir), added: Vec::new() });
    let out = compile();
    let session = cache.session.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(s) = session.filter(|s| !s.added.is_empty()) {
        if let Err(e) = write(&dir, name, &s.added) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot keep compiled functions for the next plugin");
        }
    }
    out
}

/// Every pack under `dir`, newest first, up to the bound.
fn load(dir: &Path) -> HashMap<Vec<u8>, Vec<u8>> {
    let mut packs: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    packs.sort_by_key(|p| std::cmp::Reverse(p.0));
    let mut known = HashMap::new();
    let mut loaded = 0u64;
    for (_, len, path) in packs {
        if loaded + len > MAX_LOADED_BYTES {
            break;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        match parse(&bytes) {
            Some(entries) => {
                loaded += len;
                for (k, v) in entries {
                    known.entry(k.to_vec()).or_insert_with(|| v.to_vec());
                }
            }
            None => tracing::warn!(pack = %path.display(), "ignoring an unreadable compiled-function pack"),
        }
    }
    known
}

/// The pairs of a pack, or None if it is not one (whole).
fn parse(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let v = rest.get(4..4 + n)?;
        *rest = &rest[4 + n..];
        Some(v)
    }
    let mut rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.push((k, v));
    }
    Some(out)
}

fn write(dir: &Path, name: &str, pairs: &[(Vec<u8>, Vec<u8>)]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let file = dir.join(format!("{name}.pack"));
    let tmp = dir.join(format!("{name}.pack.tmp-{:016x}", rand::random::<u64>()));
    let written = (|| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        w.write_all(MAGIC)?;
        for (k, v) in pairs {
            for part in [k, v] {
                let n = u32::try_from(part.len()).map_err(|_| std::io::Error::other("entry over 4 GiB"))?;
                w.write_all(&n.to_le_bytes())?;
                w.write_all(part)?;
            }
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_round_trips_and_a_torn_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = vec![(b"k1".to_vec(), b"value one".to_vec()), (b"k2".to_vec(), Vec::new())];
        write(dir.path(), "a", &pairs).unwrap();
        let known = load(dir.path());
        assert_eq!(known.len(), 2);
        assert_eq!(known[b"k1".as_slice()], b"value one");
        let bytes = std::fs::read(dir.path().join("a.pack")).unwrap();
        assert!(parse(&bytes[..bytes.len() - 1]).is_none());
        assert!(parse(b"not a pack").is_none());
    }
}
