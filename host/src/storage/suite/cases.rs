//! The cases. Each gets the driver and a fresh prefix `p` (e.g. `/suite-overwrite-1a2b3c4d`),
//! keeps every path below it, and removes the files it made: the runner fails a case that
//! leaves any behind. A case reports the first thing that did not hold, naming the call and
//! the path.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};

use super::{parallel, Failure};
use crate::storage::{Expect, StorageDriver, StorageError};

type Outcome = Result<(), Failure>;

/// Fails the case with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(Failure::new(format!($($why)+)));
        }
    };
}

/// Fails the case unless `got == want`, showing both (shortened: a failure is one line).
macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($what:tt)+) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            let (got, want) = (shown(format!("{got:?}")), shown(format!("{want:?}")));
            return Err(Failure::new(format!("{}: got {got}, want {want}", format!($($what)+))));
        }
    }};
}

/// At most 200 characters of a value's debug form.
fn shown(debug: String) -> String {
    match debug.char_indices().nth(200) {
        Some((cut, _)) => format!("{}... ({} characters)", &debug[..cut], debug.chars().count()),
        None => debug,
    }
}

/// A driver result in a case: an error becomes a failure naming the call.
trait Context<T> {
    fn ctx(self, call: impl Display) -> Result<T, Failure>;
}

impl<T> Context<T> for Result<T, StorageError> {
    fn ctx(self, call: impl Display) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(format!("{call}: {e}")))
    }
}

/// Expects `NotFound` from `call`.
fn not_found<T>(r: Result<T, StorageError>, call: impl Display) -> Outcome {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Failure::new(format!("{call}: want path-not-found, got {e}"))),
        Ok(_) => Err(Failure::new(format!("{call}: want path-not-found, it succeeded"))),
    }
}

/// Deterministic bytes for `seed`: every file gets content no other file has.
fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// Compares content without printing megabytes: the lengths, or the first offset that differs.
fn same_bytes(got: &[u8], want: &[u8], what: impl Display) -> Outcome {
    if got.len() != want.len() {
        return Err(Failure::new(format!("{what}: got {} bytes, want {}", got.len(), want.len())));
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => Err(Failure::new(format!("{what}: content differs at byte {i} of {}", want.len()))),
        None => Ok(()),
    }
}

async fn put(d: &dyn StorageDriver, path: &str, content: impl Into<Bytes>) -> Outcome {
    d.put_content(path, content.into()).await.ctx(format_args!("put_content {path}"))
}

async fn get(d: &dyn StorageDriver, path: &str) -> Result<Bytes, Failure> {
    d.get_content(path).await.ctx(format_args!("get_content {path}"))
}

async fn delete(d: &dyn StorageDriver, path: &str) -> Outcome {
    d.delete(path).await.ctx(format_args!("delete {path}"))
}

async fn rename(d: &dyn StorageDriver, from: &str, to: &str) -> Outcome {
    d.rename(from, to).await.ctx(format_args!("rename {from} -> {to}"))
}

async fn list_sorted(d: &dyn StorageDriver, path: &str) -> Result<Vec<String>, Failure> {
    let mut entries = d.list(path).await.ctx(format_args!("list {path}"))?;
    entries.sort();
    Ok(entries)
}

/// Streams `path` from `offset` and compares it with `want` chunk by chunk.
async fn read_equals(d: &dyn StorageDriver, path: &str, offset: u64, want: &[u8]) -> Outcome {
    let what = format!("reader {path} from {offset}");
    let mut s = d.reader(path, offset).await.ctx(&what)?;
    let mut at = 0usize;
    while let Some(chunk) = s.try_next().await.ctx(&what)? {
        let end = at + chunk.len();
        ensure!(end <= want.len(), "{what}: more than the {} bytes expected", want.len());
        same_bytes(&chunk, &want[at..end], format_args!("{what}, bytes {at}..{end}"))?;
        at = end;
    }
    ensure_eq!(at, want.len(), "{what}: bytes read");
    Ok(())
}

/// Writes `data` through one writer in `chunk`-sized writes (checking `size` as it grows) and
/// commits.
async fn write(d: &dyn StorageDriver, path: &str, append: bool, data: &Bytes, chunk: usize) -> Outcome {
    let what = format!("writer {path} (append {append})");
    let mut w = d.writer(path, append).await.ctx(&what)?;
    let mut size = w.size();
    ensure!(append || size == 0, "{what}: a new writer starts at size {size}");
    for part in data.chunks(chunk) {
        w.write(data.slice_ref(part)).await.ctx(format_args!("{what}: write"))?;
        size += part.len() as u64;
        ensure_eq!(w.size(), size, "{what}: size after a write");
    }
    w.commit().await.ctx(format_args!("{what}: commit"))
}

