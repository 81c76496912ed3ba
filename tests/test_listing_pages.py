"""Catalog and tag pages over a layout written directly (a few thousand repositories, nested and
prefix-sharing names): in the spec's order, no repeats, no gaps, every `Link` followed to the end
giving exactly the set on disk; the same on S3 (moto) and in distribution 2.8.2's order."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import harness
from harness import object_store_config, start_distribution

LINK_RE = re.compile(r'^<([^>]+)>;\s*rel="?next"?$')
REPOS = "docker/registry/v2/repositories"


@pytest.fixture(autouse=True)
def stop_servers(monkeypatch):
    """Every server a test starts is stopped when it ends."""
    started = []

    def start(*args, **kwargs):
        started.append(harness.start_berth(*args, **kwargs))
        return started[-1]

    monkeypatch.setitem(globals(), "start_berth", start)
    yield
    for s in started:
        s.stop()


def names(count: int) -> list[str]:
    """Nested names, names inside another repository's namespace, and names sharing a prefix
    up to `-`, `.` or a digit, which sort differently by component than as plain strings."""
    out = ["a", "a/b", "a/b/c", "a-b", "a.b", "a0", "b/c", "b-c/d", "p"] + [f"p-{i}" for i in range(60)]
    i = 0
    while len(out) < count:
        base = f"team{i % 17}/svc{i:04d}"
        out += [base, f"{base}-api", f"{base}/worker", f"{base}.v2"][: count - len(out)]
        i += 1
    return out


def spec_order(repos) -> list[str]:
    return sorted(repos, key=lambda n: n.split("/"))


def write_fs(root: Path, repos, tags: dict[str, list[str]] | None = None) -> None:
    base = root / REPOS
    for r in repos:
        (base / r / "_manifests" / "tags").mkdir(parents=True, exist_ok=True)
        (base / r / "_layers").mkdir(exist_ok=True)
    (base / "b" / "_uploads").mkdir(parents=True, exist_ok=True)  # a directory, not a repository
    for r, ts in (tags or {}).items():
        for t in ts:
            d = base / r / "_manifests" / "tags" / t / "current"
            d.mkdir(parents=True)
            (d / "link").write_text("sha256:" + "0" * 64)


def follow(url: str, key: str, max_pages: int = 10_000) -> tuple[list[str], list[int]]:
    """Every page from `url` on by its `Link`: the names, and each page's size."""
    got, sizes = [], []
    base = url.split("/v2/")[0]
    while url and len(sizes) < max_pages:
        r = requests.get(url, timeout=120)  # moto on a busy 2-core CI machine lists slowly
        assert r.status_code == 200, r.text
        page = r.json().get(key) or []
        got += page
        sizes.append(len(page))
        link = r.headers.get("Link")
        if not link:
            break
        m = LINK_RE.match(link.strip())
        assert m, link
        url = m.group(1) if m.group(1).startswith("http") else base + m.group(1)
    return got, sizes


