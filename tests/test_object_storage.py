"""Object storage drivers against real services on loopback: an S3-compatible server (moto's
standalone server) and Azurite. The whole API suite also runs on both
(BERTH_TEST_STORAGE=s3|azure in run.sh); these are the object-store specifics: multipart
uploads, redirects, serving a bucket distribution wrote, purging and cleanup.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid

import pytest
import requests

import objectstores
from harness import free_port, start_berth, start_distribution
from ocihelpers import error_codes, get_blob, get_manifest, make_image, push_blob, sha256, start_upload

REPO = "team/app"


def s3_storage(prefix: str, **extra) -> dict:
    return {"s3": objectstores.s3_config(prefix, **extra)}


def keys_under(prefix: str, bucket: str = objectstores.S3_BUCKET) -> dict[str, dict]:
    """Every object under `prefix` in `bucket` (the shared test bucket by default), by key."""
    s3 = objectstores.s3_client()
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o
    return out


def blob_key(prefix: str, dgst: str) -> str:
    hexd = dgst.split(":", 1)[1]
    return f"{prefix.strip('/')}/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data"


@pytest.fixture
def prefix():
    return f"/t-{uuid.uuid4().hex[:12]}"


def stream(data: bytes, piece: int = 1 << 20):
    """A chunked request body, so nothing tells the server the size up front."""
    for i in range(0, len(data), piece):
        yield data[i:i + piece]


def test_100mib_push_is_multipart_and_streams_to_its_final_key(tmp_path, prefix, client):
    srv = start_berth(tmp_path, config={"storage": s3_storage(prefix, chunksize=10 << 20)})
    try:
        data = os.urandom(100 << 20)
        dgst = sha256(data)
        loc = start_upload(srv.url, REPO, client)
        r = client.put(loc, params={"digest": dgst}, data=stream(data), timeout=300)
        assert r.status_code == 201, r.text
        obj = objectstores.s3_client().head_object(Bucket=objectstores.S3_BUCKET, Key=blob_key(prefix, dgst))
        assert obj["ContentLength"] == len(data)
        # A multipart object's ETag ends in -<parts>: 100 MiB in 10 MiB parts.
        assert obj["ETag"].strip('"').endswith("-10"), obj["ETag"]
        # Streamed straight to the blob key: no upload data was ever written (only startedat).
        assert not [k for k in keys_under(prefix.strip("/")) if k.endswith("/data") and "_uploads" in k]
        got = client.get(f"{srv.url}/v2/{REPO}/blobs/{dgst}", allow_redirects=True, timeout=300).content
        assert hashlib.sha256(got).hexdigest() == dgst.split(":")[1]
    finally:
        srv.stop()


def test_chunked_upload_and_wrong_digest(tmp_path, prefix, client):
    srv = start_berth(tmp_path, config={"storage": {**s3_storage(prefix), "redirect": {"disable": True}}})
    try:
        data = os.urandom(23 << 20)
        loc = start_upload(srv.url, REPO, client)
        off = 0
        for size in (6 << 20, 11 << 20, 6 << 20):
            chunk = data[off:off + size]
            r = client.patch(loc, data=chunk, headers={"Content-Range": f"{off}-{off + size - 1}",
                                                       "Content-Type": "application/octet-stream"})
            assert r.status_code == 202, r.text
            assert r.headers["Range"] == f"0-{off + size - 1}"
            loc = requests.compat.urljoin(srv.url, r.headers["Location"])
            off += size
        r = client.put(loc, params={"digest": sha256(data)})
        assert r.status_code == 201, r.text
        assert get_blob(srv.url, REPO, sha256(data), client) == data
        # A wrong digest stores nothing, wherever the bytes went.
        bad = os.urandom(12 << 20)
        wrong = sha256(b"something else")
        r = client.post(f"{srv.url}/v2/{REPO}/blobs/uploads/", params={"digest": wrong}, data=bad)
        assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
        assert blob_key(prefix, sha256(bad)) not in keys_under(prefix.strip("/"))
        assert blob_key(prefix, wrong) not in keys_under(prefix.strip("/"))
        # No multipart upload is left open (abandoned parts would be billed).
        uploads = objectstores.s3_client().list_multipart_uploads(Bucket=objectstores.S3_BUCKET,
                                                                   Prefix=prefix.strip("/"))
        assert not uploads.get("Uploads"), uploads.get("Uploads")
    finally:
        srv.stop()


def test_redirect_on_and_off(tmp_path, prefix, client):
    data = os.urandom(300_000)
    on = start_berth(tmp_path / "on", config={"storage": s3_storage(prefix)})
    try:
        dgst = push_blob(on.url, REPO, data, client)
        r = client.get(f"{on.url}/v2/{REPO}/blobs/{dgst}", allow_redirects=False)
        assert r.status_code == 307
        assert r.headers["Docker-Content-Digest"] == dgst
        url = r.headers["Location"]
        assert url.startswith(objectstores.s3_endpoint()) and "X-Amz-Signature=" in url and "X-Amz-Expires=" in url
        assert requests.get(url, timeout=30).content == data
        # HEAD answers from berth; an unknown blob is still BLOB_UNKNOWN, not a redirect.
        h = client.head(f"{on.url}/v2/{REPO}/blobs/{dgst}")
        assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(data)
        r = client.get(f"{on.url}/v2/{REPO}/blobs/{sha256(b'nope')}", allow_redirects=False)
        assert r.status_code == 404 and error_codes(r) == ["BLOB_UNKNOWN"]
        r = client.get(f"{on.url}/v2/other/blobs/{dgst}", allow_redirects=False)
        assert r.status_code == 404
    finally:
        on.stop()
    off = start_berth(tmp_path / "off", config={"storage": {**s3_storage(prefix), "redirect": {"disable": True}}})
    try:
        r = client.get(f"{off.url}/v2/{REPO}/blobs/{dgst}", allow_redirects=False)
        assert r.status_code == 200 and r.content == data
        assert r.headers["Docker-Content-Digest"] == dgst
        r = client.get(f"{off.url}/v2/{REPO}/blobs/{dgst}", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == data[10:20]
    finally:
        off.stop()


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="docker-registry not installed")
def test_serves_a_bucket_prefix_distribution_wrote(tmp_path, client, monkeypatch):
    import harness

    # distribution 2.8.2 writes the prefix with its own S3 driver; berth serves it as it is.
    monkeypatch.setattr(harness, "TEST_STORAGE", "s3")
    root = tmp_path / "shared"
    dist = start_distribution(tmp_path / "dist", root)
    layers = [os.urandom(7 << 20), os.urandom(1000)]
    try:
        mdgst, body = make_image(dist.url, "library/app", "v1", layers=layers, session=client, return_body=True)
    finally:
        dist.stop()
    storage = harness.object_store_config("s3", root)
    prefix = storage["s3"]["rootdirectory"].strip("/")
    keys = keys_under(prefix, storage["s3"]["bucket"])
    assert f"{prefix}/docker/registry/v2/repositories/library/app/_manifests/tags/v1/current/link" in keys
    assert blob_key(prefix, sha256(layers[0])) in keys
    srv = start_berth(tmp_path / "berth", config={"storage": {**storage, "redirect": {"disable": True}}})
    try:
        r = get_manifest(srv.url, "library/app", "v1", session=client)
        assert r.status_code == 200 and r.content == body
        assert r.headers["Docker-Content-Digest"] == mdgst
        for layer in layers:
            assert get_blob(srv.url, "library/app", sha256(layer), client) == layer
        assert client.get(f"{srv.url}/v2/_catalog").json()["repositories"] == ["library/app"]
        # berth's writes land in the same layout: distribution can serve them back.
        new = os.urandom(3 << 20)
        make_image(srv.url, "library/app", "v2", layers=[new], session=client)
    finally:
        srv.stop()
    dist = start_distribution(tmp_path / "dist2", root)
    try:
        assert get_blob(dist.url, "library/app", sha256(new), client) == new
        assert client.get(f"{dist.url}/v2/library/app/tags/list").json()["tags"] == ["v1", "v2"]
    finally:
        dist.stop()


def test_delete_and_catalog_on_s3(tmp_path, prefix, client):
    srv = start_berth(tmp_path, config={"storage": s3_storage(prefix)})
    try:
        for repo in ("b/one", "a/two"):
            make_image(srv.url, repo, "latest", session=client)
        assert client.get(f"{srv.url}/v2/_catalog").json()["repositories"] == ["a/two", "b/one"]
        m = get_manifest(srv.url, "a/two", "latest", session=client)
        d = m.headers["Docker-Content-Digest"]
        assert client.delete(f"{srv.url}/v2/a/two/manifests/{d}").status_code == 202
        assert get_manifest(srv.url, "a/two", d, session=client).status_code == 404
        assert client.get(f"{srv.url}/v2/a/two/tags/list").json()["tags"] in (None, [])
    finally:
        srv.stop()


def test_sigkill_mid_push_leaves_no_visible_blob(tmp_path, prefix, client):
    srv = start_berth(tmp_path, config={"storage": s3_storage(prefix)})
    data = os.urandom(40 << 20)
    dgst = sha256(data)
    loc = start_upload(srv.url, REPO, client)

    def slow_body():
        for i, piece in enumerate(stream(data)):
            if i == 25:
                srv.kill()
            yield piece

    with pytest.raises(requests.RequestException):
        client.put(loc, params={"digest": dgst}, data=slow_body(), timeout=60)
    assert blob_key(prefix, dgst) not in keys_under(prefix.strip("/"))
    srv2 = start_berth(tmp_path / "again", config={"storage": s3_storage(prefix)})
    try:
        r = client.head(f"{srv2.url}/v2/{REPO}/blobs/{dgst}")
        assert r.status_code == 404
        assert push_blob(srv2.url, REPO, data, client) == dgst
        assert get_blob(srv2.url, REPO, dgst, client) == data
    finally:
        srv2.stop()


def test_unreachable_bucket_is_a_clean_500_and_unhealthy(tmp_path, prefix, client):
    debug = f"127.0.0.1:{free_port()}"
    srv = start_berth(tmp_path, config={"http": {"debug": {"addr": debug}},
                                        "storage": s3_storage(prefix, regionendpoint="http://127.0.0.1:9")})
    try:
        r = client.post(f"{srv.url}/v2/{REPO}/blobs/uploads/", timeout=120)
        assert r.status_code == 500
        assert error_codes(r) == ["UNKNOWN"] and r.json()["errors"][0]["detail"]["request_id"]
        assert client.get(f"{srv.url}/v2/").status_code == 200
        h = client.get(f"http://{debug}/debug/health", timeout=30)
        assert h.status_code == 503 and h.json()["storage"] != "ok"
    finally:
        srv.stop()
    ok = start_berth(tmp_path / "ok", config={"http": {"debug": {"addr": debug}}, "storage": s3_storage(prefix)})
    try:
        h = client.get(f"http://{debug}/debug/health", timeout=30)
        assert h.status_code == 200 and h.json()["storage"] == "ok"
    finally:
        ok.stop()


def test_azure_push_pull_redirect(tmp_path, client):
    storage = {"azure": objectstores.azure_config(f"/t-{uuid.uuid4().hex[:12]}")}
    srv = start_berth(tmp_path, config={"storage": storage})
    try:
        big = os.urandom(25 << 20)
        dgst = sha256(big)
        loc = start_upload(srv.url, REPO, client)
        assert client.put(loc, params={"digest": dgst}, data=stream(big), timeout=300).status_code == 201
        mdgst = make_image(srv.url, REPO, "v1", layers=[big], session=client)
        r = client.get(f"{srv.url}/v2/{REPO}/blobs/{dgst}", allow_redirects=False)
        assert r.status_code == 307 and "sig=" in r.headers["Location"]
        assert hashlib.sha256(requests.get(r.headers["Location"], timeout=60).content).hexdigest() == dgst[7:]
        assert get_manifest(srv.url, REPO, "v1", session=client).headers["Docker-Content-Digest"] == mdgst
        assert client.get(f"{srv.url}/v2/_catalog").json()["repositories"] == [REPO]
    finally:
        srv.stop()


@pytest.mark.parametrize("dryrun", [False, True])
@pytest.mark.parametrize("backend", ["filesystem", "s3"])
def test_upload_purging(tmp_path, client, dryrun, backend, prefix):
    purge = {"enabled": True, "age": "1s", "interval": "1s", "dryrun": dryrun}
    storage = {"maintenance": {"uploadpurging": purge}}
    if backend == "s3":
        storage.update(s3_storage(prefix))
    srv = start_berth(tmp_path, config={"storage": storage})
    try:
        loc = start_upload(srv.url, REPO, client)
        r = client.patch(loc, data=b"partial", headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        loc = requests.compat.urljoin(srv.url, r.headers["Location"])
        deadline = time.monotonic() + (4 if dryrun else 15)
        gone = False
        while time.monotonic() < deadline and not gone:
            time.sleep(0.5)
            gone = client.get(loc).status_code == 404
        if dryrun:
            assert not gone
            assert client.get(loc).status_code == 204
            assert "would remove" in srv.log()
        else:
            assert gone
            assert error_codes(client.get(loc)) == ["BLOB_UPLOAD_UNKNOWN"]
            if backend == "s3":
                assert not [k for k in keys_under(prefix.strip("/")) if "/_uploads/" in k]
            else:
                assert not list((srv.root / "docker/registry/v2/repositories/team/app/_uploads").iterdir())
    finally:
        srv.stop()