/// Counts a worker as finished however it ends, so the workers watching it stop too.
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub(super) async fn content_round_trip(d: &dyn StorageDriver, p: &str) -> Outcome {
    let f = format!("{p}/a/b/c");
    put(d, &f, &b"hello"[..]).await?;
    ensure_eq!(get(d, &f).await?, &b"hello"[..], "get_content {f}");
    let info = d.stat(&f).await.ctx(format_args!("stat {f}"))?;
    ensure!(!info.is_dir && info.size == 5, "stat {f}: {info:?}, want a file of 5 bytes");
    let dir = format!("{p}/a/b");
    ensure!(d.stat(&dir).await.ctx(format_args!("stat {dir}"))?.is_dir, "stat {dir}: not a directory");
    let info = d.stat_file(&f).await.ctx(format_args!("stat_file {f}"))?;
    ensure!(!info.is_dir && info.size == 5, "stat_file {f}: {info:?}, want a file of 5 bytes");
    not_found(d.stat_file(&dir).await, format_args!("stat_file {dir} (a directory)"))?;
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    put(d, &f, binary.clone()).await?;
    ensure_eq!(get(d, &f).await?, &binary[..], "get_content {f} after a second put_content");
    delete(d, &f).await?;
    not_found(d.stat_file(&f).await, format_args!("stat_file {f} after delete"))?;
    not_found(d.get_content(&f).await, format_args!("get_content {f} after delete"))
}

pub(super) async fn overwrite(d: &dyn StorageDriver, p: &str) -> Outcome {
    let f = format!("{p}/f");
    put(d, &f, pattern(1, 100_000)).await?;
    put(d, &f, &b"short"[..]).await?;
    ensure_eq!(get(d, &f).await?, &b"short"[..], "get_content {f}: a shorter put_content replaces it whole");
    ensure_eq!(d.stat(&f).await.ctx("stat")?.size, 5, "stat {f}: size");
    // A writer without append replaces the file too, whatever was there.
    let data = pattern(2, 210_000);
    write(d, &f, false, &data, 70_000).await?;
    read_equals(d, &f, 0, &data).await?;
    write(d, &f, false, &Bytes::from_static(b"x"), 1).await?;
    ensure_eq!(get(d, &f).await?, &b"x"[..], "get_content {f}: a new writer's content replaces it whole");
    let (g, h) = (format!("{p}/g"), format!("{p}/h"));
    put(d, &g, &b"old content, longer"[..]).await?;
    put(d, &h, &b"new"[..]).await?;
    rename(d, &h, &g).await?;
    ensure_eq!(get(d, &g).await?, &b"new"[..], "get_content {g} after a rename over it");
    not_found(d.stat(&h).await, format_args!("stat {h} after renaming it away"))?;
    delete(d, &f).await?;
    delete(d, &g).await
}

pub(super) async fn zero_length(d: &dyn StorageDriver, p: &str) -> Outcome {
    let e = format!("{p}/empty");
    put(d, &e, Bytes::new()).await?;
    ensure!(get(d, &e).await?.is_empty(), "get_content {e}: not empty");
    let info = d.stat(&e).await.ctx(format_args!("stat {e}"))?;
    ensure!(!info.is_dir && info.size == 0, "stat {e}: {info:?}, want a file of 0 bytes");
    read_equals(d, &e, 0, b"").await?;
    match d.reader(&e, 1).await {
        Err(StorageError::InvalidOffset { .. }) => {}
        Err(other) => return Err(Failure::new(format!("reader {e} from 1: want invalid-offset, got {other}"))),
        Ok(_) => return Err(Failure::new(format!("reader {e} from 1: want invalid-offset, it succeeded"))),
    }
    // A writer that writes nothing still makes a file, which an append then continues.
    let z = format!("{p}/zero");
    let w = d.writer(&z, false).await.ctx(format_args!("writer {z}"))?;
    ensure_eq!(w.size(), 0, "writer {z}: size");
    w.commit().await.ctx(format_args!("writer {z}: commit"))?;
    let info = d.stat(&z).await.ctx(format_args!("stat {z} after committing an empty writer"))?;
    ensure!(!info.is_dir && info.size == 0, "stat {z}: {info:?}, want a file of 0 bytes");
    write(d, &z, true, &Bytes::from_static(b"abc"), 2).await?;
    ensure_eq!(get(d, &z).await?, &b"abc"[..], "get_content {z} after an append to an empty file");
    ensure_eq!(list_sorted(d, p).await?, [e.clone(), z.clone()], "list {p}");
    delete(d, &e).await?;
    delete(d, &z).await
}

