"""Config behaviour: read-only mode, delete disabled, bad config, environment overrides, in-memory driver, logs."""

from __future__ import annotations

import os
import subprocess

import pytest

from harness import BERTH_BIN, free_port, need_plugin, plugin_wasm
from ocihelpers import (OCI_MANIFEST, error_codes, get_manifest, make_image, push_blob, sha256)

REPO = "team/app"
READONLY = {"storage": {"maintenance": {"readonly": {"enabled": True}}}}


def _populate(berth_factory, root):
    srv = berth_factory(root=root)
    layer = os.urandom(1000)
    dgst, body = make_image(srv.url, REPO, "v1", [layer], return_body=True)
    assert srv.stop() == 0
    return dgst, body, layer


def _assert_unsupported(r):
    assert r.status_code == 405, (r.request.method, r.request.url, r.status_code, r.text)
    assert "UNSUPPORTED" in error_codes(r)


@pytest.mark.parametrize("how", ["file", "env"])
def test_read_only_refuses_writes_and_serves_reads(berth_factory, tmp_path, client, how):
    root = tmp_path / "shared"
    dgst, body, layer = _populate(berth_factory, root)
    if how == "file":
        srv = berth_factory(root=root, config=READONLY)
    else:
        srv = berth_factory(root=root, env={"BERTH_STORAGE_MAINTENANCE_READONLY_ENABLED": "true"})
    u = srv.url
    # reads work
    g = get_manifest(u, REPO, "v1", session=client)
    assert g.status_code == 200 and g.content == body
    assert client.get(f"{u}/v2/{REPO}/blobs/{sha256(layer)}").content == layer
    assert client.get(f"{u}/v2/{REPO}/tags/list").json()["tags"] == ["v1"]
    assert client.get(f"{u}/v2/_catalog").json()["repositories"] == [REPO]
    # writes are refused
    new = b"new blob"
    _assert_unsupported(client.post(f"{u}/v2/{REPO}/blobs/uploads/"))
    _assert_unsupported(client.post(f"{u}/v2/{REPO}/blobs/uploads/", params={"digest": sha256(new)}, data=new))
    _assert_unsupported(client.post(f"{u}/v2/other/blobs/uploads/", params={"mount": sha256(layer), "from": REPO}))
    upload = f"{u}/v2/{REPO}/blobs/uploads/0f7c3d3e-6d8e-4e43-9b7b-3a4f7c1d2e5f"
    _assert_unsupported(client.patch(upload, data=new))
    _assert_unsupported(client.put(upload, params={"digest": sha256(new)}, data=new))
    _assert_unsupported(client.delete(upload))
    _assert_unsupported(client.put(f"{u}/v2/{REPO}/manifests/v2", data=body, headers={"Content-Type": OCI_MANIFEST}))
    _assert_unsupported(client.delete(f"{u}/v2/{REPO}/manifests/{dgst}"))
    _assert_unsupported(client.delete(f"{u}/v2/{REPO}/blobs/{sha256(layer)}"))
    # and nothing changed
    assert get_manifest(u, REPO, "v2", session=client).status_code == 404
    assert get_manifest(u, REPO, dgst, session=client).status_code == 200
    assert client.head(f"{u}/v2/{REPO}/blobs/{sha256(new)}").status_code == 404


def test_delete_disabled_refuses_deletes(berth_factory, client):
    srv = berth_factory(config={"storage": {"delete": {"enabled": False}}})
    layer = os.urandom(100)
    dgst = make_image(srv.url, REPO, "v1", [layer], session=client)
    for r in (client.delete(f"{srv.url}/v2/{REPO}/manifests/{dgst}"),
              client.delete(f"{srv.url}/v2/{REPO}/manifests/v1"),
              client.delete(f"{srv.url}/v2/{REPO}/blobs/{sha256(layer)}")):
        _assert_unsupported(r)
    assert get_manifest(srv.url, REPO, "v1", session=client).status_code == 200
    assert client.head(f"{srv.url}/v2/{REPO}/blobs/{sha256(layer)}").status_code == 200
    # pushes still work
    push_blob(srv.url, REPO, b"still writable", client)


