"""The WebAssembly plugin runtime, black box: `berth plugin check`, storage plugins serving the
registry, swapping plugins by config + SIGHUP or POST /admin/reload (on the debug server), and hostile plugins.

The components come from the plugins workspace (`cd plugins && cargo build --target
wasm32-wasip2 --release`); tests needing one that is not built are skipped, saying which.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from harness import BERTH_BIN, free_port, need_plugin, plugin_storage_config, start_berth
from ocihelpers import digest, get_blob, make_image, push_blob, random_bytes

HOSTILE_DEADLINE_MS = 1000


def check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BERTH_BIN), "plugin", "check", str(path)], capture_output=True, text=True, timeout=120)


def rewrite_config(server, update) -> None:
    cfg = yaml.safe_load(server.config_path.read_text())
    update(cfg)
    server.config_path.write_text(yaml.safe_dump(cfg))


def wait_for_log(server, needle: str, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in server.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in log:\n{server.log()[-3000:]}")


def assert_clean_500(r: requests.Response) -> None:
    assert r.status_code == 500, (r.status_code, r.text)
    body = r.json()
    err = body["errors"][0]
    assert err["code"] == "UNKNOWN"
    assert err["detail"]["request_id"] == r.headers["x-request-id"]


# --- plugin check ------------------------------------------------------------------------------

def test_check_rejects_a_non_component(tmp_path):
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"definitely not wasm")
    r = check(junk)
    assert r.returncode != 0
    assert "not a WebAssembly file" in r.stderr, r.stderr
    core = tmp_path / "core.wasm"
    core.write_bytes(b"\0asm\x01\x00\x00\x00")  # an empty core module
    r = check(core)
    assert r.returncode != 0
    assert "core WebAssembly module, not a component" in r.stderr, r.stderr
    r = check(tmp_path / "missing.wasm")
    assert r.returncode != 0 and "cannot read" in r.stderr


def test_check_rejects_a_component_of_another_world(tmp_path):
    """A plain wasi:cli command (built here) is a component, but not a Berth plugin."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo not available")
    crate = tmp_path / "hello"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n[workspace]\n')
    (crate / "src" / "main.rs").write_text('fn main() { println!("hi"); }\n')
    b = subprocess.run(["cargo", "build", "--offline", "--release", "--target", "wasm32-wasip2"], cwd=crate,
                       capture_output=True, text=True, timeout=600)
    if b.returncode != 0:
        pytest.skip(f"cannot build a wasm32-wasip2 component here: {b.stderr[-500:]}")
    r = check(crate / "target" / "wasm32-wasip2" / "release" / "hello.wasm")
    assert r.returncode != 0
    assert "not a Berth plugin" in r.stderr, r.stderr
    assert "wasi:cli/run" in r.stderr, r.stderr


def test_check_accepts_a_storage_plugin():
    for name in ("storage-fs", "storage-memory"):
        r = check(need_plugin(name))
        assert r.returncode == 0, r.stderr
        assert "storage-driver-plugin" in r.stdout, r.stdout
        assert "links: ok" in r.stdout


# --- plugin test -------------------------------------------------------------------------------

def plugin_test(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BERTH_BIN), "plugin", "test", *map(str, args)],
                          capture_output=True, text=True, timeout=1200)


def test_plugin_test_runs_the_driver_suite(tmp_path):
    wasm = need_plugin("storage-fs")
    grant = tmp_path / "not" / "there-yet"
    r = plugin_test(wasm, "--grant", f"{grant}:/data", "--config", "root=/data/store", "--instances", "2")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    cases = [line for line in lines if line.startswith(("ok ", "FAILED "))]
    assert len(cases) >= 19 and all(re.fullmatch(r"ok [a-z_]+ \(\d+ ms\)", line) for line in cases), r.stdout
    assert f"{wasm}: {len(cases)} passed, 0 failed (" in lines[-1], lines[-1]
    # The grant was created, and every case cleaned up after itself.
    assert [p.relative_to(grant).as_posix() for p in grant.rglob("*")] == ["store"]


def test_plugin_test_names_each_failing_case():
    """The hostile plugin in `bad-data` mode reports wrong sizes and serves corrupted blobs: the
    report names each case that breaks, and why."""
    r = plugin_test(need_plugin("hostile"), "--config", "mode=bad-data", "--memory-mib", "256")
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAILED ")]
    passed = [line for line in lines if line.startswith("ok ")]
    assert any(line.startswith("FAILED content_round_trip: stat /suite-") and "want a file of 5 bytes" in line
               for line in failed), r.stdout
    assert any(line.startswith("FAILED large_file: ") and "differ from those written" in line for line in failed), r.stdout
    assert "ok missing_paths (" in r.stdout, r.stdout
    assert f"{len(passed)} passed, {len(failed)} failed (" in lines[-1], lines[-1]