pub(super) async fn missing_paths(d: &dyn StorageDriver, p: &str) -> Outcome {
    let nope = format!("{p}/nope");
    not_found(d.get_content(&nope).await, format_args!("get_content {nope}"))?;
    not_found(d.stat(&format!("{nope}/x")).await, format_args!("stat {nope}/x"))?;
    not_found(d.list(&nope).await, format_args!("list {nope}"))?;
    not_found(d.delete(&nope).await, format_args!("delete {nope}"))?;
    not_found(d.reader(&nope, 0).await, format_args!("reader {nope}"))?;
    not_found(d.rename(&nope, &format!("{p}/other")).await, format_args!("rename {nope}"))?;
    not_found(d.stat(&format!("{p}/other")).await, format_args!("stat {p}/other after a failed rename"))
}

pub(super) async fn bad_paths(d: &dyn StorageDriver, p: &str) -> Outcome {
    let good = format!("{p}/good");
    for bad in ["/../etc/passwd", "relative", "/a/../../b", "/a//b", "/", "", "/a/", "/a b", "/a/./b", "/é"] {
        let invalid = |call: &str, r: Result<(), StorageError>| match r {
            Err(StorageError::InvalidPath(_)) => Ok(()),
            Err(e) => Err(Failure::new(format!("{call} {bad:?}: want invalid-path, got {e}"))),
            Ok(()) => Err(Failure::new(format!("{call} {bad:?}: want invalid-path, it succeeded"))),
        };
        invalid("get_content", d.get_content(bad).await.map(drop))?;
        invalid("put_content", d.put_content(bad, Bytes::from_static(b"x")).await)?;
        invalid("stat", d.stat(bad).await.map(drop))?;
        invalid("list", d.list(bad).await.map(drop))?;
        invalid("reader", d.reader(bad, 0).await.map(drop))?;
        invalid("writer", d.writer(bad, false).await.map(drop))?;
        invalid("delete", d.delete(bad).await)?;
        invalid("rename to", d.rename(&good, bad).await)?;
        invalid("rename from", d.rename(bad, &good).await)?;
    }
    not_found(d.stat(&good).await, format_args!("stat {good}"))
}

pub(super) async fn reader_offsets(d: &dyn StorageDriver, p: &str) -> Outcome {
    let f = format!("{p}/big/data");
    let data = pattern(3, 3_000_000);
    write(d, &f, false, &data, 65_537).await?;
    for offset in [0, 1, 65_536, 1_234_567, data.len() - 1, data.len()] {
        read_equals(d, &f, offset as u64, &data[offset..]).await?;
    }
    let past = data.len() as u64 + 1;
    match d.reader(&f, past).await {
        Err(StorageError::InvalidOffset { .. }) => {}
        Err(e) => return Err(Failure::new(format!("reader {f} from {past}: want invalid-offset, got {e}"))),
        Ok(_) => return Err(Failure::new(format!("reader {f} from {past} (past the end): it succeeded"))),
    }
    ensure_eq!(d.stat(&f).await.ctx("stat")?.size, data.len() as u64, "stat {f}: size");
    same_bytes(&get(d, &f).await?, &data, format_args!("get_content {f}"))?;
    delete(d, &f).await
}

/// A 20 MiB blob as an upload arrives: streamed through two writers (the second appends, as a
/// chunked upload does) in uneven writes, then read back from several offsets.
pub(super) async fn large_file(d: &dyn StorageDriver, p: &str) -> Outcome {
    const LEN: usize = 20 << 20;
    let f = format!("{p}/blobs/data");
    let data = pattern(4, LEN);
    let split = 12 << 20;
    write(d, &f, false, &data.slice(..split), 1 << 20).await?;
    write(d, &f, true, &data.slice(split..), (256 << 10) + 7).await?;
    ensure_eq!(d.stat(&f).await.ctx("stat")?.size, LEN as u64, "stat {f}: size");
    for offset in [0, 1, split - 1, split, (8 << 20) + 13, LEN - 1, LEN] {
        read_equals(d, &f, offset as u64, &data[offset..]).await?;
    }
    delete(d, &f).await
}

pub(super) async fn append_resumes(d: &dyn StorageDriver, p: &str) -> Outcome {
    let f = format!("{p}/up/data");
    let data = pattern(5, 300_000);
    let mut at = 0;
    for end in [3, 100_000, 100_001, 300_000] {
        write(d, &f, at > 0, &data.slice(at..end), 40_000).await?;
        at = end;
        read_equals(d, &f, 0, &data[..at]).await?;
    }
    delete(d, &f).await
}