def test_delete_disabled_by_env(berth_factory, client):
    srv = berth_factory(env={"BERTH_STORAGE_DELETE_ENABLED": "false"})
    layer = os.urandom(100)
    push_blob(srv.url, REPO, layer, client)
    _assert_unsupported(client.delete(f"{srv.url}/v2/{REPO}/blobs/{sha256(layer)}"))


def _run_with_config(tmp_path, text: str, env: dict | None = None):
    cfg = tmp_path / "bad.yml"
    cfg.write_text(text)
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        p = subprocess.run([str(BERTH_BIN), "serve", "--config", str(cfg)], cwd=tmp_path, env=full_env,
                           capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("berth kept running with a bad config")
    return p.returncode, (p.stderr + p.stdout).decode(errors="replace")


@pytest.mark.parametrize("text,key", [
    ("http:\n  addr: not-an-address\n", "http.addr"),
    ("http:\n  addr: [1, 2]\n", "http.addr"),
    ("log:\n  level: shouting\n", "log.level"),
    ("storage:\n  delete:\n    enabled: maybe\n", "storage.delete.enabled"),
    ("storage:\n  maintenance:\n    readonly:\n      enabled: 12\n", "storage.maintenance.readonly.enabled"),
], ids=["addr-garbage", "addr-list", "log-level", "delete-enabled", "readonly-enabled"])
def test_bad_config_exits_non_zero_naming_the_key(tmp_path, text, key):
    code, out = _run_with_config(tmp_path, text)
    assert code != 0
    assert key in out, out


def test_unparseable_yaml_exits_non_zero(tmp_path):
    code, out = _run_with_config(tmp_path, "http: {addr: [\n")
    assert code != 0
    assert out.strip()


def test_missing_config_file_exits_non_zero(tmp_path):
    try:
        p = subprocess.run([str(BERTH_BIN), "serve", "--config", str(tmp_path / "absent.yml")], cwd=tmp_path,
                           capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("berth kept running without its config file")
    assert p.returncode != 0


def test_bad_env_override_exits_non_zero(tmp_path):
    port = free_port()
    code, out = _run_with_config(tmp_path, f"http:\n  addr: 127.0.0.1:{port}\n",
                                 env={"BERTH_HTTP_ADDR": "nonsense"})
    assert code != 0
    assert "http.addr" in out or "BERTH_HTTP_ADDR" in out, out


def test_env_http_addr_overrides_file(berth_factory, client):
    file_port, env_port = free_port(), free_port()
    srv = berth_factory(port=env_port, config={"http": {"addr": f"127.0.0.1:{file_port}"}},
                        env={"BERTH_HTTP_ADDR": f"127.0.0.1:{env_port}"})
    assert client.get(f"http://127.0.0.1:{env_port}/v2/").status_code == 200
    import requests
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{file_port}/v2/", timeout=2)


def test_env_rootdirectory_overrides_file(berth_factory, tmp_path, client):
    env_root = tmp_path / "env-root"
    srv = berth_factory(root=tmp_path / "file-root",
                        env={"BERTH_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(env_root)})
    push_blob(srv.url, REPO, b"where am I", client)
    hexd = sha256(b"where am I").split(":")[1]
    assert (env_root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data").read_bytes() == b"where am I"
    assert not (tmp_path / "file-root" / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd).exists()


def test_inmemory_driver_push_pull_round_trip(berth_factory, client):
    srv = berth_factory(config={"storage": {"inmemory": {}}})
    layers = [os.urandom(200_000), os.urandom(10)]
    dgst, body = make_image(srv.url, REPO, "v1", layers, session=client, return_body=True)
    g = get_manifest(srv.url, REPO, "v1", session=client)
    assert g.status_code == 200 and g.content == body
    assert g.headers["Docker-Content-Digest"] == dgst
    for layer in layers:
        assert client.get(f"{srv.url}/v2/{REPO}/blobs/{sha256(layer)}").content == layer
    # chunked upload on the in-memory driver
    data = os.urandom(5000)
    loc = client.post(f"{srv.url}/v2/{REPO}/blobs/uploads/").headers["Location"]
    from ocihelpers import absolute
    r = client.patch(absolute(srv.url, loc), data=data[:2000], headers={"Content-Range": "0-1999"})
    assert r.status_code == 202
    r = client.patch(absolute(srv.url, r.headers["Location"]), data=data[2000:], headers={"Content-Range": "2000-4999"})
    assert r.status_code == 202
    r = client.put(absolute(srv.url, r.headers["Location"]), params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"{srv.url}/v2/{REPO}/blobs/{sha256(data)}").content == data
    assert client.get(f"{srv.url}/v2/{REPO}/tags/list").json()["tags"] == ["v1"]
    assert client.delete(f"{srv.url}/v2/{REPO}/manifests/{dgst}").status_code == 202
    assert srv.root is None


def test_default_config_without_file(tmp_path):
    """No --config: listens on 127.0.0.1:5000 with storage under ./data (skipped if 5000 is taken)."""
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 5000))
        except OSError:
            pytest.skip("port 5000 busy")
    import time

    import requests
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTH_")}
    proc = subprocess.Popen([str(BERTH_BIN), "serve"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ok = False
        for _ in range(200):
            try:
                if requests.get("http://127.0.0.1:5000/v2/", timeout=1).status_code == 200:
                    ok = True
                    break
            except requests.RequestException:
                time.sleep(0.05)
        assert ok
        push_blob("http://127.0.0.1:5000", REPO, b"default root")
        hexd = sha256(b"default root").split(":")[1]
        assert (tmp_path / "data/docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data").exists()
    finally:
        proc.terminate()
        proc.wait(20)


def test_maxinflight_sheds_load_with_toomanyrequests(berth_factory):
    """http.maxinflight: past the limit a request gets 429 TOOMANYREQUESTS and Retry-After, not a
    queue; once the slow request is done the registry serves again."""
    import threading
    import time

    import requests

    srv = berth_factory(config={"http": {"maxinflight": 1}})
    loc = requests.post(f"{srv.url}/v2/slow/up/blobs/uploads/", timeout=10).headers["Location"]
    loc = loc if loc.startswith("http") else srv.url + loc
    started = threading.Event()

    def body():
        for _ in range(6):
            started.set()
            yield b"x" * 1024
            time.sleep(0.25)

    done = {}

    def upload():
        done["status"] = requests.patch(loc, data=body(), timeout=30).status_code

    t = threading.Thread(target=upload)
    t.start()
    assert started.wait(10)
    time.sleep(0.2)
    r = requests.get(f"{srv.url}/v2/", timeout=10)
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "1"
    assert error_codes(r) == ["TOOMANYREQUESTS"]
    t.join(30)
    assert done["status"] == 202
    assert requests.get(f"{srv.url}/v2/", timeout=10).status_code == 200


def test_config_check_names_every_problem(tmp_path):
    good = tmp_path / "good.yml"
    good.write_text("version: 0.1\nstorage:\n  s3: {bucket: b, region: eu-west-1, v4auth: true}\n"
                    "  maintenance:\n    uploadpurging: {age: 48h, interval: 1h}\n")
    r = subprocess.run([str(BERTH_BIN), "config", "check", str(good)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "storage.s3.v4auth: unknown key" in r.stdout and "ok" in r.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("storage:\n  s3: {chunksize: 1024, accesskey: a, regionendpoint: 'ftp://x'}\n"
                   "  maintenance:\n    uploadpurging: {age: 0s}\n")
    r = subprocess.run([str(BERTH_BIN), "config", "check", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    keys = [line.split(":")[1].strip() for line in r.stderr.splitlines() if line.startswith("error:")]
    assert keys == ["storage.s3.bucket", "storage.s3.chunksize", "storage.s3.secretkey",
                    "storage.s3.regionendpoint", "storage.maintenance.uploadpurging"], r.stderr
    unparsable = tmp_path / "unparsable.yml"
    unparsable.write_text("storage:\n  maintenance:\n    uploadpurging: {age: forever}\n")
    r = subprocess.run([str(BERTH_BIN), "config", "check", str(unparsable)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "storage.maintenance.uploadpurging.age" in r.stderr


def _blob_file(root, data: bytes):
    hexd = sha256(data).split(":")[1]
    return root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def test_env_overrides_reach_a_named_plugin_and_registry_variables(berth_factory, tmp_path, client):
    """BERTH_PLUGINS_STORAGE_FS_* reaches the plugin `storage-fs`; distribution's
    REGISTRY_HTTP_RELATIVEURLS is honoured; BERTH_ wins over REGISTRY_ for the same key."""
    need_plugin("storage-fs")
    file_root, env_root = tmp_path / "file-root", tmp_path / "env-root"
    file_root.mkdir()
    env_root.mkdir()
    cfg = {"storage": {"plugin": {"name": "storage-fs"}},
           "plugins": {"storage-fs": {"path": str(plugin_wasm("storage-fs")), "config": {"root": "/data"},
                                      "grants": {"dirs": [{"host": str(file_root), "guest": "/data", "mode": "rw"}]}}}}
    srv = berth_factory(config=cfg, env={
        "BERTH_PLUGINS_STORAGE_FS_GRANTS_DIRS": f"[{{host: '{env_root}', guest: /data, mode: rw}}]",
        "REGISTRY_HTTP_RELATIVEURLS": "true",
    })
    r = client.post(f"{srv.url}/v2/{REPO}/blobs/uploads/")
    assert r.status_code == 202 and r.headers["Location"].startswith("/v2/"), r.headers
    data = os.urandom(3000)
    r = client.put(srv.url + r.headers["Location"], params={"digest": sha256(data)}, data=data)
    assert r.status_code == 201, r.text
    assert client.get(f"{srv.url}/v2/{REPO}/blobs/{sha256(data)}").content == data
    assert _blob_file(env_root, data).read_bytes() == data
    assert not _blob_file(file_root, data).exists()
    srv = berth_factory(env={"REGISTRY_HTTP_RELATIVEURLS": "true", "BERTH_HTTP_RELATIVEURLS": "false"})
    r = client.post(f"{srv.url}/v2/{REPO}/blobs/uploads/")
    assert r.status_code == 202 and r.headers["Location"].startswith("http://"), r.headers


def test_env_override_of_plugin_defaults(berth_factory, tmp_path, client):
    """BERTH_PLUGINS_DEFAULTS_DEADLINEMS replaces the file's default deadline: a plugin stuck in a
    loop is stopped after it, not after the file's 60 s."""
    import time

    need_plugin("hostile")
    root = tmp_path / "hostile-root"
    root.mkdir()
    cfg = {"storage": {"plugin": {"name": "hostile"}},
           "plugins": {"defaults": {"deadlinems": 60000},
                       "hostile": {"path": str(plugin_wasm("hostile")), "config": {"root": "/data", "mode": "loop"},
                                   "grants": {"dirs": [{"host": str(root), "guest": "/data", "mode": "rw"}]}}}}
    srv = berth_factory(config=cfg, env={"BERTH_PLUGINS_DEFAULTS_DEADLINEMS": "500"})
    t = time.monotonic()
    r = client.get(f"{srv.url}/v2/hostile/repo/manifests/latest")
    assert r.status_code == 500, r.text
    assert time.monotonic() - t < 10


def test_logs_to_a_file_carry_no_colour_codes(berth_factory, client):
    srv = berth_factory()
    assert client.get(f"{srv.url}/v2/nothing/here/manifests/latest").status_code == 404
    srv.stop()
    log = srv.log_path.read_bytes()
    assert b"berth listening" in log
    assert b"\x1b[" not in log


def test_json_log_lines_carry_the_request_id(berth_factory, client):
    import json

    srv = berth_factory(config={"log": {"formatter": "json"}})
    r = client.get(f"{srv.url}/v2/nothing/here/manifests/latest")
    assert r.status_code == 404
    request_id = r.headers["X-Request-Id"]
    srv.stop()
    lines = [json.loads(line) for line in srv.log().splitlines() if line.strip()]
    assert any(line.get("fields", {}).get("message") == "berth listening" for line in lines), lines
    assert any(line.get("span", {}).get("id") == request_id for line in lines), lines
