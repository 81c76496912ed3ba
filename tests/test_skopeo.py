"""Black-box tests: push and pull real images to and from `berth` with skopeo.

Images are generated here (tests/ocilayout.py) as OCI image layouts (and skopeo `dir:` images for the
Docker schema2 media types); everything is copied with `--preserve-digests`, pulled back into a fresh
directory and compared digest by digest and byte by byte, and also fetched over plain HTTP.
skopeo is required: if it is missing the tests fail, they never skip.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

import ocilayout as ol
from harness import start_distribution

ACCEPT_ALL = ", ".join([ol.MT_OCI_MANIFEST, ol.MT_OCI_INDEX, ol.MT_DOCKER_MANIFEST, ol.MT_DOCKER_LIST])


def skopeo(server, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.fail("skopeo is not installed (apt-get install skopeo); these tests must not be skipped")
    cmd = [exe, "--insecure-policy", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        log = server.log()[-4000:] if server is not None else ""
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                    f"stderr:\n{proc.stderr}\nserver log (tail):\n{log}")
    return proc


def push(server, src: str, repo_ref: str, *extra: str) -> None:
    skopeo(server, "copy", "--preserve-digests", "--dest-tls-verify=false", *extra,
           src, f"docker://{server.host}/{repo_ref}")


def pull(server, repo_ref: str, dest: str, *extra: str) -> None:
    skopeo(server, "copy", "--preserve-digests", "--src-tls-verify=false", *extra,
           f"docker://{server.host}/{repo_ref}", dest)


def http_manifest(server, repo: str, ref: str, method: str = "GET") -> requests.Response:
    r = requests.request(method, f"{server.url}/v2/{repo}/manifests/{ref}",
                         headers={"Accept": ACCEPT_ALL}, timeout=30)
    assert r.status_code == 200, f"{method} manifest {repo}:{ref}: {r.status_code} {r.text[:500]}"
    return r


def assert_served(server, repo: str, ref: str, body: bytes, media_type: str) -> None:
    """The registry serves exactly `body` for `ref`, with the right digest, type and length."""
    digest = ol.sha256(body)
    r = http_manifest(server, repo, ref)
    assert r.content == body, f"manifest bytes for {repo}:{ref} differ"
    assert r.headers.get("Docker-Content-Digest") == digest
    assert r.headers.get("Content-Type", "").split(";")[0].strip() == media_type
    h = http_manifest(server, repo, ref, "HEAD")
    assert h.headers.get("Docker-Content-Digest") == digest
    assert int(h.headers.get("Content-Length", -1)) == len(body)
    if ref != digest:
        assert http_manifest(server, repo, digest).content == body


def assert_blobs_served(server, repo: str, blobs: dict[str, bytes]) -> None:
    for digest, data in blobs.items():
        r = requests.get(f"{server.url}/v2/{repo}/blobs/{digest}", timeout=60)
        assert r.status_code == 200, f"GET blob {digest}: {r.status_code} {r.text[:300]}"
        assert r.content == data, f"blob {digest} bytes differ"
        assert r.headers.get("Docker-Content-Digest", digest) == digest


def assert_same_closure(src: ol.OciLayout, back: ol.OciLayout, digest: str) -> None:
    want = src.closure(digest)
    got = back.closure(digest)
    assert sorted(got) == sorted(want), "pulled image references different blobs"
    for d, data in want.items():
        assert got[d] == data, f"pulled blob {d} differs"
        assert ol.sha256(got[d]) == d


# ---------------------------------------------------------------------------------------------------


def test_skopeo_is_installed():
    assert shutil.which("skopeo"), "skopeo must be installed for the black-box tests"
    out = subprocess.run(["skopeo", "--version"], capture_output=True, text=True, check=True).stdout
    assert "skopeo version" in out


def test_push_pull_single_image_preserves_digests(berth, tmp_path):
    src = ol.OciLayout(tmp_path / "src")
    # one small layer and one 6 MiB incompressible one, so the upload really streams
    big = ol.make_layer({"data/blob.bin": random.Random(7).randbytes(6 * 1024 * 1024)}, level=1)
    small = ol.make_layer(ol.random_files(random.Random(8), "small"))
    image = ol.make_image("single", layers=[small, big])
    desc = src.add_image(image, tag="v1")

    push(berth, "oci:" + str(src.path) + ":v1", "library/single:v1")

    assert_served(berth, "library/single", "v1", image.manifest, ol.MT_OCI_MANIFEST)
    assert_blobs_served(berth, "library/single", image.blobs())

    back = ol.OciLayout(tmp_path / "back")
    pull(berth, "library/single:v1", f"oci:{back.path}:v1")
    got = back.resolve("v1")
    assert got["digest"] == desc["digest"] == image.digest
    assert got["size"] == len(image.manifest)
    assert got["mediaType"] == ol.MT_OCI_MANIFEST
    assert_same_closure(src, back, image.digest)
    doc = json.loads(back.blob(image.digest))
    assert doc["config"]["digest"] == image.config_digest
    assert [l["digest"] for l in doc["layers"]] == [small.digest, big.digest]


def test_push_pull_multiarch_index(berth, tmp_path):
    src = ol.OciLayout(tmp_path / "src")
    index = ol.make_multiarch("multi")
    src.add_index(index, tag="1.0")

    push(berth, f"oci:{src.path}:1.0", "group/project/multi:1.0", "--all")

    assert_served(berth, "group/project/multi", "1.0", index.body, ol.MT_OCI_INDEX)
    for im in index.images:
        assert_served(berth, "group/project/multi", im.digest, im.manifest, ol.MT_OCI_MANIFEST)
    assert_blobs_served(berth, "group/project/multi", index.blobs())

    back = ol.OciLayout(tmp_path / "back")
    pull(berth, "group/project/multi:1.0", f"oci:{back.path}:1.0", "--all")
    assert back.resolve("1.0")["digest"] == index.digest
    assert back.resolve("1.0")["mediaType"] == ol.MT_OCI_INDEX
    assert_same_closure(src, back, index.digest)

    # without --all skopeo picks one platform out of the index: the arm64 image, digest intact
    arm = ol.OciLayout(tmp_path / "arm")
    pull(berth, "group/project/multi:1.0", f"oci:{arm.path}:arm",
         "--override-arch", "arm64", "--override-variant", "v8")
    arm64 = [im for im in index.images if im.platform["architecture"] == "arm64"][0]
    assert arm.resolve("arm")["digest"] == arm64.digest
    assert_same_closure(src, arm, arm64.digest)


def test_inspect_raw_and_list_tags(berth, tmp_path):
    src = ol.OciLayout(tmp_path / "src")
    index = ol.make_multiarch("tags")
    image = ol.make_image("tags-single")
    src.add_index(index, tag="multi")
    src.add_image(image, tag="single")

    tags = ["v2", "latest", "v1", "1.0.0", "a_b-c.d"]
    for t in tags:
        push(berth, f"oci:{src.path}:single", f"inspect/me:{t}")
    push(berth, f"oci:{src.path}:multi", "inspect/me:multi", "--all")

    out = skopeo(berth, "list-tags", "--tls-verify=false", f"docker://{berth.host}/inspect/me").stdout
    listed = json.loads(out)
    assert listed["Repository"] == f"{berth.host}/inspect/me"
    assert sorted(listed["Tags"]) == sorted(tags + ["multi"])

    raw = skopeo(berth, "inspect", "--raw", "--tls-verify=false", f"docker://{berth.host}/inspect/me:v1")
    assert raw.stdout.encode() == image.manifest
    raw = skopeo(berth, "inspect", "--raw", "--tls-verify=false", f"docker://{berth.host}/inspect/me:multi")
    assert raw.stdout.encode() == index.body
    raw = skopeo(berth, "inspect", "--raw", "--tls-verify=false",
                 f"docker://{berth.host}/inspect/me@{index.images[1].digest}")
    assert raw.stdout.encode() == index.images[1].manifest
    cfg = skopeo(berth, "inspect", "--config", "--raw", "--tls-verify=false",
                 f"docker://{berth.host}/inspect/me:latest")
    assert cfg.stdout.encode() == image.config

    info = json.loads(skopeo(berth, "inspect", "--tls-verify=false",
                             f"docker://{berth.host}/inspect/me:v2").stdout)
    assert info["Digest"] == image.digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Layers"] == [l.digest for l in image.layers]
    assert sorted(info["RepoTags"]) == sorted(tags + ["multi"])

    info = json.loads(skopeo(berth, "inspect", "--tls-verify=false", "--override-arch", "arm64",
                             f"docker://{berth.host}/inspect/me:multi").stdout)
    assert info["Architecture"] == "arm64"
    assert info["Digest"] == index.digest or info["Digest"] == index.images[1].digest

    missing = skopeo(berth, "inspect", "--raw", "--tls-verify=false",
                     f"docker://{berth.host}/inspect/me:nope", check=False)
    assert missing.returncode != 0
    assert "manifest unknown" in missing.stderr.lower() or "not found" in missing.stderr.lower(), missing.stderr


def test_docker_schema2_image_and_manifest_list(berth, tmp_path):
    """Docker media types, pushed from skopeo `dir:` images (an OCI layout converts to v2s2 only by
    rewriting the manifest, which --preserve-digests forbids)."""
    image = ol.make_image("docker-single", docker=True)
    ol.write_dir_image(tmp_path / "single", image)
    push(berth, f"dir:{tmp_path / 'single'}", "docker/single:v1")
    assert_served(berth, "docker/single", "v1", image.manifest, ol.MT_DOCKER_MANIFEST)
    assert_blobs_served(berth, "docker/single", image.blobs())

    lst = ol.make_multiarch("docker-list", docker=True)
    ol.write_dir_image(tmp_path / "list", lst)
    push(berth, f"dir:{tmp_path / 'list'}", "docker/list:v1", "--all")
    assert_served(berth, "docker/list", "v1", lst.body, ol.MT_DOCKER_LIST)
    for im in lst.images:
        assert_served(berth, "docker/list", im.digest, im.manifest, ol.MT_DOCKER_MANIFEST)
    assert_blobs_served(berth, "docker/list", lst.blobs())

    for name, ref, extra in (("single", "docker/single:v1", ()), ("list", "docker/list:v1", ("--all",))):
        back = tmp_path / f"{name}-back"
        pull(berth, ref, f"dir:{back}", *extra)
        want = sorted(p.name for p in (tmp_path / name).iterdir() if p.name != "version")
        got = sorted(p.name for p in back.iterdir() if p.name != "version")
        assert got == want
        for f in want:
            assert (back / f).read_bytes() == (tmp_path / name / f).read_bytes(), f"{name}/{f} differs"

    raw = skopeo(berth, "inspect", "--raw", "--tls-verify=false", f"docker://{berth.host}/docker/list:v1")
    assert raw.stdout.encode() == lst.body


def test_copy_between_repositories_and_delete(berth, tmp_path):
    src = ol.OciLayout(tmp_path / "src")
    index = ol.make_multiarch("copy")
    src.add_index(index, tag="v1")
    push(berth, f"oci:{src.path}:v1", "from/repo:v1", "--all")

    # registry to registry (same berth, another repository): blobs may be mounted across
    skopeo(berth, "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{berth.host}/from/repo:v1", f"docker://{berth.host}/to/repo:copied")
    assert_served(berth, "to/repo", "copied", index.body, ol.MT_OCI_INDEX)
    for im in index.images:
        assert_served(berth, "to/repo", im.digest, im.manifest, ol.MT_OCI_MANIFEST)
    assert_blobs_served(berth, "to/repo", index.blobs())

    # skopeo delete resolves the tag and deletes the manifest by digest
    skopeo(berth, "delete", "--tls-verify=false", f"docker://{berth.host}/to/repo:copied")
    r = requests.get(f"{berth.url}/v2/to/repo/manifests/{index.digest}",
                     headers={"Accept": ACCEPT_ALL}, timeout=10)
    assert r.status_code == 404, r.text
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r = requests.get(f"{berth.url}/v2/to/repo/manifests/copied", headers={"Accept": ACCEPT_ALL}, timeout=10)
    assert r.status_code == 404, r.text
    gone = skopeo(berth, "inspect", "--raw", "--tls-verify=false",
                  f"docker://{berth.host}/to/repo:copied", check=False)
    assert gone.returncode != 0
    # the source repository is untouched
    assert_served(berth, "from/repo", "v1", index.body, ol.MT_OCI_INDEX)
    back = ol.OciLayout(tmp_path / "back")
    pull(berth, "from/repo:v1", f"oci:{back.path}:v1", "--all")
    assert_same_closure(src, back, index.digest)


def test_pull_after_restart(berth_factory, tmp_path):
    src = ol.OciLayout(tmp_path / "src")
    index = ol.make_multiarch("restart")
    src.add_index(index, tag="v1")
    root = tmp_path / "data"

    first = berth_factory(root=root)
    push(first, f"oci:{src.path}:v1", "restart/me:v1", "--all")
    assert first.stop() == 0, "berth should exit 0 on SIGTERM"

    second = berth_factory(root=root)
    back = ol.OciLayout(tmp_path / "back")
    pull(second, "restart/me:v1", f"oci:{back.path}:v1", "--all")
    assert back.resolve("v1")["digest"] == index.digest
    assert_same_closure(src, back, index.digest)
    out = json.loads(skopeo(second, "list-tags", "--tls-verify=false",
                            f"docker://{second.host}/restart/me").stdout)
    assert out["Tags"] == ["v1"]


def test_generated_layouts_are_valid_for_distribution(tmp_path):
    """The generated images themselves are sound: distribution 2.8.2 accepts them unchanged.
    (Guards against blaming berth for a broken fixture.)"""
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry (distribution 2.8.2) is not installed")
    server = start_distribution(tmp_path / "dist", tmp_path / "dist-data")
    try:
        src = ol.OciLayout(tmp_path / "src")
        index = ol.make_multiarch("dist")
        src.add_index(index, tag="v1")
        push(server, f"oci:{src.path}:v1", "check/multi:v1", "--all")
        assert_served(server, "check/multi", "v1", index.body, ol.MT_OCI_INDEX)
        back = ol.OciLayout(tmp_path / "back")
        pull(server, "check/multi:v1", f"oci:{back.path}:v1", "--all")
        assert_same_closure(src, back, index.digest)
    finally:
        server.stop()