pub(super) async fn cancel_discards(d: &dyn StorageDriver, p: &str) -> Outcome {
    let f = format!("{p}/c/data");
    put(d, &f, &b"abc"[..]).await?;
    let mut w = d.writer(&f, true).await.ctx(format_args!("writer {f}"))?;
    ensure_eq!(w.size(), 3, "writer {f} (append): size");
    w.write(pattern(6, 200_000)).await.ctx("write")?;
    w.cancel().await.ctx(format_args!("writer {f}: cancel"))?;
    ensure_eq!(get(d, &f).await?, &b"abc"[..], "get_content {f} after a cancelled append");
    // A cancelled new writer leaves nothing readable: no file, or an empty one.
    let g = format!("{p}/c/new");
    let mut w = d.writer(&g, false).await.ctx(format_args!("writer {g}"))?;
    w.write(pattern(7, 100_000)).await.ctx("write")?;
    w.cancel().await.ctx(format_args!("writer {g}: cancel"))?;
    match d.stat(&g).await {
        Ok(info) => {
            ensure_eq!(info.size, 0, "stat {g} after a cancelled new writer: size");
            delete(d, &g).await?;
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Failure::new(format!("stat {g}: {e}"))),
    }
    delete(d, &f).await
}

pub(super) async fn listing_and_stat(d: &dyn StorageDriver, p: &str) -> Outcome {
    let l = format!("{p}/l");
    for f in ["x/1", "x/2", "y/deep/3", "z"] {
        put(d, &format!("{l}/{f}"), &b"1"[..]).await?;
    }
    ensure_eq!(list_sorted(d, &l).await?, [format!("{l}/x"), format!("{l}/y"), format!("{l}/z")], "list {l}");
    ensure_eq!(list_sorted(d, &format!("{l}/x")).await?, [format!("{l}/x/1"), format!("{l}/x/2")], "list {l}/x");
    ensure_eq!(list_sorted(d, &format!("{l}/y")).await?, [format!("{l}/y/deep")], "list {l}/y");
    ensure!(d.stat(&format!("{l}/y")).await.ctx("stat")?.is_dir, "stat {l}/y: not a directory");
    let z = d.stat(&format!("{l}/z")).await.ctx("stat")?;
    ensure!(!z.is_dir && z.size == 1, "stat {l}/z: {z:?}, want a file of 1 byte");
    ensure_eq!(z.path, format!("{l}/z"), "stat {l}/z: path");
    for f in ["x/1", "x/2", "y/deep/3", "z"] {
        delete(d, &format!("{l}/{f}")).await?;
    }
    Ok(())
}

/// A directory of more entries than one page of a plugin's listing (1,000) or of an object
/// store's (1,000): every entry comes back once.
pub(super) async fn list_paging(d: &dyn StorageDriver, p: &str) -> Outcome {
    let dir = format!("{p}/many");
    let files: Vec<String> = (0..1_100).map(|i| format!("{dir}/e{i:05}")).chain([format!("{dir}/sub/x")]).collect();
    let puts: Vec<_> = files.iter().map(|f| put(d, f, Bytes::from_static(b"x"))).collect();
    stream::iter(puts).buffer_unordered(16).try_collect::<Vec<()>>().await?;
    let mut want: Vec<String> = files[..files.len() - 1].to_vec();
    want.push(format!("{dir}/sub"));
    want.sort();
    let got = list_sorted(d, &dir).await?;
    if got != want {
        let missing: Vec<_> = want.iter().filter(|w| got.binary_search(w).is_err()).take(5).collect();
        let mut dups = got.clone();
        dups.dedup();
        return Err(Failure::new(format!(
            "list {dir}: {} entries, want {} (missing e.g. {missing:?}; {} duplicates)",
            got.len(),
            want.len(),
            got.len() - dups.len()
        )));
    }
    // One by one: a single delete of the tree is one plugin call, which a slow disk may not
    // finish within a plugin's deadline (`delete_subtree` deletes trees).
    let deletes: Vec<_> = files.iter().map(|f| delete(d, f)).collect();
    stream::iter(deletes).buffer_unordered(16).try_collect::<Vec<()>>().await?;
    match d.list(&dir).await {
        Ok(left) => ensure!(left.iter().all(|e| *e == format!("{dir}/sub")), "list {dir} after deleting: {left:?}"),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Failure::new(format!("list {dir} after deleting: {e}"))),
    }
    Ok(())
}

