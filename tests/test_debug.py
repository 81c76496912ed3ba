"""The debug server (`http.debug.addr`): Prometheus metrics that count exactly the requests made,
`/debug/health` (200 while storage answers, 503 with the error when it does not), `/debug/vars`,
and profiling: a CPU profile in pprof's format (gzip'd `perftools.profiles.Profile`) taken under
load, one at a time, and heap statistics.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text

from harness import TEST_STORAGE, free_port, need_plugin, plugin_storage_config, start_berth
from ocihelpers import push_blob, sha256

REPO = "observed/app"


def debug_config(port: int, **prometheus) -> dict:
    cfg: dict = {"http": {"debug": {"addr": f"127.0.0.1:{port}"}}}
    if prometheus:
        cfg["http"]["debug"]["prometheus"] = prometheus
    return cfg


class Scrape:
    """One parsed /metrics: families by name, sample values by (sample name, frozen labels).

    The body is OpenMetrics text (what its Content-Type says), parsed strictly by the OpenMetrics
    parser (types, units, `# EOF`); the classic Prometheus text parser must read the same samples.
    """

    def __init__(self, text: str):
        families = list(parse_openmetrics(text))
        self.families = {f.name: f for f in families}
        assert len(self.families) == len(families), "a metric family appears twice"
        self.values: dict[tuple, float] = {}
        for f in families:
            for s in f.samples:
                self.values[(s.name, frozenset(s.labels.items()))] = s.value
        classic = {(s.name, frozenset(s.labels.items())): s.value
                   for f in parse_prometheus_text(text) for s in f.samples}
        assert classic == self.values

    def get(self, name: str, **labels) -> float:
        return self.values.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)

    def by(self, name: str, *keys: str) -> dict[tuple, float]:
        """Sums of sample `name` grouped by the label values `keys`."""
        out: dict[tuple, float] = defaultdict(float)
        for (n, labels), v in self.values.items():
            if n == name:
                d = dict(labels)
                out[tuple(d.get(k) for k in keys)] += v
        return out


def scrape(debug_url: str, path: str = "/metrics") -> Scrape:
    r = requests.get(debug_url + path, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(("text/plain", "application/openmetrics-text"))
    return Scrape(r.text)


def delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@pytest.fixture
def observed(tmp_path):
    dport = free_port()
    srv = start_berth(tmp_path, config=debug_config(dport))
    srv.debug_url = f"http://127.0.0.1:{dport}"
    yield srv
    srv.stop()


def test_metrics_count_exactly_the_requests_made(observed):
    u, d = observed.url, observed.debug_url
    before = scrape(d)
    req_before = before.by("berth_http_requests_total", "route", "method", "status")

    blob = os.urandom(70_000)
    with requests.Session() as s:
        dgst = push_blob(u, REPO, blob, s)                                   # POST 202, PUT 201
        # A chunked PATCH (no Content-Length): its bytes are counted as streamed.
        loc = s.post(f"{u}/v2/{REPO}/blobs/uploads/").headers["Location"]    # POST 202
        chunked = os.urandom(50_000)
        r = s.patch(loc if loc.startswith("http") else u + loc, data=iter([chunked[:20_000], chunked[20_000:]]))
        assert r.status_code == 202, r.text                                  # PATCH 202
        loc = r.headers["Location"]
        r = s.put(loc if loc.startswith("http") else u + loc, params={"digest": sha256(chunked)})
        assert r.status_code == 201, r.text                                  # PUT 201
        for _ in range(2):
            assert s.get(f"{u}/v2/{REPO}/blobs/{dgst}").content == blob      # GET 200 x2
        assert s.head(f"{u}/v2/{REPO}/blobs/{dgst}").status_code == 200      # HEAD 200
        missing = s.get(f"{u}/v2/{REPO}/blobs/{sha256(b'nothing')}")
        assert missing.status_code == 404                                    # GET 404
        assert s.get(f"{u}/v2/{REPO}/manifests/latest").status_code == 404   # manifest GET 404
        assert s.get(f"{u}/v2/").status_code == 200                          # base GET 200
        assert s.get(f"{u}/not/an/endpoint").status_code == 404              # notfound GET 404

    after = scrape(d)
    counted = delta(after.by("berth_http_requests_total", "route", "method", "status"), req_before)
    assert counted == {
        ("upload", "POST", "202"): 2,
        ("upload", "PUT", "201"): 2,
        ("upload", "PATCH", "202"): 1,
        ("blob", "GET", "200"): 2,
        ("blob", "HEAD", "200"): 1,
        ("blob", "GET", "404"): 1,
        ("manifest", "GET", "404"): 1,
        ("base", "GET", "200"): 1,
        ("notfound", "GET", "404"): 1,
    }
    # No repository name ever becomes a label.
    assert REPO not in str(after.values.keys())

    # Bytes: blob bodies as streamed out; upload bodies as streamed in, chunked or not.
    sent = delta(after.by("berth_http_response_body_bytes_total", "route", "method"),
                 before.by("berth_http_response_body_bytes_total", "route", "method"))
    assert sent[("blob", "GET")] == 2 * len(blob) + len(missing.content)
    received = delta(after.by("berth_http_request_body_bytes_total", "route", "method"),
                     before.by("berth_http_request_body_bytes_total", "route", "method"))
    assert received[("upload", "PUT")] == len(blob)
    assert received[("upload", "PATCH")] == len(chunked)

    # Latency histograms: one sample per request, cumulative buckets ending at +Inf.
    lat = delta(after.by("berth_http_request_duration_seconds_count", "route", "method"),
                before.by("berth_http_request_duration_seconds_count", "route", "method"))
    assert lat[("blob", "GET")] == 3 and lat[("upload", "POST")] == 2
    assert after.get("berth_http_request_duration_seconds_bucket", route="blob", method="GET", le="+Inf") >= 3
    assert after.get("berth_http_request_duration_seconds_sum", route="blob", method="GET") > 0

    # Storage operations, by the configured driver and operation.
    driver = requests.get(d + "/debug/vars", timeout=10).json()["driver"]
    ops = delta(after.by("berth_storage_operation_duration_seconds_count", "driver", "op"),
                before.by("berth_storage_operation_duration_seconds_count", "driver", "op"))
    for op in ("writer", "write", "commit", "reader", "stat"):
        assert ops.get((driver, op), 0) >= 1, (op, ops)
    assert after.families["berth_storage_operation_errors"].type == "counter"
    assert after.families["berth_storage_operation_duration_seconds"].type == "histogram"
    assert after.families["berth_http_request_duration_seconds"].unit == "seconds"
    assert after.get("berth_http_requests_in_flight") == 0


def test_health_and_vars(observed):
    d = observed.debug_url
    r = requests.get(d + "/debug/health", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    # Under BERTH_TEST_STORAGE the driver is a storage plugin, which health lists.
    assert r.json() == {"storage": "ok", "plugins": {TEST_STORAGE: "ok"} if TEST_STORAGE else {}}

    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"{observed.url}/v2/").status_code == 200
    v = requests.get(d + "/debug/vars", timeout=10).json()
    assert v["pid"] == observed.proc.pid
    assert isinstance(v["driver"], str) and v["driver"]
    assert isinstance(v["version"], str) and v["version"]
    assert v["uptime_seconds"] > 0
    assert v["requests_served"] >= 4  # the harness's readiness probe and these three
    assert v["requests_in_flight"] == 0
    assert v["rss_bytes"] > 1 << 20
    # The debug endpoints live only on the debug port, and the API only on its own.
    assert requests.get(f"{observed.url}/debug/vars", timeout=10).status_code == 404
    assert requests.get(d + "/v2/", timeout=10).status_code == 404


def test_health_fails_while_storage_is_broken(tmp_path):
    # The native filesystem driver, named explicitly so BERTH_TEST_STORAGE keeps it.
    root, dport = tmp_path / "data", free_port()
    config = {**debug_config(dport), "storage": {"filesystem": {"rootdirectory": str(root)}}}
    srv = start_berth(tmp_path, root=root, config=config)
    try:
        check_health_follows_storage(f"http://127.0.0.1:{dport}", root)
    finally:
        srv.stop()


def check_health_follows_storage(d: str, root: Path) -> None:
    assert requests.get(d + "/debug/health", timeout=10).status_code == 200
    # A file where the registry's directory belongs: listing it fails (as root too), which is an
    # error, not "nothing there yet".
    registry_dir = root / "docker"
    moved = registry_dir.with_name("docker.moved")
    if registry_dir.exists():
        registry_dir.rename(moved)
    registry_dir.write_bytes(b"not a directory")
    try:
        r = requests.get(d + "/debug/health", timeout=10)
        assert r.status_code == 503, r.text
        report = r.json()
        assert report["storage"] != "ok" and "docker" in report["storage"], report
    finally:
        registry_dir.unlink()
        if moved.exists():
            moved.rename(registry_dir)
    assert requests.get(d + "/debug/health", timeout=10).status_code == 200


def test_prometheus_path_and_switch(tmp_path):
    dport = free_port()
    srv = start_berth(tmp_path / "a", config=debug_config(dport, path="/prom"))
    try:
        assert "berth_http_requests" in scrape(f"http://127.0.0.1:{dport}", "/prom").families
        assert requests.get(f"http://127.0.0.1:{dport}/metrics", timeout=10).status_code == 404
    finally:
        srv.stop()
    dport = free_port()
    srv = start_berth(tmp_path / "b", config=debug_config(dport, enabled=False))
    try:
        assert requests.get(f"http://127.0.0.1:{dport}/metrics", timeout=10).status_code == 404
        assert requests.get(f"http://127.0.0.1:{dport}/debug/health", timeout=10).status_code == 200
    finally:
        srv.stop()


def hostile(tmp_path: Path, mode: str, dport: int) -> dict:
    cfg = plugin_storage_config("hostile", tmp_path / "hostile-root", config={"root": "/data", "mode": mode},
                                deadlinems=1000, memorymib=32, instances=1)
    cfg.update(debug_config(dport))
    return cfg


def test_plugin_calls_and_failures_are_measured(tmp_path):
    need_plugin("hostile")
    dport = free_port()
    srv = start_berth(tmp_path, config=hostile(tmp_path, "panic", dport))
    d = f"http://127.0.0.1:{dport}"
    try:
        health = requests.get(d + "/debug/health", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["plugins"] == {"hostile": "ok"}
        assert "hostile" in requests.get(d + "/debug/vars", timeout=10).json()["plugins"]
        before = scrape(d)
        for _ in range(2):  # `panic` traps in get-content and stat: each request fails once
            assert requests.get(f"{srv.url}/v2/h/repo/manifests/latest", timeout=10).status_code == 500
        after = scrape(d)
        failures = delta(after.by("berth_plugin_call_failures_total", "plugin"),
                         before.by("berth_plugin_call_failures_total", "plugin"))
        assert failures.get(("hostile",), 0) >= 2, failures
        calls = after.by("berth_plugin_call_duration_seconds_count", "plugin", "op")
        assert calls.get(("hostile", "list"), 0) >= 1, calls  # the health check's listing
        assert sum(v for (p, _), v in calls.items() if p == "hostile") >= 3
        assert after.get("berth_http_requests_total", route="manifest", method="GET", status="500") == 2
    finally:
        srv.stop()


def test_health_reports_a_failing_storage_plugin(tmp_path):
    need_plugin("hostile")
    dport = free_port()
    srv = start_berth(tmp_path, config=hostile(tmp_path, "list-loop", dport))
    try:
        # Something stored; the plugin's listing loops whether or not its fresh instance kept it
        # (it says it is stateless: the host may start one at any time).
        push_blob(srv.url, REPO, b"listed")
        r = requests.get(f"http://127.0.0.1:{dport}/debug/health", timeout=15)
        assert r.status_code == 503, r.text
        assert r.json()["storage"] != "ok"
        assert srv.proc.poll() is None
    finally:
        srv.stop()


# --- profiling -----------------------------------------------------------------------------------

def varint(buf: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, i


def protobuf_fields(buf: bytes) -> dict[int, list]:
    """The top-level fields of a protobuf message: field number -> values (ints or bytes)."""
    fields: dict[int, list] = defaultdict(list)
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise AssertionError(f"wire type {wire} at byte {i}")
        fields[number].append(v)
    return fields


def load(url: str, stop: threading.Event) -> None:
    """Pushes and pulls 1 MiB blobs until told to stop: CPU spent hashing in berth."""
    with requests.Session() as s:
        while not stop.is_set():
            data = os.urandom(1 << 20)
            dgst = push_blob(url, "profiled/app", data, s)
            assert s.get(f"{url}/v2/profiled/app/blobs/{dgst}", timeout=30).content == data


def test_cpu_profile_under_load_is_gzipped_pprof(observed):
    stop = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        loads = [pool.submit(load, observed.url, stop) for _ in range(2)]
        try:
            t = time.monotonic()
            r = requests.get(observed.debug_url + "/debug/pprof/profile?seconds=2", timeout=60)
            took = time.monotonic() - t
        finally:
            stop.set()
        for f in loads:
            f.result()
    assert r.status_code == 200, r.text
    assert 2 <= took < 30, took
    assert r.content[:2] == b"\x1f\x8b", r.content[:16]
    profile = protobuf_fields(gzip.decompress(r.content))
    # perftools.profiles.Profile: 1 sample_type, 2 sample, 4 location, 5 function, 6 string_table.
    strings = [s.decode() for s in profile[6]]
    assert strings[0] == "", strings[:5]
    assert "cpu" in strings and "samples" in strings, strings[:10]
    assert profile[2] and profile[4] and profile[5], "no samples"
    # Symbolised: berth's own functions are named (e.g. the upload path hashing the blobs).
    functions = [s for s in strings if "berth::" in s]
    assert functions, [s for s in strings if "::" in s][:20]


def test_one_cpu_profile_at_a_time(observed):
    url = observed.debug_url + "/debug/pprof/profile"
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(requests.get, url + "?seconds=3", timeout=60)
        time.sleep(1)
        second = requests.get(url + "?seconds=1", timeout=60)
        assert second.status_code == 409, second.text
        assert "already" in second.json()["error"]
        assert first.result().status_code == 200
    # Once the first is done, the next one runs.
    assert requests.get(url + "?seconds=1", timeout=60).status_code == 200


def test_cpu_profile_seconds_are_bounded(observed):
    url = observed.debug_url + "/debug/pprof/profile"
    for bad in ("0", "61", "-1", "abc", "1.5"):
        r = requests.get(f"{url}?seconds={bad}", timeout=10)
        assert r.status_code == 400, (bad, r.text)
        assert "seconds" in r.json()["error"]


def test_heap_stats_are_plausible(observed):
    push_blob(observed.url, REPO, os.urandom(1 << 20))
    r = requests.get(observed.debug_url + "/debug/heapstats", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    h = r.json()
    assert h["allocator"] == "glibc"
    for k in ("arena_bytes", "mmap_bytes", "in_use_bytes", "free_bytes", "releasable_bytes", "rss_bytes"):
        assert isinstance(h[k], int) and h[k] >= 0, (k, h)
    # glibc's counters add up: what is in use and free is what the arenas and mappings hold.
    assert h["in_use_bytes"] + h["free_bytes"] == h["arena_bytes"] + h["mmap_bytes"], h
    assert 64 << 10 < h["in_use_bytes"] < 4 << 30, h
    assert h["releasable_bytes"] <= h["free_bytes"], h
    assert h["rss_bytes"] > 1 << 20, h