def test_plugin_test_refuses_what_it_cannot_load(tmp_path):
    r = plugin_test(tmp_path / "missing.wasm")
    assert r.returncode == 2 and "cannot read" in r.stderr, r.stderr
    r = plugin_test(tmp_path / "missing.wasm", "--grant", "data")
    assert r.returncode == 2 and "HOST:GUEST" in r.stderr, r.stderr
    r = plugin_test(tmp_path / "missing.wasm", "--config", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr, r.stderr


# --- serving through plugins -------------------------------------------------------------------

def test_push_pull_through_storage_fs(tmp_path, client):
    need_plugin("storage-fs")
    root = tmp_path / "data"
    srv = start_berth(tmp_path, config=plugin_storage_config("storage-fs", root))
    try:
        layer = random_bytes(3 << 20)
        small = random_bytes(1000)
        dgst = make_image(srv.url, "plug/fs", "v1", layers=[layer, small], session=client)
        assert get_blob(srv.url, "plug/fs", digest(layer), client) == layer
        assert get_blob(srv.url, "plug/fs", digest(small), client) == small
        r = client.get(f"{srv.url}/v2/plug/fs/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == dgst
        # A range read streams from the middle of the blob.
        r = client.get(f"{srv.url}/v2/plug/fs/blobs/{digest(layer)}", headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == layer[1000:2000]
        # distribution's layout, inside the preopened directory.
        hexd = digest(layer).split(":")[1]
        data = root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexd[:2] / hexd / "data"
        assert data.read_bytes() == layer
        assert "storage plugin loaded" in srv.log()
    finally:
        srv.stop()


def test_swap_memory_to_fs_by_config_and_sighup(tmp_path, client):
    need_plugin("storage-memory")
    need_plugin("storage-fs")
    root = tmp_path / "fsdata"
    cfg = plugin_storage_config("storage-memory")
    cfg["plugins"].update(plugin_storage_config("storage-fs", root)["plugins"])
    srv = start_berth(tmp_path, config=cfg)
    try:
        before = random_bytes(4096)
        make_image(srv.url, "swap/me", "old", layers=[before], session=client)
        assert get_blob(srv.url, "swap/me", digest(before), client) == before

        rewrite_config(srv, lambda c: c["storage"].update({"plugin": {"name": "storage-fs"}}))
        srv.proc.send_signal(signal.SIGHUP)
        wait_for_log(srv, "storage plugin storage-fs")

        # What the memory backend held is gone (including cached manifests) ...
        assert client.get(f"{srv.url}/v2/swap/me/manifests/old").status_code == 404
        assert client.get(f"{srv.url}/v2/swap/me/blobs/{digest(before)}").status_code == 404
        # ... and what is pushed now lands on disk and is served.
        after = random_bytes(5000)
        make_image(srv.url, "swap/me", "new", layers=[after], session=client)
        assert get_blob(srv.url, "swap/me", digest(after), client) == after
        assert (root / "docker" / "registry" / "v2" / "repositories" / "swap" / "me").is_dir()
    finally:
        srv.stop()


def test_reload_endpoint_refuses_a_broken_file_and_keeps_serving(tmp_path, client):
    src = need_plugin("storage-fs")
    wasm = tmp_path / "plugin.wasm"
    shutil.copy(src, wasm)
    root = tmp_path / "data"
    cfg = plugin_storage_config("storage-fs", root, path=str(wasm))
    debug = f"127.0.0.1:{free_port()}"
    cfg["http"] = {"debug": {"addr": debug}}
    srv = start_berth(tmp_path, config=cfg)
    reload_url = f"http://{debug}/admin/reload"
    try:
        blob = random_bytes(10000)
        dgst = push_blob(srv.url, "reload/me", blob, client)
        # A good reload (same file) is accepted.
        r = client.post(reload_url)
        assert r.status_code == 200, r.text
        assert r.json()["reloaded"] is True
        assert "storage plugin" in r.json()["serving"]
        # A broken file is refused; the old version keeps serving.
        wasm.write_bytes(b"\0asm garbage")
        r = client.post(reload_url)
        assert r.status_code == 500, r.text
        assert r.json()["reloaded"] is False
        assert "reload refused" in r.json()["error"]
        assert get_blob(srv.url, "reload/me", dgst, client) == blob
        # Replace the file with a good build under a bounded loop of pulls: no request fails.
        shutil.copy(src, wasm)
        statuses = []
        for i in range(60):
            if i == 20:
                srv.proc.send_signal(signal.SIGHUP)
            statuses.append(client.get(f"{srv.url}/v2/reload/me/blobs/{dgst}").status_code)
        assert set(statuses) == {200}, statuses
        r = client.get(reload_url)
        assert r.status_code == 405 and r.headers["Allow"] == "POST"
        # The registry's own port has no admin endpoint.
        assert client.post(f"{srv.url}/admin/reload").status_code == 404
    finally:
        srv.stop()


# --- hostile plugins ---------------------------------------------------------------------------

def hostile_config(tmp_path: Path, mode: str) -> dict:
    root = tmp_path / "hostile-root"
    cfg = plugin_storage_config("hostile", root, config={"root": "/data", "mode": mode},
                                deadlinems=HOSTILE_DEADLINE_MS, memorymib=32, instances=1)
    return cfg


@pytest.mark.parametrize("mode", ["loop", "oom", "panic", "escape"])
def test_hostile_plugin_gives_clean_errors(tmp_path, client, mode):
    need_plugin("hostile")
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("TOP-SECRET-OUTSIDE-THE-PREOPEN")
    srv = start_berth(tmp_path, config=hostile_config(tmp_path, mode))
    try:
        for _ in range(2):
            t = time.monotonic()
            r = client.get(f"{srv.url}/v2/hostile/repo/manifests/latest")
            elapsed = time.monotonic() - t
            assert elapsed < HOSTILE_DEADLINE_MS / 1000 + 5, elapsed
            assert "TOP-SECRET" not in r.text
            if mode == "escape":
                assert r.status_code in (404, 500), r.text
            else:
                assert_clean_500(r)
            # The host is alive and serves the next request.
            assert client.get(f"{srv.url}/v2/").status_code == 200
        assert srv.proc.poll() is None
        if mode != "escape":
            assert "plugin=hostile" in srv.log() or "plugin: hostile" in srv.log() or "hostile" in srv.log()
    finally:
        srv.stop()


def test_hostile_plugin_bad_data_is_refused_by_the_digest_check(tmp_path, client):
    need_plugin("hostile")
    srv = start_berth(tmp_path, config=hostile_config(tmp_path, "bad-data"))
    try:
        data = random_bytes(100_000)
        dgst = digest(data)
        loc = client.post(f"{srv.url}/v2/hostile/bad/blobs/uploads/")
        assert loc.status_code in (202, 500), loc.text
        if loc.status_code == 202:
            url = loc.headers["Location"]
            url = url if url.startswith("http") else srv.url + url
            r = client.put(url, params={"digest": dgst}, data=data, headers={"Content-Type": "application/octet-stream"})
            assert r.status_code in (400, 500), r.text
            if r.status_code == 400:
                assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
        # Nothing with the wrong content is ever served under the digest.
        r = client.get(f"{srv.url}/v2/hostile/bad/blobs/{dgst}")
        assert r.status_code != 200 or r.content == data
        assert client.get(f"{srv.url}/v2/").status_code == 200
    finally:
        srv.stop()


def test_hostile_init_failure_refuses_start(tmp_path):
    need_plugin("hostile")
    with pytest.raises(RuntimeError) as e:
        start_berth(tmp_path, config=hostile_config(tmp_path, "init-fail"))
    assert "init" in str(e.value)
    assert "hostile" in str(e.value)


def test_plugin_config_errors_name_the_key(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"storage": {"plugin": {"name": "nope"}}}))
    r = subprocess.run([str(BERTH_BIN), "config", "check", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "storage.plugin.name" in r.stderr, r.stderr
    cfg.write_text(yaml.safe_dump({"plugins": {"p": {"path": str(tmp_path / "missing.wasm")}}, "storage": {"plugin": {"name": "p"}},
                                   "http": {"addr": "127.0.0.1:0"}}))
    r = subprocess.run([str(BERTH_BIN), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "missing.wasm" in r.stderr, r.stderr


@pytest.mark.parametrize("granted", [False, True], ids=["no-grant", "granted"])
def test_network_only_where_granted(tmp_path, client, granted):
    """A plugin reaches the network only at addresses its config grants: without a grant its
    connection attempt fails inside the sandbox (and nothing arrives at the listener); with
    `grants.network: [ip:port]` it connects to exactly that address."""
    import socket
    import threading

    need_plugin("hostile")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    addr = f"127.0.0.1:{listener.getsockname()[1]}"
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)
            conn.sendall(b"hello from the network")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cfg = hostile_config(tmp_path, "connect")
    cfg["plugins"]["hostile"]["config"]["target"] = addr
    if granted:
        cfg["plugins"]["hostile"]["grants"]["network"] = [addr]
    srv = start_berth(tmp_path, config=cfg)
    try:
        r = client.get(f"{srv.url}/v2/hostile/net/manifests/latest")
        if granted:
            # The plugin read the listener's greeting back as a (meaningless) tag link: the
            # registry treats it as no link, so the manifest is unknown, but it got through.
            assert r.status_code == 404, r.text
        else:
            assert_clean_500(r)
        assert client.get(f"{srv.url}/v2/").status_code == 200
    finally:
        srv.stop()
        stop.set()
        t.join(5)
        listener.close()
    # Granted, the plugin connects on every storage read, and the server reads storage on its own
    # too (garbage collection's lock, each second): at least the request's connection arrives.
    # Without a grant, none ever does.
    if granted:
        assert len(accepted) >= 1
    else:
        assert accepted == []