pub(super) async fn rename_replaces(d: &dyn StorageDriver, p: &str) -> Outcome {
    let (src, dst) = (format!("{p}/r/src"), format!("{p}/r/dst/data"));
    put(d, &src, &b"new"[..]).await?;
    put(d, &dst, &b"old"[..]).await?;
    rename(d, &src, &dst).await?;
    ensure_eq!(get(d, &dst).await?, &b"new"[..], "get_content {dst} after the rename");
    not_found(d.stat(&src).await, format_args!("stat {src} after renaming it"))?;
    // Into directories that do not exist yet.
    let far = format!("{p}/r/other/deep/er/data");
    rename(d, &dst, &far).await?;
    ensure_eq!(get(d, &far).await?, &b"new"[..], "get_content {far} after the rename");
    not_found(d.stat(&dst).await, format_args!("stat {dst} after renaming it"))?;
    // A blob-sized file keeps its content.
    let big = pattern(8, 1_500_000);
    let (a, b) = (format!("{p}/r/up/data"), format!("{p}/r/blob/data"));
    write(d, &a, false, &big, 1 << 20).await?;
    rename(d, &a, &b).await?;
    read_equals(d, &b, 0, &big).await?;
    delete(d, &far).await?;
    delete(d, &b).await
}

/// Deleting a directory removes everything below it, and only that: not a sibling whose name
/// starts the same (distribution's `TestDeleteOnlyDeletesSubpaths`).
pub(super) async fn delete_subtree(d: &dyn StorageDriver, p: &str) -> Outcome {
    let t = format!("{p}/t");
    for f in ["a/b", "a/c", "a/deeper/d/e", "ab", "a.txt", "abc/x", "keep"] {
        put(d, &format!("{t}/{f}"), &b"1"[..]).await?;
    }
    delete(d, &format!("{t}/a")).await?;
    for gone in ["a/b", "a/deeper/d/e", "a"] {
        not_found(d.stat(&format!("{t}/{gone}")).await, format_args!("stat {t}/{gone} after deleting {t}/a"))?;
    }
    let want: Vec<String> = ["a.txt", "ab", "abc", "keep"].iter().map(|f| format!("{t}/{f}")).collect();
    ensure_eq!(list_sorted(d, &t).await?, want, "list {t} after deleting {t}/a");
    ensure_eq!(get(d, &format!("{t}/abc/x")).await?, &b"1"[..], "get_content {t}/abc/x");
    delete(d, &format!("{t}/keep")).await?;
    delete(d, &t).await?;
    not_found(d.stat(&format!("{t}/abc/x")).await, format_args!("stat {t}/abc/x after deleting {t}"))?;
    not_found(d.list(&t).await, format_args!("list {t} after deleting it"))
}

/// 32 levels of directories, created by one write and listed level by level.
pub(super) async fn deep_paths(d: &dyn StorageDriver, p: &str) -> Outcome {
    let levels: Vec<String> = (0..32).map(|i| format!("level-{i:02}")).collect();
    let deep = format!("{p}/{}", levels.join("/"));
    let f = format!("{deep}/data");
    put(d, &f, &b"deep"[..]).await?;
    ensure_eq!(get(d, &f).await?, &b"deep"[..], "get_content {f}");
    let mut dir = p.to_string();
    for level in &levels {
        let child = format!("{dir}/{level}");
        ensure_eq!(list_sorted(d, &dir).await?, [child.clone()], "list {dir}");
        ensure!(d.stat(&child).await.ctx(format_args!("stat {child}"))?.is_dir, "stat {child}: not a directory");
        dir = child;
    }
    let data = pattern(9, 300_000);
    let g = format!("{deep}/other/data");
    write(d, &g, false, &data, 100_000).await?;
    let moved = format!("{p}/{}/moved", levels[..16].join("/"));
    rename(d, &g, &moved).await?;
    read_equals(d, &moved, 0, &data).await?;
    delete(d, &moved).await?;
    delete(d, &format!("{p}/{}", levels[0])).await?;
    not_found(d.stat(&f).await, format_args!("stat {f} after deleting its top directory"))
}

pub(super) async fn sync_barrier(d: &dyn StorageDriver, p: &str) -> Outcome {
    let (link, b, c) = (format!("{p}/s/a/link"), format!("{p}/s/b"), format!("{p}/s/c/data"));
    d.put_volatile(&link, Bytes::from_static(b"x")).await.ctx(format_args!("put_volatile {link}"))?;
    put(d, &b, &b"y"[..]).await?;
    rename(d, &b, &c).await?;
    // Files, renamed files, and paths already gone (their directory is synced) are all fine.
    d.sync(&[link.clone(), c.clone(), b.clone()]).await.ctx("sync")?;
    ensure_eq!(get(d, &link).await?, &b"x"[..], "get_content {link}");
    match d.sync(&["/../x".into()]).await {
        Err(StorageError::InvalidPath(_)) => {}
        other => return Err(Failure::new(format!("sync [\"/../x\"]: want invalid-path, got {other:?}"))),
    }
    delete(d, &link).await?;
    delete(d, &c).await
}

