"""The generic plugin runtime, black box: what `berth plugin check` and `berth config check` say
about a file (world, WIT version, declarations, typed errors), a plugin built against another
WIT version, guest output in the host's log, a stuck call in a stateless plugin, failure
metrics by reason, and grant directories created like `rootdirectory`."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import requests
import yaml

from harness import BERTH_BIN, free_port, need_plugin, plugin_storage_config, start_berth
from test_debug import debug_config, scrape


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BERTH_BIN), *args], capture_output=True, text=True, timeout=120)


def test_check_names_world_version_and_declarations():
    r = run("plugin", "check", str(need_plugin("storage-fs")))
    assert r.returncode == 0, r.stderr
    assert "storage-driver-plugin (berth:plugin@0.1.0, stateless; links: ok)" in r.stdout, r.stdout
    r = run("plugin", "check", str(need_plugin("storage-memory")))
    assert r.returncode == 0 and "(berth:plugin@0.1.0; links: ok)" in r.stdout, r.stdout
    r = run("plugin", "check", str(need_plugin("cleanup-keep-latest")))
    assert r.returncode == 0, r.stderr
    assert "cleanup-policy-plugin (berth:plugin@0.1.0" in r.stdout, r.stdout


def test_a_plugin_built_against_another_wit_version_is_refused_naming_both(tmp_path):
    future = need_plugin("wit-future")
    r = run("plugin", "check", str(future))
    assert r.returncode != 0
    assert "[wit_version]" in r.stderr, r.stderr
    assert "berth:plugin@0.2.0" in r.stderr and "berth:plugin@0.1.x" in r.stderr, r.stderr
    # `serve` refuses it the same way, before listening.
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump({"http": {"addr": f"127.0.0.1:{free_port()}"},
                                   "plugins": {"future": {"path": str(future)}},
                                   "storage": {"plugin": {"name": "future"}}}))
    r = subprocess.run([str(BERTH_BIN), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "berth:plugin@0.2.0" in r.stderr and "berth:plugin@0.1.x" in r.stderr, r.stderr


def test_config_check_loads_every_configured_plugin(tmp_path):
    fs, cleanup = need_plugin("storage-fs"), need_plugin("cleanup-keep-latest")
    cfg = tmp_path / "c.yml"

    def check(doc: dict) -> subprocess.CompletedProcess:
        cfg.write_text(yaml.safe_dump(doc))
        return run("config", "check", str(cfg))

    ok = {"plugins": {"fs": {"path": str(fs)}}, "storage": {"plugin": {"name": "fs"}}}
    r = check(ok)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    # A literal placeholder where the sha256 pin goes: refused, naming the plugin.
    r = check({**ok, "plugins": {"fs": {"path": str(fs), "sha256": "<sha256 of the file>"}}})
    assert r.returncode != 0
    assert "plugins.fs" in r.stderr and "pins" in r.stderr, r.stderr
    # A cleanup policy given as the storage driver.
    r = check({"plugins": {"c": {"path": str(cleanup)}}, "storage": {"plugin": {"name": "c"}}})
    assert r.returncode != 0
    assert "implements cleanup-policy-plugin, not storage-driver-plugin" in r.stderr, r.stderr
    # A plugin entry nothing uses is a warning, not an error.
    r = check({**ok, "plugins": {"fs": {"path": str(fs)}, "spare": {"path": str(cleanup)}}})
    assert r.returncode == 0, r.stderr
    assert "plugins.spare" in r.stdout and "nothing uses it" in r.stdout, r.stdout


def hostile(tmp_path: Path, mode: str, deadlinems: int = 1000, **extra) -> dict:
    return plugin_storage_config("hostile", tmp_path / "hostile-root", config={"root": "/data", "mode": mode},
                                 deadlinems=deadlinems, memorymib=32, instances=1, **extra)


def test_guest_panic_is_logged_with_plugin_and_request_id(tmp_path):
    need_plugin("hostile")
    srv = start_berth(tmp_path, config=hostile(tmp_path, "panic"))
    try:
        r = requests.get(f"{srv.url}/v2/h/r/manifests/latest", timeout=30)
        assert r.status_code == 500, r.text
        rid = r.headers["X-Request-Id"]
        lines = [line for line in srv.log().splitlines() if "hostile plugin: panic mode" in line]
        assert lines, srv.log()[-3000:]
        assert any("hostile" in line.split("panic mode")[0] and rid in line for line in lines), lines
        assert any("stderr" in line for line in lines), lines
    finally:
        srv.stop()


def test_unused_plugin_entry_is_warned_at_serve(tmp_path):
    need_plugin("cleanup-keep-latest")
    srv = start_berth(tmp_path, config={"plugins": {"spare": {"path": str(need_plugin("cleanup-keep-latest"))}}})
    try:
        assert "plugins.spare is configured but nothing uses it" in srv.log(), srv.log()[-2000:]
    finally:
        srv.stop()


def test_a_stuck_call_does_not_hold_up_other_requests(tmp_path):
    """The hostile plugin declares itself stateless: while one request spins in it until the
    deadline, another request through the same plugin is answered at once (the pool grew)."""
    need_plugin("hostile")
    dport = free_port()
    cfg = hostile(tmp_path, "stuck", deadlinems=4000)
    cfg.update(debug_config(dport))
    srv = start_berth(tmp_path, config=cfg)
    try:
        stuck: dict = {}

        def call_stuck():
            t = time.monotonic()
            stuck["status"] = requests.get(f"{srv.url}/v2/h/r/manifests/stuck", timeout=30).status_code
            stuck["elapsed"] = time.monotonic() - t

        th = threading.Thread(target=call_stuck)
        th.start()
        time.sleep(0.5)
        t = time.monotonic()
        r = requests.get(f"{srv.url}/v2/h/r/manifests/other", timeout=30)
        other = time.monotonic() - t
        assert r.status_code == 404, r.text
        assert "stuck" not in stuck, "the stuck request should still be running"
        assert other < 1.0, other
        th.join(30)
        assert stuck["status"] == 500 and stuck["elapsed"] >= 3.5, stuck
        failures = scrape(f"http://127.0.0.1:{dport}").by("berth_plugin_call_failures_total", "plugin", "reason")
        assert failures.get(("hostile", "deadline"), 0) >= 1, failures
    finally:
        srv.stop()


def test_failures_are_counted_by_reason(tmp_path):
    need_plugin("hostile")
    dport = free_port()
    cfg = hostile(tmp_path, "oom")
    cfg.update(debug_config(dport))
    srv = start_berth(tmp_path, config=cfg)
    try:
        assert requests.get(f"{srv.url}/v2/h/r/manifests/latest", timeout=30).status_code == 500
        failures = scrape(f"http://127.0.0.1:{dport}").by("berth_plugin_call_failures_total", "plugin", "reason")
        assert failures.get(("hostile", "memory_cap"), 0) >= 1, failures
        assert "memory cap of 32 MiB reached" in srv.log()
    finally:
        srv.stop()


def test_missing_grant_directories_are_created(tmp_path):
    need_plugin("storage-fs")
    root = tmp_path / "not" / "there" / "yet"
    cfg = plugin_storage_config("storage-fs", tmp_path / "placeholder")
    cfg["plugins"]["storage-fs"]["grants"]["dirs"][0]["host"] = str(root)
    srv = start_berth(tmp_path, config=cfg)
    try:
        assert root.is_dir()
        r = requests.post(f"{srv.url}/v2/g/r/blobs/uploads/", timeout=30)
        assert r.status_code == 202, r.text
    finally:
        srv.stop()
