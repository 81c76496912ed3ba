"""Restart, SIGKILL in the middle of an upload, concurrent pushes, graceful SIGTERM."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import requests

from ocihelpers import (OCI_MANIFEST, Client, absolute, build_manifest, get_manifest, image_config,
                        make_image, push_blob, push_manifest, sha256, start_upload, to_bytes)

REPO = "team/app"


def test_restart_keeps_everything(berth_factory, tmp_path, client):
    root = tmp_path / "root"
    srv = berth_factory(root=root)
    layers = [os.urandom(300_000), os.urandom(1000)]
    dgst, body = make_image(srv.url, REPO, "v1", layers, session=client, return_body=True)
    make_image(srv.url, "other/repo", "latest", session=client)
    assert srv.stop() == 0

    srv2 = berth_factory(root=root)
    g = get_manifest(srv2.url, REPO, "v1", session=client)
    assert g.status_code == 200 and g.content == body
    assert g.headers["Docker-Content-Digest"] == dgst
    assert get_manifest(srv2.url, REPO, dgst, session=client).content == body
    for layer in layers:
        assert client.get(f"{srv2.url}/v2/{REPO}/blobs/{sha256(layer)}").content == layer
    assert client.get(f"{srv2.url}/v2/{REPO}/tags/list").json()["tags"] == ["v1"]
    assert client.get(f"{srv2.url}/v2/_catalog").json()["repositories"] == ["other/repo", REPO]


def test_upload_session_survives_restart(berth_factory, tmp_path, client):
    root = tmp_path / "root"
    srv = berth_factory(root=root)
    data = os.urandom(20_000)
    loc = start_upload(srv.url, REPO, client)
    r = client.patch(loc, data=data[:10_000], headers={"Content-Range": "0-9999"})
    assert r.status_code == 202
    path = r.headers["Location"]
    assert srv.stop() == 0
    # The session's pooled connection was to the stopped process: start afresh, as a client of
    # a restarted registry does (reusing it raced the old process's close, and failed once).
    client.close()
    srv2 = berth_factory(root=root, port=srv.port)
    loc2 = absolute(srv2.url, path)
    s = client.get(loc2)
    assert s.status_code == 204 and s.headers.get("Range") == "0-9999"
    r = client.patch(loc2, data=data[10_000:], headers={"Content-Range": "10000-19999"})
    assert r.status_code == 202
    r = client.put(absolute(srv2.url, r.headers["Location"]), params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"{srv2.url}/v2/{REPO}/blobs/{sha256(data)}").content == data


def test_sigkill_during_streamed_upload_leaves_no_visible_blob(berth_factory, tmp_path):
    root = tmp_path / "root"
    srv = berth_factory(root=root)
    data = os.urandom(64 * 1024 * 1024)
    full = sha256(data)
    half = len(data) // 2
    piece = 1024 * 1024
    sent_half = threading.Event()
    release = threading.Event()
    result = {}

    def body():
        for i in range(0, len(data), piece):
            if i >= half:
                sent_half.set()
                release.wait(30)
                return
            yield data[i:i + piece]

    def upload():
        try:
            result["resp"] = requests.post(f"{srv.url}/v2/{REPO}/blobs/uploads/", params={"digest": full},
                                           data=body(), timeout=60,
                                           headers={"Content-Type": "application/octet-stream"})
        except requests.RequestException as e:
            result["error"] = e

    # a streamed monolithic POST ?digest= and a streamed PATCH, both cut in half by SIGKILL
    loc = start_upload(srv.url, REPO)
    t = threading.Thread(target=upload)
    t.start()
    assert sent_half.wait(60)
    patch_half = threading.Event()

    def patch_body():
        for i in range(0, half, piece):
            yield data[i:i + piece]
        patch_half.set()
        release.wait(30)

    def patcher():
        try:
            result["patch"] = requests.patch(loc, data=patch_body(), timeout=60)
        except requests.RequestException as e:
            result["patch_error"] = e

    t2 = threading.Thread(target=patcher)
    t2.start()
    assert patch_half.wait(60)
    time.sleep(0.5)
    srv.kill()
    release.set()
    t.join(60)
    t2.join(60)
    assert "resp" not in result or result["resp"].status_code != 201

    srv2 = berth_factory(root=root)
    with Client() as c:
        assert c.head(f"{srv2.url}/v2/{REPO}/blobs/{full}").status_code == 404
        assert c.head(f"{srv2.url}/v2/{REPO}/blobs/{sha256(data[:half])}").status_code == 404
        # nothing in the blob store is a partial of this blob
        blobs = root / "docker/registry/v2/blobs"
        if blobs.exists():
            for f in blobs.rglob("data"):
                assert f.stat().st_size != half
        # a fresh push of the same blob succeeds
        r = c.post(f"{srv2.url}/v2/{REPO}/blobs/uploads/", params={"digest": full}, data=data,
                   headers={"Content-Type": "application/octet-stream"}, timeout=120)
        assert r.status_code == 201, r.text
        h = hashlib.sha256()
        with c.get(f"{srv2.url}/v2/{REPO}/blobs/{full}", stream=True) as g:
            assert g.status_code == 200
            for chunk in g.iter_content(1 << 20):
                h.update(chunk)
        assert "sha256:" + h.hexdigest() == full


def _race(n, fn):
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def run(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


def test_concurrent_push_of_same_blob_both_succeed(berth):
    for _ in range(5):
        data = os.urandom(2 * 1024 * 1024)

        def push(i):
            with Client() as c:
                if i % 2:
                    return push_blob(berth.url, REPO, data, c)
                r = c.post(f"{berth.url}/v2/{REPO}/blobs/uploads/", params={"digest": sha256(data)}, data=data)
                assert r.status_code == 201, r.text
                return sha256(data)

        assert _race(4, push) == [sha256(data)] * 4
        with Client() as c:
            g = c.get(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}")
            assert g.status_code == 200 and g.content == data


def test_concurrent_push_of_same_tag_both_succeed(berth):
    with Client() as c:
        cfg, layer = image_config(), os.urandom(1000)
        push_blob(berth.url, REPO, cfg, c)
        push_blob(berth.url, REPO, layer, c)
        bodies = [to_bytes(build_manifest(cfg, [layer], annotations={"n": str(i)})) for i in range(4)]
    for _ in range(5):
        def put_same(i):
            with Client() as c2:
                r = push_manifest(berth.url, REPO, "same", bodies[0], OCI_MANIFEST, c2)
                assert r.status_code == 201, r.text

        _race(4, put_same)
        with Client() as c:
            g = get_manifest(berth.url, REPO, "same", session=c)
            assert g.content == bodies[0]

        def put_different(i):
            with Client() as c2:
                r = push_manifest(berth.url, REPO, "race", bodies[i], OCI_MANIFEST, c2)
                assert r.status_code == 201, r.text

        _race(4, put_different)
        with Client() as c:
            g = get_manifest(berth.url, REPO, "race", session=c)
            assert g.status_code == 200
            assert g.content in bodies
            assert g.headers["Docker-Content-Digest"] == sha256(g.content)
            assert c.get(f"{berth.url}/v2/{REPO}/tags/list").json()["tags"] == ["race", "same"]
            for b in bodies:
                assert get_manifest(berth.url, REPO, sha256(b), session=c).content == b


def test_sigterm_finishes_in_flight_upload(berth_factory, tmp_path):
    root = tmp_path / "root"
    srv = berth_factory(root=root)
    data = os.urandom(4 * 1024 * 1024)
    started = threading.Event()
    result = {}

    def slow_body():
        step = 256 * 1024
        for i in range(0, len(data), step):
            if i == step * 2:
                started.set()
            yield data[i:i + step]
            time.sleep(0.1)

    def upload():
        try:
            result["resp"] = requests.post(f"{srv.url}/v2/{REPO}/blobs/uploads/", params={"digest": sha256(data)},
                                           data=slow_body(), timeout=60,
                                           headers={"Content-Type": "application/octet-stream"})
        except requests.RequestException as e:
            result["error"] = e

    t = threading.Thread(target=upload)
    t.start()
    assert started.wait(30)
    srv.proc.send_signal(15)
    t.join(60)
    assert "error" not in result, result.get("error")
    assert result["resp"].status_code == 201, result["resp"].text
    srv.proc.wait(30)
    assert srv.proc.returncode == 0

    srv2 = berth_factory(root=root)
    with Client() as c:
        assert sha256(c.get(f"{srv2.url}/v2/{REPO}/blobs/{sha256(data)}").content) == sha256(data)