/// Writers on several threads at once, each writing files of its own and reading the files
/// the others have committed.
pub(super) async fn concurrent_writers_and_readers(d: &dyn StorageDriver, p: &str) -> Outcome {
    const WORKERS: usize = 4;
    const FILES: usize = 5;
    let seed = |w: usize, k: usize| 100 + (w * FILES + k) as u64;
    let size = |w: usize, k: usize| 200_000 + 150_000 * ((w + k) % 4);
    let path = |w: usize, k: usize| format!("{p}/w{w}/f{k}");
    let committed: Vec<AtomicUsize> = (0..WORKERS).map(|_| AtomicUsize::new(0)).collect();
    parallel(WORKERS, |w| {
        let committed = &committed;
        async move {
            for k in 0..FILES {
                let data = pattern(seed(w, k), size(w, k));
                if k % 2 == 0 {
                    write(d, &path(w, k), false, &data, 64 << 10).await?;
                } else {
                    put(d, &path(w, k), data).await?;
                }
                committed[w].store(k + 1, Ordering::SeqCst);
                // The newest file each other worker has committed, whole.
                for (o, done) in committed.iter().enumerate().filter(|(o, _)| *o != w) {
                    if let Some(j) = done.load(Ordering::SeqCst).checked_sub(1) {
                        read_equals(d, &path(o, j), 0, &pattern(seed(o, j), size(o, j))).await?;
                    }
                }
            }
            Ok(())
        }
    })?;
    for w in 0..WORKERS {
        ensure_eq!(list_sorted(d, &format!("{p}/w{w}")).await?.len(), FILES, "list {p}/w{w}");
        for k in 0..FILES {
            same_bytes(&get(d, &path(w, k)).await?, &pattern(seed(w, k), size(w, k)), path(w, k))?;
            delete(d, &path(w, k)).await?;
        }
    }
    Ok(())
}

/// Several files growing by appends at once, while other threads read them: a reader sees a
/// prefix of what is being written, never other bytes.
pub(super) async fn concurrent_appends(d: &dyn StorageDriver, p: &str) -> Outcome {
    const WRITERS: usize = 3;
    const READERS: usize = 2;
    const ROUNDS: usize = 8;
    const CHUNK: usize = 96 << 10;
    let full: Vec<Bytes> = (0..WRITERS).map(|w| pattern(200 + w as u64, ROUNDS * CHUNK)).collect();
    let path = |w: usize| format!("{p}/a{w}/data");
    let finished = AtomicUsize::new(0);
    parallel(WRITERS + READERS, |i| {
        let (full, finished) = (&full, &finished);
        async move {
            if i < WRITERS {
                let _done = Finished(finished);
                for r in 0..ROUNDS {
                    write(d, &path(i), r > 0, &full[i].slice(r * CHUNK..(r + 1) * CHUNK), 40_000).await?;
                }
                return Ok(());
            }
            let mut reads = 0;
            while finished.load(Ordering::SeqCst) < WRITERS || reads < 3 {
                for (w, want) in full.iter().enumerate() {
                    let got = match d.get_content(&path(w)).await {
                        Ok(b) => b,
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(Failure::new(format!("get_content {}: {e}", path(w)))),
                    };
                    ensure!(got.len() <= want.len(), "get_content {}: {} bytes, more than written", path(w), got.len());
                    same_bytes(&got, &want[..got.len()], format_args!("get_content {} while appending", path(w)))?;
                }
                reads += 1;
            }
            Ok(())
        }
    })?;
    for (w, want) in full.iter().enumerate() {
        read_equals(d, &path(w), 0, want).await?;
        delete(d, &path(w)).await?;
    }
    Ok(())
}

