"""Admin operations live on the debug listener (`http.debug.addr`) only. The registry's port has
none: behind a reverse proxy on the same host every client is loopback, so a loopback peer (with
or without `X-Forwarded-For`) gets the registry's ordinary 404 there. Reloading a plugin file is
covered in test_plugins.py; here, reloading the configuration.
"""

from __future__ import annotations

import requests
import yaml

from harness import free_port, start_berth
from ocihelpers import make_image


def with_debug(tmp_path, port: int | None = None):
    dport = free_port()
    srv = start_berth(tmp_path, config={"http": {"debug": {"addr": f"127.0.0.1:{dport}"}}}, port=port)
    srv.debug_url = f"http://127.0.0.1:{dport}"
    return srv


def test_reload_is_refused_on_the_registry_port_even_from_loopback(tmp_path):
    srv = with_debug(tmp_path)
    try:
        for headers in ({}, {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "127.0.0.1"},
                        {"X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"}):
            for method in ("POST", "GET"):
                r = requests.request(method, f"{srv.url}/admin/reload", headers=headers, timeout=10)
                assert r.status_code == 404, (method, headers, r.text)
                assert r.json()["errors"][0]["code"] == "NOT_FOUND", r.text
        assert "reload done" not in srv.log()
    finally:
        srv.stop()


def test_reload_on_the_debug_listener_rereads_the_configuration(tmp_path):
    srv = with_debug(tmp_path)
    try:
        r = requests.post(srv.debug_url + "/admin/reload", timeout=30)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/json"
        assert r.json() == {"reloaded": True, "serving": "no plugins in use; nothing reloaded"}
        assert "reload done" in srv.log()
        # A configuration that no longer parses is refused, with why; the registry keeps serving.
        cfg = yaml.safe_load(srv.config_path.read_text())
        cfg["storage"]["delete"]["enabled"] = "sometimes"
        srv.config_path.write_text(yaml.safe_dump(cfg))
        r = requests.post(srv.debug_url + "/admin/reload", timeout=30)
        assert r.status_code == 500, r.text
        body = r.json()
        assert body["reloaded"] is False
        assert "invalid configuration" in body["error"] and "storage.delete.enabled" in body["error"], body
        assert requests.get(f"{srv.url}/v2/", timeout=10).status_code == 200
    finally:
        srv.stop()


def test_reload_names_the_changes_it_leaves_for_a_restart(tmp_path):
    srv = with_debug(tmp_path)
    try:
        cfg = yaml.safe_load(srv.config_path.read_text())
        cfg.setdefault("catalog", {})["maxentries"] = 7
        cfg["storage"]["delete"]["enabled"] = not cfg["storage"]["delete"].get("enabled", False)
        srv.config_path.write_text(yaml.safe_dump(cfg))
        r = requests.post(srv.debug_url + "/admin/reload", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"reloaded": True, "serving": "no plugins in use; nothing reloaded; "
                                                         "not applied until a restart: storage, catalog"}
        assert "apply at the next restart" in srv.log()
        # Still running as it started: a catalog page is not cut at the new maxentries.
        for i in range(8):
            make_image(srv.url, f"reload/r{i}", "t")
        r = requests.get(f"{srv.url}/v2/_catalog", timeout=10)
        assert r.status_code == 200, r.text
        assert len(r.json()["repositories"]) == 8, r.text
    finally:
        srv.stop()


def test_admin_operations_take_only_their_method(tmp_path):
    srv = with_debug(tmp_path)
    try:
        for method in ("GET", "PUT", "DELETE"):
            r = requests.request(method, srv.debug_url + "/admin/reload", timeout=10)
            assert r.status_code == 405, (method, r.text)
            assert r.headers["Allow"] == "POST"
            assert "POST /admin/reload" in r.json()["error"]
        assert requests.post(srv.debug_url + "/admin/nothing", timeout=10).status_code == 405
        assert requests.get(srv.debug_url + "/admin/nothing", timeout=10).status_code == 404
        assert "reload done" not in srv.log()
    finally:
        srv.stop()
