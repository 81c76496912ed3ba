"""Garbage collection (`berth garbage-collect`, `POST /admin/gc`, `gc.schedule`): exactly the
unreachable content goes, with and without --delete-untagged; kept images still pull with skopeo
with their digests unchanged; GC beside pushes and mounts on the filesystem and on S3 (moto) loses
nothing a successful push references; a SIGKILL during the sweep then another run completes; the
lock refuses a second run; a dry run deletes nothing; distribution's own garbage-collect frees
the same on a directory distribution wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from harness import BERTH_BIN, free_port, start_berth, start_distribution
from ocihelpers import (DOCKER_LIST, DOCKER_MANIFEST, EMPTY_JSON, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, Client,
                        build_index, build_manifest, descriptor, image_config, push_blob, push_manifest, sha256,
                        to_bytes)

NOW = {"gc": {"graceperiod": 0}}
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


def gc_cli(config_path: Path, *flags: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BERTH_BIN), "garbage-collect", "--json", *flags, str(config_path)],
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"garbage-collect {flags}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def report_of(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def blob_digests(root: Path) -> set[str]:
    base = root / "docker/registry/v2/blobs/sha256"
    if not base.exists():
        return set()
    return {"sha256:" + d.name for p in base.iterdir() for d in p.iterdir() if (d / "data").exists()}


def revisions(root: Path) -> set[str]:
    out = set()
    for link in (root / "docker/registry/v2/repositories").rglob("_manifests/revisions/sha256/*/link"):
        repo = str(link.parent.parent.parent.parent.parent.relative_to(root / "docker/registry/v2/repositories"))
        out.add(f"{repo}@sha256:{link.parent.name}")
    return out


def push_image(url: str, repo: str, ref: str | None, layers: list[bytes], media_type: str = OCI_MANIFEST,
               s=None, config: bytes | None = None, **extra) -> tuple[str, bytes, set[str]]:
    """Pushes config, layers and the manifest; returns (digest, body, blob digests it holds)."""
    config = image_config() if config is None else config
    for b in [config, *layers]:
        push_blob(url, repo, b, s)
    kw = {"config_type": OCI_EMPTY} if config == EMPTY_JSON else {}
    body = to_bytes(build_manifest(config, layers, media_type=media_type, **kw, **extra))
    d = sha256(body)
    r = push_manifest(url, repo, ref or d, body, media_type, s)
    assert r.status_code == 201, r.text
    return d, body, {d, sha256(config), *(sha256(layer) for layer in layers)}


def push_multi(url: str, repo: str, tag: str, list_type: str, child_type: str) -> tuple[str, set[str]]:
    """A two-platform index (or Docker list) over children pushed by digest."""
    children, blobs = [], set()
    for _ in range(2):
        d, body, bl = push_image(url, repo, None, [os.urandom(64)], media_type=child_type)
        children.append((body, child_type))
        blobs |= bl
    plats = [{"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64"}]
    body = to_bytes(build_index(children, media_type=list_type, platforms=plats))
    r = push_manifest(url, repo, tag, body, list_type)
    assert r.status_code == 201, r.text
    return sha256(body), blobs | {sha256(body)}


def skopeo(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"skopeo {args}: {proc.stderr}"
    return proc


def assert_pulls(srv, ref: str, digest: str, dest: Path, multi: bool = False) -> None:
    """skopeo copies the image (every platform with --all) and sees the same digest."""
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{srv.host}/{ref}").stdout.encode()
    assert sha256(raw) == digest, f"{ref}: digest changed"
    extra = ["--all"] if multi else []
    skopeo("copy", *extra, "--preserve-digests", "--src-tls-verify=false", f"docker://{srv.host}/{ref}",
           f"dir:{dest}")


def with_debug(tmp_path: Path, config: dict | None = None, **kw):
    dport = free_port()
    cfg = {"http": {"debug": {"addr": f"127.0.0.1:{dport}"}}, **NOW}
    for k, v in (config or {}).items():
        cfg[k] = {**cfg.get(k, {}), **v}
    srv = start_berth(tmp_path, config=cfg, **kw)
    srv.debug_url = f"http://127.0.0.1:{dport}"
    return srv


# ---------------------------------------------------------------------------------------------


def test_exactly_the_unreachable_content_goes_and_kept_images_pull(tmp_path):
    srv = with_debug(tmp_path)
    url, root = srv.url, srv.root
    try:
        shared = os.urandom(100)
        a, a_body, a_blobs = push_image(url, "app/a", "v1", [shared, os.urandom(80)])
        b, _, b_blobs = push_image(url, "app/b", "v1", [shared, os.urandom(80)])
        ua, ua_body, ua_blobs = push_image(url, "app/a", None, [os.urandom(70)])
        ub, _, ub_blobs = push_image(url, "app/b", None, [shared])
        m, m_blobs = push_multi(url, "app/m", "multi", OCI_INDEX, OCI_MANIFEST)
        dl, d_blobs = push_multi(url, "app/d", "list", DOCKER_LIST, DOCKER_MANIFEST)
        # A referrer of a tagged image, and one of an untagged image.
        r1, _, r1_blobs = push_image(url, "app/a", None, [b"sig one"], config=EMPTY_JSON,
                                     subject=descriptor(OCI_MANIFEST, a_body), artifact_type="application/x.sig")
        r2, _, r2_blobs = push_image(url, "app/a", None, [b"sig two"], config=EMPTY_JSON,
                                     subject=descriptor(OCI_MANIFEST, ua_body), artifact_type="application/x.sig")
        orphan = push_blob(url, "app/a", os.urandom(90))
        c, _, c_blobs = push_image(url, "app/c", "old", [os.urandom(60)])
        assert requests.delete(f"{url}/v2/app/c/manifests/old", timeout=10).status_code == 202
        before = blob_digests(root)
        assert orphan in before and a_blobs | m_blobs | d_blobs <= before

        # A dry run reports and deletes nothing.
        dry = report_of(gc_cli(srv.config_path, "--dry-run", "--delete-untagged"))
        assert dry["dry_run"] and blob_digests(root) == before
        # Without --delete-untagged only the blob no manifest references goes (distribution's rule).
        rep = report_of(gc_cli(srv.config_path))
        assert blob_digests(root) == before - {orphan}, rep
        assert (rep["blobs_swept"], rep["manifests_swept"], rep["errors"]) == (1, 0, 0), rep

        # With it: the untagged manifests, the referrer whose subject is gone, and what only they hold.
        gone = (ua_blobs | ub_blobs | r2_blobs | c_blobs) - {sha256(shared), sha256(EMPTY_JSON)}
        assert dry["blobs_swept"] == len(gone) + 1 and dry["manifests_swept"] == 4, dry
        rep = report_of(gc_cli(srv.config_path, "-m"))
        assert blob_digests(root) == before - {orphan} - gone, rep
        assert (rep["blobs_swept"], rep["manifests_swept"], rep["errors"]) == (len(gone), 4, 0), rep
        assert rep["bytes_freed"] > 0 and rep["referrers_swept"] >= 1
        assert revisions(root) >= {f"app/a@{a}", f"app/a@{r1}", f"app/m@{m}", f"app/d@{dl}"}
        for repo, d in (("app/a", ua), ("app/b", ub), ("app/a", r2), ("app/c", c)):
            assert f"{repo}@{d}" not in revisions(root)
            assert requests.get(f"{url}/v2/{repo}/manifests/{d}", headers={"Accept": ACCEPT},
                                timeout=10).status_code == 404
        refs = requests.get(f"{url}/v2/app/a/referrers/{a}", timeout=10).json()["manifests"]
        assert [x["digest"] for x in refs] == [r1]
        assert requests.get(f"{url}/v2/app/a/referrers/{ua}", timeout=10).json()["manifests"] == []

        # Everything kept pulls, digests unchanged.
        assert_pulls(srv, "app/a:v1", a, tmp_path / "pa")
        assert_pulls(srv, "app/b:v1", b, tmp_path / "pb")
        assert_pulls(srv, "app/m:multi", m, tmp_path / "pm", multi=True)
        assert_pulls(srv, "app/d:list", dl, tmp_path / "pd", multi=True)
        assert_pulls(srv, f"app/a@{r1}", r1, tmp_path / "pr")
        # A second run finds nothing more.
        again = report_of(gc_cli(srv.config_path, "-m"))
        assert (again["blobs_swept"], again["manifests_swept"]) == (0, 0), again
    finally:
        srv.stop()


def test_admin_endpoint_runs_gc_and_reports_in_vars_and_metrics(tmp_path):
    srv = with_debug(tmp_path)
    try:
        d, _, blobs = push_image(srv.url, "r", None, [os.urandom(50)])
        dbg = srv.debug_url
        assert requests.get(f"{dbg}/admin/gc", timeout=10).status_code == 405
        assert requests.post(f"{dbg}/admin/gc?now=1", timeout=10).status_code == 400
        assert requests.post(f"{srv.url}/admin/gc", timeout=10).status_code == 404
        dry = requests.post(f"{dbg}/admin/gc?dry-run=true&delete-untagged=true", timeout=60)
        assert dry.status_code == 200, dry.text
        assert dry.json()["blobs_swept"] == 3 and blob_digests(srv.root) == blobs
        r = requests.post(f"{dbg}/admin/gc?delete-untagged=true", timeout=60)
        assert r.status_code == 200, r.text
        rep = r.json()
        assert (rep["blobs_swept"], rep["manifests_swept"], rep["dry_run"]) == (3, 1, False)
        assert blob_digests(srv.root) == set()
        last = requests.get(f"{dbg}/debug/vars", timeout=10).json()["gc"]["last_run"]
        assert last["run"] == rep["run"] and last["bytes_freed"] == rep["bytes_freed"] > 0
        metrics = requests.get(f"{dbg}/metrics", timeout=10).text
        assert "berth_gc_blobs_swept_total 3" in metrics, metrics
        assert f"berth_gc_freed_bytes_total {rep['bytes_freed']}" in metrics
        assert "garbage collection done" in srv.log()
    finally:
        srv.stop()


def test_a_second_run_is_refused_while_one_holds_the_lock(tmp_path):
    srv = with_debug(tmp_path)
    try:
        push_image(srv.url, "r", "t", [os.urandom(10)])
        first = subprocess.Popen([str(BERTH_BIN), "garbage-collect", "--json", str(srv.config_path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lock = srv.root / "docker/registry/v2/_berth/gc/lock"
        end = time.monotonic() + 10
        while not lock.exists() and time.monotonic() < end:
            time.sleep(0.01)
        assert lock.exists()
        second = gc_cli(srv.config_path, check=False)
        assert second.returncode == 1 and "another garbage collection is running" in second.stderr, second.stderr
        r = requests.post(f"{srv.debug_url}/admin/gc", timeout=30)
        assert r.status_code == 409 and "another garbage collection" in r.json()["error"], r.text
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        assert not lock.exists()
        # Free again.
        gc_cli(srv.config_path)
    finally:
        srv.stop()


def write_layout_blob(root: Path, repo: str, data: bytes) -> str:
    """A blob and a layer link written straight into the layout (as an abandoned push leaves)."""
    d = sha256(data)
    hexd = d.split(":")[1]
    base = root / "docker/registry/v2"
    p = base / "blobs/sha256" / hexd[:2] / hexd
    p.mkdir(parents=True, exist_ok=True)
    (p / "data").write_bytes(data)
    link = base / "repositories" / repo / "_layers/sha256" / hexd
    link.mkdir(parents=True, exist_ok=True)
    (link / "link").write_text(d)
    return d


def test_sigkill_during_the_sweep_then_gc_again_completes_and_keeps_what_is_referenced(tmp_path):
    srv = start_berth(tmp_path, config=NOW)
    try:
        kept = [push_image(srv.url, "keep", f"t{i}", [os.urandom(40)]) for i in range(3)]
        m, _ = push_multi(srv.url, "keep", "multi", OCI_INDEX, OCI_MANIFEST)
        garbage = {write_layout_blob(srv.root, f"junk{i % 20}", os.urandom(32)) for i in range(3000)}
        old = time.time() - 60
        for d in garbage:
            os.utime(srv.root / "docker/registry/v2/blobs/sha256" / d[7:9] / d[7:] / "data", (old, old))
        proc = subprocess.Popen([str(BERTH_BIN), "garbage-collect", "-m", str(srv.config_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sample = [srv.root / "docker/registry/v2/blobs/sha256" / d[7:9] / d[7:] / "data" for d in list(garbage)[:300]]
        end = time.monotonic() + 30
        # Kill as soon as the sweep has deleted its first candidates.
        while time.monotonic() < end and proc.poll() is None:
            if not all(p.exists() for p in sample):
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = len(blob_digests(srv.root) & garbage)
        assert 0 < left < len(garbage), f"killed with {left} of {len(garbage)} candidates left"
        # The dead run's lock does not hold: its process is gone.
        rep = report_of(gc_cli(srv.config_path, "-m"))
        assert rep["blobs_swept"] == left and rep["errors"] == 0, rep
        assert not blob_digests(srv.root) & garbage
        for i, (d, _, blobs) in enumerate(kept):
            assert blobs <= blob_digests(srv.root)
            assert_pulls(srv, f"keep:t{i}", d, tmp_path / f"p{i}")
        assert_pulls(srv, "keep:multi", m, tmp_path / "pm", multi=True)
    finally:
        srv.stop()


# --- GC while clients push and mount -----------------------------------------------------------


def pull_completely(url: str, repo: str, tag: str, s: Client) -> None:
    r = s.get(f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    assert r.status_code == 200, f"{repo}:{tag}: {r.status_code} {r.text}"
    man = r.json()
    for desc in [man["config"], *man["layers"]]:
        b = s.get(f"{url}/v2/{repo}/blobs/{desc['digest']}")
        assert b.status_code == 200, f"{repo}:{tag} blob {desc['digest']}: {b.status_code}"
        assert sha256(b.content) == desc["digest"]


def race(tmp_path: Path, storage: dict | None, clients: int = 4, images: int = 8, gc_runs: int = 4) -> None:
    srv = with_debug(tmp_path, config={"storage": storage} if storage else None)
    url = srv.url
    try:
        # Candidates the clients will need again: base layers whose only image is deleted.
        bases = [os.urandom(64) for _ in range(12)]
        d, _, _ = push_image(url, "base", "gone", bases)
        assert requests.delete(f"{url}/v2/base/manifests/{d}", timeout=10).status_code == 202
        for i in range(5):
            push_image(url, "junk", None, [os.urandom(48)])
        done: list[tuple[str, str]] = []
        failed: list[str] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            with Client(timeout=60) as s:
                for i in range(images):
                    repo, tag = f"c{n}/img", f"t{i}"
                    try:
                        layers = [bases[(n + i) % len(bases)], bases[(n * 3 + i) % len(bases)], os.urandom(40)]
                        # Mount one base layer from `base` (its link is still there), upload the rest.
                        mount = sha256(layers[0])
                        r = s.post(f"{url}/v2/{repo}/blobs/uploads/", params={"mount": mount, "from": "base"})
                        if r.status_code != 201:
                            push_blob(url, repo, layers[0], s)
                        config = image_config()
                        for b in [config, *layers[1:]]:
                            push_blob(url, repo, b, s)
                        body = to_bytes(build_manifest(config, layers))
                        r = push_manifest(url, repo, tag, body, OCI_MANIFEST, s)
                        if r.status_code == 201:
                            with lock:
                                done.append((repo, tag))
                        else:
                            with lock:
                                failed.append(f"{repo}:{tag} {r.status_code} {r.text[:200]}")
                    except AssertionError as e:
                        with lock:
                            failed.append(f"{repo}:{tag} {e}")

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for t in threads:
            t.start()
        # GC in the server and from another process, while the clients push.
        runs = []
        for i in range(gc_runs):
            if i % 2 == 0:
                r = requests.post(f"{srv.debug_url}/admin/gc?delete-untagged=true", timeout=120)
                assert r.status_code in (200, 409), r.text
                runs.append(r.json())
            else:
                p = gc_cli(srv.config_path, "-m", check=False)
                assert p.returncode == 0 or "another garbage collection" in p.stderr, p.stderr
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads)
        rep = report_of(gc_cli(srv.config_path, "-m"))
        assert rep["errors"] == 0
        assert any(r.get("blobs_swept", 0) > 0 for r in runs) or rep["blobs_swept"] > 0
        # Most pushes succeed; a push racing the sweep may fail, and then cleanly (503, retry).
        assert len(done) >= clients * images // 2, failed
        for f in failed:
            assert " 503 " in f and "UNAVAILABLE" in f, f
        with Client(timeout=60) as s:
            for repo, tag in done:
                pull_completely(url, repo, tag, s)
    finally:
        srv.stop()


def test_gc_beside_pushes_and_mounts_loses_nothing_on_the_filesystem(tmp_path):
    race(tmp_path, None)


# --- distribution's own garbage-collect on the same directory ----------------------------------


def distribution_gc(root: Path, workdir: Path, *flags: str) -> None:
    cfg = {"version": 0.1, "storage": {"filesystem": {"rootdirectory": str(root)}}}
    path = workdir / "dist-gc.yml"
    path.write_text(yaml.safe_dump(cfg))
    p = subprocess.run(["docker-registry", "garbage-collect", *flags, str(path)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr


def berth_gc(root: Path, workdir: Path, *flags: str) -> dict:
    cfg = {"storage": {"filesystem": {"rootdirectory": str(root)}}, **NOW}
    path = workdir / "berth-gc.yml"
    path.write_text(yaml.safe_dump(cfg))
    return report_of(gc_cli(path, *flags))


@pytest.mark.parametrize("delete_untagged", [False, True], ids=["plain", "delete-untagged"])
def test_frees_what_distribution_frees_on_a_directory_distribution_wrote(tmp_path, delete_untagged):
    root = tmp_path / "dist"
    dist = start_distribution(tmp_path / "d", root)
    try:
        url = dist.url
        shared = os.urandom(100)
        push_image(url, "lib/a", "v1", [shared, os.urandom(30)], media_type=DOCKER_MANIFEST)
        push_image(url, "lib/b", "v1", [shared], media_type=DOCKER_MANIFEST)
        push_image(url, "lib/a", "v2", [os.urandom(30)], media_type=DOCKER_MANIFEST)
        # Moved tag: the old image is untagged now.
        push_image(url, "lib/b", "v1", [os.urandom(30)], media_type=DOCKER_MANIFEST)
        push_image(url, "lib/c", None, [shared, os.urandom(30)])
        gone, _, _ = push_image(url, "lib/c", "x", [os.urandom(30)])
        assert requests.delete(f"{url}/v2/lib/c/manifests/{gone}", timeout=10).status_code == 202
        push_blob(url, "lib/a", os.urandom(20))
        if not delete_untagged:
            # distribution is right about indexes without -m.
            push_multi(url, "lib/m", "multi", OCI_INDEX, OCI_MANIFEST)
    finally:
        dist.stop()
    flags = ["-m"] if delete_untagged else []
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    shutil.copytree(root, theirs, symlinks=True)
    shutil.copytree(root, ours, symlinks=True)
    distribution_gc(theirs, tmp_path, *(["--delete-untagged"] if delete_untagged else []))
    rep = berth_gc(ours, tmp_path, *flags)
    assert blob_digests(ours) == blob_digests(theirs), rep
    assert revisions(ours) == revisions(theirs), rep
    assert blob_digests(ours) < blob_digests(root), "nothing was freed"
    assert rep["blobs_swept"] == len(blob_digests(root) - blob_digests(ours))