/// Several threads renaming files of their own onto one path while others read it: a reader
/// always sees one whole version (rename replaces atomically), and once the path exists it
/// never goes missing.
pub(super) async fn rename_races(d: &dyn StorageDriver, p: &str) -> Outcome {
    const WRITERS: usize = 4;
    const READERS: usize = 2;
    const ROUNDS: usize = 4;
    const LEN: usize = 150_000;
    let versions: Vec<Bytes> = (0..WRITERS * ROUNDS).map(|v| pattern(300 + v as u64, LEN)).collect();
    let dst = format!("{p}/dst/data");
    let exists = AtomicBool::new(false);
    let finished = AtomicUsize::new(0);
    let which = |got: &[u8]| versions.iter().position(|v| v[..] == *got);
    parallel(WRITERS + READERS, |i| {
        let (versions, dst, exists, finished) = (&versions, &dst, &exists, &finished);
        async move {
            if i < WRITERS {
                let _done = Finished(finished);
                for r in 0..ROUNDS {
                    let v = i * ROUNDS + r;
                    let stage = format!("{p}/stage/w{i}-{r}");
                    put(d, &stage, versions[v].clone()).await?;
                    rename(d, &stage, dst).await?;
                    exists.store(true, Ordering::SeqCst);
                }
                return Ok(());
            }
            // Counted whether or not there was something to read: if no rename ever lands (a
            // broken driver), the readers still stop once the writers have.
            let mut reads = 0;
            while finished.load(Ordering::SeqCst) < WRITERS || reads < 3 {
                reads += 1;
                let existed = exists.load(Ordering::SeqCst);
                let got = match d.get_content(dst).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() && !existed => continue,
                    Err(e) => return Err(Failure::new(format!("get_content {dst} during renames onto it: {e}"))),
                };
                ensure!(which(&got).is_some(), "get_content {dst}: {} bytes that are no whole version", got.len());
            }
            Ok(())
        }
    })?;
    let last = get(d, &dst).await?;
    ensure!(which(&last).is_some(), "get_content {dst}: {} bytes that are no whole version", last.len());
    let stage = format!("{p}/stage");
    match d.list(&stage).await {
        Ok(left) => ensure!(left.is_empty(), "list {stage}: {left:?} still there after renaming them away"),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Failure::new(format!("list {stage}: {e}"))),
    }
    delete(d, &dst).await
}

/// Listing a directory while files are being added to it: every listing holds each file whose
/// `put_content` had returned before it started, and nothing that is not a file being written.
pub(super) async fn list_while_writing(d: &dyn StorageDriver, p: &str) -> Outcome {
    const WRITERS: usize = 2;
    const LISTERS: usize = 2;
    const FILES: usize = 150;
    let dir = format!("{p}/d");
    let name = |w: usize, k: usize| format!("{dir}/w{w}-{k:04}");
    let created: Vec<AtomicUsize> = (0..WRITERS).map(|_| AtomicUsize::new(0)).collect();
    let finished = AtomicUsize::new(0);
    parallel(WRITERS + LISTERS, |i| {
        let (dir, created, finished) = (&dir, &created, &finished);
        async move {
            if i < WRITERS {
                let _done = Finished(finished);
                for k in 0..FILES {
                    put(d, &name(i, k), pattern(k as u64, 100 + k)).await?;
                    created[i].store(k + 1, Ordering::SeqCst);
                }
                return Ok(());
            }
            // Counted whether or not the directory exists yet, as in `rename_races`.
            let mut lists = 0;
            let mut last_took = None;
            while finished.load(Ordering::SeqCst) < WRITERS || lists < 3 {
                lists += 1;
                // After the first, each list waits as long as the last one took: listers leave the
                // driver at least half its time for the writers (on an S3 emulator that scans the
                // bucket per list, back-to-back lists starved the writes for tens of seconds).
                if let Some(took) = last_took {
                    tokio::time::sleep(took).await;
                }
                let started = std::time::Instant::now();
                let before: Vec<usize> = created.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                let listed = d.list(dir).await;
                last_took = Some(started.elapsed());
                let mut got = match listed {
                    Ok(entries) => entries,
                    Err(e) if e.is_not_found() && before.iter().all(|&n| n == 0) => continue,
                    Err(e) => return Err(Failure::new(format!("list {dir} while writing: {e}"))),
                };
                let after: Vec<usize> = created.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                got.sort();
                let n = got.len();
                got.dedup();
                ensure_eq!(got.len(), n, "list {dir} while writing: entries without duplicates");
                for (w, (&b, &a)) in before.iter().zip(&after).enumerate() {
                    for k in 0..b {
                        ensure!(got.binary_search(&name(w, k)).is_ok(), "list {dir}: {} is missing", name(w, k));
                    }
                    // One file per writer may be in flight: it was not counted yet.
                    let possible: Vec<String> = (0..=a.min(FILES - 1)).map(|k| name(w, k)).collect();
                    got.retain(|e| !possible.contains(e));
                }
                ensure!(got.is_empty(), "list {dir}: {got:?} were never written");
            }
            Ok(())
        }
    })?;
    ensure_eq!(list_sorted(d, &dir).await?.len(), WRITERS * FILES, "list {dir} at the end");
    for w in 0..WRITERS {
        for k in 0..FILES {
            delete(d, &name(w, k)).await?;
        }
    }
    Ok(())
}

