"""Storage layout interop with distribution 2.8.2 (`docker-registry`), in both directions."""

from __future__ import annotations

import os
import shutil

import pytest

from harness import OBJECT_STORES, TEST_STORAGE, start_distribution
from ocihelpers import (DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, Client, build_index, get_manifest,
                        hex_of, make_image, push_manifest, sha256, to_bytes)

pytestmark = pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry not installed")

V2 = ("docker", "registry", "v2")


def _push_set(url, c):
    """An OCI image, a Docker schema2 image (two tags) and an OCI index, in nested repositories."""
    out = {}
    layers = [os.urandom(200_000), os.urandom(100)]
    d, b = make_image(url, "interop/oci", "v1", layers, session=c, return_body=True)
    out["interop/oci"] = {"v1": (d, b, OCI_MANIFEST)}
    out["blobs"] = {"interop/oci": layers}
    dl = [os.urandom(5000)]
    d2, b2 = make_image(url, "interop/docker/img", "latest", dl, media_type=DOCKER_MANIFEST, session=c,
                        return_body=True)
    assert push_manifest(url, "interop/docker/img", "1.0", b2, DOCKER_MANIFEST, c).status_code == 201
    out["interop/docker/img"] = {"latest": (d2, b2, DOCKER_MANIFEST), "1.0": (d2, b2, DOCKER_MANIFEST)}
    out["blobs"]["interop/docker/img"] = dl
    children = []
    for _ in range(2):
        cd, cb = make_image(url, "interop/multi", None, [os.urandom(300)], session=c, return_body=True)
        children.append((cb, OCI_MANIFEST))
    idx = to_bytes(build_index(children, platforms=[{"architecture": "amd64", "os": "linux"},
                                                   {"architecture": "arm64", "os": "linux"}]))
    assert push_manifest(url, "interop/multi", "multi", idx, OCI_INDEX, c).status_code == 201
    out["interop/multi"] = {"multi": (sha256(idx), idx, OCI_INDEX)}
    out["children"] = children
    return out


def _verify(url, pushed, c):
    for repo in ("interop/oci", "interop/docker/img", "interop/multi"):
        tags = pushed[repo]
        r = c.get(f"{url}/v2/{repo}/tags/list")
        assert r.status_code == 200, (repo, r.text)
        assert sorted(r.json()["tags"]) == sorted(tags)
        for tag, (dgst, body, mt) in tags.items():
            for ref in (tag, dgst):
                g = get_manifest(url, repo, ref, accept=mt, session=c)
                assert g.status_code == 200, (repo, ref, g.text)
                assert g.content == body
                assert g.headers["Content-Type"] == mt
                assert g.headers["Docker-Content-Digest"] == dgst
                h = c.head(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": mt})
                assert h.status_code == 200
    for repo, layers in pushed["blobs"].items():
        for layer in layers:
            g = c.get(f"{url}/v2/{repo}/blobs/{sha256(layer)}")
            assert g.status_code == 200 and g.content == layer
    for body, mt in pushed["children"]:
        g = get_manifest(url, "interop/multi", sha256(body), accept=mt, session=c)
        assert g.status_code == 200 and g.content == body
    cat = c.get(f"{url}/v2/_catalog")
    assert cat.status_code == 200
    assert sorted(cat.json()["repositories"]) == ["interop/docker/img", "interop/multi", "interop/oci"]


def test_berth_serves_what_distribution_wrote(tmp_path, berth_factory):
    root = tmp_path / "dist-root"
    dist = start_distribution(tmp_path / "dist", root)
    try:
        with Client() as c:
            pushed = _push_set(dist.url, c)
    finally:
        dist.stop()
    srv = berth_factory(root=root)
    with Client() as c:
        _verify(srv.url, pushed, c)
        # berth can keep writing into distribution's tree
        make_image(srv.url, "interop/oci", "v2", session=c)
        assert sorted(c.get(f"{srv.url}/v2/interop/oci/tags/list").json()["tags"]) == ["v1", "v2"]


def test_distribution_serves_what_berth_wrote(tmp_path, berth_factory):
    root = tmp_path / "berth-root"
    srv = berth_factory(root=root)
    with Client() as c:
        pushed = _push_set(srv.url, c)
    assert srv.stop() == 0
    dist = start_distribution(tmp_path / "dist", root)
    try:
        with Client() as c:
            _verify(dist.url, pushed, c)
    finally:
        dist.stop()


@pytest.mark.skipif(TEST_STORAGE in OBJECT_STORES, reason="checks files on disk; test_object_storage checks keys")
def test_berth_writes_distribution_layout_on_disk(tmp_path, berth_factory):
    root = tmp_path / "root"
    srv = berth_factory(root=root)
    layer = os.urandom(1000)
    with Client() as c:
        dgst, body = make_image(srv.url, "group/project/image", "v1", [layer], session=c, return_body=True)
    v2 = root.joinpath(*V2)
    lh = hex_of(sha256(layer))
    mh = hex_of(dgst)
    assert (v2 / "blobs/sha256" / lh[:2] / lh / "data").read_bytes() == layer
    assert (v2 / "blobs/sha256" / mh[:2] / mh / "data").read_bytes() == body
    repo = v2 / "repositories/group/project/image"
    assert (repo / "_manifests/tags/v1/current/link").read_text() == dgst
    assert (repo / "_manifests/tags/v1/index/sha256" / mh / "link").read_text() == dgst
    assert (repo / "_manifests/revisions/sha256" / mh / "link").read_text() == dgst
    assert (repo / "_layers/sha256" / lh / "link").read_text() == sha256(layer)
    # no upload leftovers after completed uploads
    uploads = repo / "_uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
