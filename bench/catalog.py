"""Catalog figures, Berth vs distribution 2.8.2 on the same directory (read-only), same run: first
page (n=100) at 1,000 / 10,000 / 100,000 repositories, every page with n=1000, peak RSS while
paging vs idle, and the first page on S3 (moto) at 10,000. Run by bench/catalog.sh."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness import object_store_config, start_berth, start_distribution  # noqa: E402

WORK = Path(os.environ["WORK"])
S3_WARM = int(os.environ.get("CATALOG_S3_WARM", "3"))
SIZES = [int(x) for x in os.environ.get("CATALOG_SIZES", "1000 10000 100000").split()]
WARM = int(os.environ.get("CATALOG_WARM_RUNS", "20"))
DIST_BUDGET = float(os.environ.get("CATALOG_DIST_BUDGET_S", "60"))
REPOS = "docker/registry/v2/repositories"
rows: list[tuple[str, str, str, str]] = []


def write_layout(root: Path, count: int) -> None:
    base = root / REPOS
    if base.is_dir() and sum(1 for _ in os.scandir(base)) == count:
        return  # kept from an earlier run (BENCH_DIR reuse)
    for i in range(count):
        r = base / f"repo-{i:06d}"
        (r / "_manifests" / "tags" / "latest" / "current").mkdir(parents=True)
        (r / "_layers").mkdir()


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def timed_get(s: requests.Session, url: str) -> tuple[float, requests.Response]:
    t = time.perf_counter()
    r = s.get(url, timeout=600)
    dt = time.perf_counter() - t
    assert r.status_code == 200, r.text[:300]
    return dt, r


def first_page(url: str, warm: int = WARM) -> tuple[float, float]:
    """The very first request, and the median of `warm` more, in ms."""
    s = requests.Session()
    cold, _ = timed_get(s, f"{url}/v2/_catalog?n=100")
    warm = statistics.median(timed_get(s, f"{url}/v2/_catalog?n=100")[0] for _ in range(warm))
    return cold * 1e3, warm * 1e3


def all_pages(url: str, budget: float | None = None) -> tuple[float, int, int, bool]:
    """Seconds to follow every page with n=1000, pages, names, and whether it finished."""
    s = requests.Session()
    nxt, pages, count, t0 = f"{url}/v2/_catalog?n=1000", 0, 0, time.perf_counter()
    while nxt:
        _, r = timed_get(s, nxt)
        pages += 1
        count += len(r.json()["repositories"])
        link = r.headers.get("Link")
        nxt = None
        if link:
            target = link.split(";")[0].strip("<> ")
            nxt = target if target.startswith("http") else url + target
        if budget and time.perf_counter() - t0 > budget and nxt:
            return time.perf_counter() - t0, pages, count, False
    return time.perf_counter() - t0, pages, count, True


def fs_run(count: int) -> None:
    d = WORK / f"fs-{count}"
    data = d / "data"
    t = time.perf_counter()
    write_layout(data, count)
    print(f"layout of {count} written in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    time.sleep(2.5)  # older than Berth's racy window, as any registry that was not just written
    ro = {"storage": {"maintenance": {"readonly": {"enabled": True}}}}
    b = start_berth(d / "b", root=data, config={"storage": {"filesystem": {"rootdirectory": str(data)},
                                                            "maintenance": {"readonly": {"enabled": True}}},
                                                "log": {"level": "warn"}})
    dist = start_distribution(d / "d", data, config=ro)
    try:
        idle = rss_kib(b.proc.pid, "VmRSS")
        bc, bw = first_page(b.url)
        dc, dw = first_page(dist.url)
        rows.append((f"first page n=100, {count:,} repos (first request)", f"{dc:.1f} ms", f"{bc:.1f} ms", ""))
        rows.append((f"first page n=100, {count:,} repos (median of {WARM})", f"{dw:.1f} ms", f"{bw:.1f} ms", ""))
        if count == max(SIZES):
            bt, bp, bn, _ = all_pages(b.url)
            peak = rss_kib(b.proc.pid, "VmHWM")
            assert bn == count, (bn, count)
            dt, dp, dn, done = all_pages(dist.url, DIST_BUDGET)
            dtxt = f"{dt:.2f} s" if done else f"> {dt:.0f} s (stopped after {dp} of {bp} pages)"
            rows.append((f"all pages n=1000, {count:,} repos ({bp} pages)", dtxt, f"{bt:.2f} s", ""))
            half = all_pages_first(b.url, bp // 2)
            rows.append((f"  first half of the pages / all (linear: ~0.5)", "", f"{half / bt:.2f}", ""))
            rows.append((f"Berth RSS idle / peak while paging {count:,}", "", f"{idle / 1024:.1f} / {peak / 1024:.1f} MiB",
                         f"{peak / idle:.2f}x"))
    finally:
        b.stop()
        dist.stop()


def all_pages_first(url: str, pages: int) -> float:
    s = requests.Session()
    nxt, t0 = f"{url}/v2/_catalog?n=1000", time.perf_counter()
    for _ in range(pages):
        _, r = timed_get(s, nxt)
        nxt = url + r.headers["Link"].split(";")[0].strip("<> ").removeprefix(url)
    return time.perf_counter() - t0


def s3_run(count: int) -> None:
    import objectstores

    d = WORK / "s3"
    storage = object_store_config("s3", d / "data")
    prefix = storage["s3"]["rootdirectory"].strip("/")
    s3 = objectstores.s3_client()
    keys = [f"{prefix}/{REPOS}/repo-{i:06d}/_manifests/tags/latest/current/link" for i in range(count)]
    keys += [f"{prefix}/{REPOS}/repo-{i:06d}/_layers/sha256/{'0' * 64}/link" for i in range(count)]
    t = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=objectstores.S3_BUCKET, Key=k, Body=b"x"), keys))
    print(f"s3 layout of {count} written in {time.perf_counter() - t:.1f}s", file=sys.stderr)
    b = start_berth(d / "b", config={"storage": storage, "log": {"level": "warn"}})
    try:
        # moto answers each listing by scanning its whole bucket, so a few requests are enough.
        bc, bw = first_page(b.url, S3_WARM)
        print(f"berth on moto: first page {bc:.0f} ms, median {bw:.0f} ms", file=sys.stderr)
    finally:
        b.stop()
    os.environ["BERTH_TEST_STORAGE"] = "s3"
    import harness
    harness.TEST_STORAGE = "s3"
    dist = start_distribution(d / "d", d / "data")
    try:
        dc, dw = first_page(dist.url, S3_WARM)
    finally:
        dist.stop()
    rows.append((f"S3 (moto) first page n=100, {count:,} repos (first / median)", f"{dc:.0f} / {dw:.0f} ms",
                 f"{bc:.0f} / {bw:.0f} ms", ""))


def main() -> None:
    for count in SIZES:
        fs_run(count)
    if os.environ.get("CATALOG_S3", "1") == "1":
        s3_run(int(os.environ.get("CATALOG_S3_REPOS", "10000")))
    out = ["| figure | distribution 2.8.2 | Berth | note |", "| --- | --- | --- | --- |"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    print("\n".join(out))


if __name__ == "__main__":
    main()