/// Expects `Conflict` from a conditional write.
fn conflict(r: Result<(), StorageError>, call: impl Display) -> Outcome {
    match r {
        Err(StorageError::Conflict { .. }) => Ok(()),
        Err(e) => Err(Failure::new(format!("{call}: want a conflict, got {e}"))),
        Ok(()) => Err(Failure::new(format!("{call}: want a conflict, it wrote"))),
    }
}

/// Conditional writes: create-if-absent, replace-if-unchanged, and nothing written when the
/// condition fails. A driver without them (`conditional_writes` false) must say so from both
/// calls rather than write unconditionally.
pub(super) async fn conditional_writes(d: &dyn StorageDriver, p: &str) -> Outcome {
    let f = format!("{p}/dir/link");
    if !d.conditional_writes() {
        let unsupported = |r: Result<(), StorageError>, call: &str| match r {
            Err(StorageError::Unsupported { .. }) => Ok(()),
            other => Err(Failure::new(format!("{call} {f}: no conditional writes, want unsupported, got {other:?}"))),
        };
        unsupported(d.get_versioned(&f).await.map(|_| ()), "get_versioned")?;
        unsupported(d.put_if(&f, Bytes::from_static(b"a"), Expect::Absent).await, "put_if")?;
        return not_found(d.get_content(&f).await, format!("get_content {f} after a refused put_if"));
    }
    not_found(d.get_versioned(&f).await, format!("get_versioned {f} before it exists"))?;
    d.put_if(&f, Bytes::from_static(b"one"), Expect::Absent).await.ctx(format!("put_if {f} absent"))?;
    let (got, one) = d.get_versioned(&f).await.ctx(format!("get_versioned {f}"))?;
    same_bytes(&got, b"one", format!("get_versioned {f}"))?;
    conflict(
        d.put_if(&f, Bytes::from_static(b"two"), Expect::Absent).await,
        format!("put_if {f} absent once it exists"),
    )?;
    same_bytes(&get(d, &f).await?, b"one", format!("get_content {f} after a refused create"))?;
    d.put_if(&f, Bytes::from_static(b"two"), Expect::Version(one.clone()))
        .await
        .ctx(format!("put_if {f} at the version just read"))?;
    let (got, two) = d.get_versioned(&f).await.ctx(format!("get_versioned {f}"))?;
    same_bytes(&got, b"two", format!("get_versioned {f} after a replace"))?;
    ensure!(two != one, "get_versioned {f}: the version did not change with the content ({two:?})");
    conflict(
        d.put_if(&f, Bytes::from_static(b"three"), Expect::Version(one)).await,
        format!("put_if {f} at a version replaced since"),
    )?;
    same_bytes(&get(d, &f).await?, b"two", format!("get_content {f} after a refused replace"))?;
    delete(d, &f).await?;
    conflict(
        d.put_if(&f, Bytes::from_static(b"four"), Expect::Version(two)).await,
        format!("put_if {f} at a version of a deleted file"),
    )?;
    not_found(d.get_content(&f).await, format!("get_content {f} after a refused replace of nothing"))
}

/// Workers each add to a counter by read, increment, conditional write, and read again on a
/// conflict: the count at the end is every increment (a lost update would be one short).
pub(super) async fn compare_and_swap_races(d: &dyn StorageDriver, p: &str) -> Outcome {
    const WORKERS: usize = 4;
    const EACH: usize = 8;
    /// Conflicts one increment may meet before the case gives up on the driver.
    const MAX_TRIES: usize = 200;
    if !d.conditional_writes() {
        return Ok(());
    }
    let f = format!("{p}/counter");
    put(d, &f, "0").await?;
    parallel(WORKERS, |_| {
        let f = &f;
        async move {
            for _ in 0..EACH {
                let mut tries = 0;
                loop {
                    let (got, v) = d.get_versioned(f).await.ctx(format!("get_versioned {f}"))?;
                    let n: usize = std::str::from_utf8(&got)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| Failure::new(format!("get_versioned {f}: {got:?} is no count")))?;
                    match d.put_if(f, Bytes::from((n + 1).to_string()), Expect::Version(v)).await {
                        Ok(()) => break,
                        Err(StorageError::Conflict { .. }) if tries < MAX_TRIES => tries += 1,
                        Err(e) => return Err(Failure::new(format!("put_if {f} after {tries} conflicts: {e}"))),
                    }
                }
            }
            Ok(())
        }
    })?;
    let count = get(d, &f).await?;
    let want = (WORKERS * EACH).to_string();
    ensure!(
        count == want.as_bytes(),
        "get_content {f}: counted {} of {want} increments: conditional writes lost updates",
        String::from_utf8_lossy(&count)
    );
    delete(d, &f).await
}