def test_catalog_pages_follow_the_layout_in_order(tmp_path):
    repos = names(3000)
    write_fs(tmp_path / "data", repos)
    b = start_berth(tmp_path, config={"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}})
    got, sizes = follow(f"{b.url}/v2/_catalog?n=97", "repositories")
    assert got == spec_order(repos)
    assert all(s <= 97 for s in sizes) and len(sizes) >= 3000 // 97


def test_catalog_resumes_after_names_not_in_the_registry(tmp_path):
    write_fs(tmp_path / "data", names(200))
    b = start_berth(tmp_path, config={"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}})
    page = lambda last: requests.get(f"{b.url}/v2/_catalog", params={"n": 3, "last": last}).json()["repositories"]
    assert page("a/a") == ["a/b", "a/b/c", "a-b"]
    assert page("p") == ["p-0", "p-1", "p-10"]
    assert page("a/b/c/d") == ["a-b", "a.b", "a0"]


def test_catalog_without_n_is_capped_and_links_on(tmp_path):
    repos = names(1200)
    write_fs(tmp_path / "data", repos)
    b = start_berth(tmp_path, config={"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                                      "catalog": {"maxentries": 500}})
    r = requests.get(f"{b.url}/v2/_catalog")
    assert len(r.json()["repositories"]) == 500
    assert "n=500" in r.headers["Link"]
    r = requests.get(f"{b.url}/v2/_catalog", params={"n": 5000})
    assert r.json()["repositories"] == spec_order(repos)[:500], "n over the cap is clamped"
    got, sizes = follow(f"{b.url}/v2/_catalog", "repositories")
    assert got == spec_order(repos) and sizes == [500, 500, 200]


def test_tag_pages_of_a_large_repository(tmp_path):
    tags = [f"v{i}" for i in range(2500)] + ["latest", "1.0", "1.0-rc1", "A_b"]
    write_fs(tmp_path / "data", ["big/app"], {"big/app": tags})
    b = start_berth(tmp_path, config={"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}}})
    got, sizes = follow(f"{b.url}/v2/big/app/tags/list?n=300", "tags")
    assert got == sorted(tags) and max(sizes) == 300
    assert requests.get(f"{b.url}/v2/big/app/tags/list").json()["tags"] == sorted(tags), "all without n"


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry not installed")
def test_catalog_order_is_distributions(tmp_path):
    repos = names(600)
    write_fs(tmp_path / "data", repos)
    b = start_berth(tmp_path / "b", config={"storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")},
                                                        "maintenance": {"readonly": {"enabled": True}}}})
    d = start_distribution(tmp_path / "d", tmp_path / "data",
                           config={"storage": {"maintenance": {"readonly": {"enabled": True}}}})
    try:
        for n in (1000, 7):
            theirs, _ = follow(f"{d.url}/v2/_catalog?n={n}", "repositories")
            ours, _ = follow(f"{b.url}/v2/_catalog?n={n}", "repositories")
            assert ours == theirs, f"n={n}"
    finally:
        d.stop()


def write_s3(bucket: str, prefix: str, repos, tags: dict[str, list[str]] | None = None) -> None:
    import objectstores

    s3 = objectstores.s3_client()
    keys = [f"{prefix}/{REPOS}/{r}/_manifests/tags/latest/current/link" for r in repos]
    keys.append(f"{prefix}/{REPOS}/b/_uploads/u1/data")
    for r, ts in (tags or {}).items():
        keys += [f"{prefix}/{REPOS}/{r}/_manifests/tags/{t}/current/link" for t in ts]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=b"sha256:0"), keys))


def s3_berth(tmp_path):
    """Storage in a bucket of its own (listings in moto cost as much as the bucket holds)."""
    storage = object_store_config("s3", tmp_path / "data")
    return storage["s3"]["bucket"], storage["s3"]["rootdirectory"].strip("/"), storage


def test_catalog_pages_on_s3(tmp_path):
    pytest.importorskip("boto3")
    repos = names(700)
    bucket, prefix, storage = s3_berth(tmp_path)
    # Two repositories with more keys than one flat listing returns, among the small ones: the
    # catalog reads past small repositories in one request and probes a large one on its own.
    write_s3(bucket, prefix, repos, {repos[350]: [f"t{i}" for i in range(1001)], repos[351]: [f"t{i}" for i in range(1001)]})
    b = start_berth(tmp_path, config={"storage": storage})
    # One page holding everything, then eight pages (each a listing in moto, which costs as
    # much as the bucket holds: a few pages are the point, not thirty).
    for n in (1000, 97):
        got, sizes = follow(f"{b.url}/v2/_catalog?n={n}", "repositories")
        assert got == spec_order(repos), f"n={n}"
        assert all(s <= n for s in sizes)


def test_tag_pages_on_s3(tmp_path):
    pytest.importorskip("boto3")
    tags = [f"v{i}" for i in range(400)] + ["v1-rc", "v1.1", "v10-x"]
    bucket, prefix, storage = s3_berth(tmp_path)
    write_s3(bucket, prefix, ["big/app"], {"big/app": tags})
    b = start_berth(tmp_path, config={"storage": storage})
    got, _ = follow(f"{b.url}/v2/big/app/tags/list?n=37", "tags")
    assert got == sorted(tags + ["latest"])
