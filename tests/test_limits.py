"""Clients that stall or send too much: header, idle and body-stall timeouts, the connection cap,
413 before the body for a declared length over the manifest cap, JSON bodies on the parser's own
431/414, many headers accepted, the memory of 100 stalled 8 MiB manifest PUTs bounded, and
downloads and uploads that stall holding no thread (600 of each, past tokio's 512-thread
blocking pool, while fresh requests are served at once; an upload cut while parked keeps what
arrived).

Timeouts are configured short here so each test runs in seconds; every loop is bounded."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time

import pytest
import requests

from harness import free_port, rss_mib
from ocihelpers import push_blob, start_upload

REPO = "limits/app"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def limits(**http) -> dict:
    t = {"header": "1s", "idle": "10s", "bodystall": "1s"}
    t.update(http.pop("timeouts", {}))
    return {"http": {"timeouts": t, **http}}


def connect(srv, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_closed(s: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (seconds from now)."""
    start = time.monotonic()
    out = b""
    s.settimeout(0.2)
    while time.monotonic() - start < limit_s:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            break
        if not d:
            break
        out += d
    return out, time.monotonic() - start


def response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_slowloris_head_cut_while_others_are_served(berth_factory, tmp_path):
    srv = berth_factory(config=limits())
    s = connect(srv)
    start = time.monotonic()
    head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    closed_at = None
    for i in range(len(head)):  # a byte every 0.1 s: 10 s if never cut
        try:
            s.send(head[i:i + 1])
        except OSError:
            closed_at = time.monotonic() - start
            break
        # Meanwhile, normal requests are served.
        if i % 5 == 0:
            assert requests.get(srv.url + "/v2/", timeout=2).status_code == 200
        time.sleep(0.1)
        s.settimeout(0.001)
        try:
            if s.recv(1) == b"":
                closed_at = time.monotonic() - start
                break
        except socket.timeout:
            pass
        except OSError:
            closed_at = time.monotonic() - start
            break
    assert closed_at is not None, "the slow head was never cut"
    assert 0.9 <= closed_at <= 3, closed_at


def test_idle_keepalive_closed(berth_factory):
    srv = berth_factory(config=limits(timeouts={"idle": "1s", "header": "5s"}))
    s = connect(srv)
    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)  # the response arrives; the connection stays open for another request
    out, t = read_until_closed(s, 5)
    assert response(out)[0] == 200
    assert 0.5 <= t <= 2.5, t
    # A connection that never sends a byte is idle too.
    quiet = connect(srv)
    out, t = read_until_closed(quiet, 5)
    assert out == b"" and 0.8 <= t <= 2.5, (out, t)


def stalled_patch(srv, sent: int, length: int = 1_000_000) -> tuple[socket.socket, str]:
    """A PATCH of an upload that declares `length` bytes and sends `sent`; its upload URL."""
    loc = start_upload(srv.url, REPO, requests)
    path = loc.split(str(srv.port), 1)[-1] if loc.startswith("http") else loc
    s = connect(srv)
    s.sendall(f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
              f"Content-Length: {length}\r\n\r\n".encode() + b"x" * sent)
    return s, loc


def test_stalled_body_is_cut(berth_factory):
    srv = berth_factory(config=limits())
    s, _ = stalled_patch(srv, 1000, 100_000)
    out, t = read_until_closed(s, 6)
    assert t <= 3, t
    if out:
        status, _, body = response(out)
        assert status == 400 and "bodystall" in body.decode(), out
    # A stalled manifest PUT as well.
    s = connect(srv)
    s.sendall(f"PUT /v2/{REPO}/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: {MANIFEST}\r\n"
              f"Content-Length: 5000\r\n\r\n{{".encode())
    out, t = read_until_closed(s, 6)
    assert t <= 3 and (out == b"" or response(out)[0] == 400), (out, t)


def test_slow_steady_upload_succeeds(berth_factory):
    """64 KiB/s for 6 s, with a 2 s stall timeout: no gap is long, so the upload completes. (Each
    pause parks the writing, and the next chunk takes it up again.)"""
    srv = berth_factory(config=limits(timeouts={"bodystall": "2s"}))
    data = bytes(range(256)) * (6 * 256)  # 384 KiB
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = start_upload(srv.url, REPO, requests)
    sep = "&" if "?" in loc else "?"

    def slowly():
        for i in range(0, len(data), 16 << 10):
            yield data[i:i + (16 << 10)]
            time.sleep(0.25)

    start = time.monotonic()
    r = requests.put(f"{loc}{sep}digest={digest}", data=slowly(), timeout=30,
                     headers={"Content-Type": "application/octet-stream"})
    took = time.monotonic() - start
    assert r.status_code == 201, r.text
    assert took >= 5.5, took
    assert requests.get(f"{srv.url}/v2/{REPO}/blobs/{digest}", timeout=5).content == data


def connection_census(debug_url: str, want: dict, limit_s: float = 10) -> dict:
    """`/debug/vars`' connection census once it has `want`'s values (bounded wait), so a test
    goes on when the server has read what was sent, not after a guessed sleep."""
    deadline = time.monotonic() + limit_s
    while True:
        census = requests.get(debug_url + "/debug/vars", timeout=5).json()["connections"]
        if all(census[k] == v for k, v in want.items()) or time.monotonic() > deadline:
            return census
        time.sleep(0.05)


def closed_counts(debug_url: str) -> dict:
    text = requests.get(debug_url + "/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line.startswith("berth_http_connections_refused_total "):
            out["refused"] = float(line.split()[1])
        elif line.startswith('berth_http_connections_closed_total{reason="'):
            out[line.split('"')[1]] = float(line.split()[1])
    return out


def test_connection_cap_refuses_then_sheds_idle(berth_factory):
    dport = free_port()
    srv = berth_factory(config=limits(maxconnections=4, timeouts={"header": "20s", "idle": "20s"},
                                      debug={"addr": f"127.0.0.1:{dport}"}))
    debug = f"http://127.0.0.1:{dport}"
    # The readiness probe's connection gone first: one still open and not yet idle when the
    # fourth connection below arrives gets that one refused (nothing idle to shed), as a run
    # of the whole suite once saw.
    assert connection_census(debug, {"open": 0})["open"] == 0
    # Four connections in the middle of a request head: busy, not idle.
    busy = [connect(srv) for _ in range(4)]
    for s in busy:
        s.sendall(b"GET /v2/ HTTP/1.1\r\n")
    census = connection_census(debug, {"open": 4, "active": 4})
    assert census == {"cap": 4, "open": 4, "active": 4}, census
    before = closed_counts(debug)
    extra = connect(srv)
    out, t = read_until_closed(extra, 3)
    status, headers, body = response(out)
    assert status == 503 and t < 1, (out, t)
    assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
    assert closed_counts(debug).get("refused", 0) - before.get("refused", 0) == 1
    for s in busy:
        s.close()
    assert connection_census(debug, {"open": 0})["open"] == 0
    # Four idle connections: a newcomer closes the one idle the longest and is served.
    idle = []
    for _ in range(4):
        idle.append(connect(srv))
        time.sleep(0.05)
    assert connection_census(debug, {"open": 4})["active"] == 0
    before = closed_counts(debug)
    assert requests.get(srv.url + "/v2/", timeout=3).status_code == 200
    out, t = read_until_closed(idle[0], 2)
    assert out == b"" and t < 1.5, "the longest-idle connection is shed"
    for s in idle[1:]:
        s.settimeout(0.05)
        with pytest.raises(socket.timeout):
            s.recv(1)  # still open
    assert closed_counts(debug).get("shed", 0) - before.get("shed", 0) == 1
    for s in idle[1:]:
        s.close()


def test_declared_length_over_the_cap_is_refused_at_once(berth_factory):
    srv = berth_factory(config=limits(timeouts={"bodystall": "10s"}))
    s = connect(srv)
    start = time.monotonic()
    s.sendall(f"PUT /v2/{REPO}/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: {MANIFEST}\r\n"
              f"Content-Length: 52428800\r\n\r\n".encode() + b"{" * 100)
    out, _ = read_until_closed(s, 5)
    status, headers, body = response(out)
    assert status == 413 and time.monotonic() - start < 2, out
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"


def test_parser_errors_have_json_bodies_and_many_headers_pass(berth_factory):
    srv = berth_factory(config=limits())
    many = {f"X-Proxy-{i}": "v" for i in range(500)}
    assert requests.get(srv.url + "/v2/", headers=many, timeout=5).status_code == 200
    cases = [
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(1500)) + b"\r\n", 431),
        (b"GET /v2/" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ]
    for raw, want in cases:
        s = connect(srv)
        s.sendall(raw)
        out, _ = read_until_closed(s, 3)
        status, headers, body = response(out)
        assert status == want, out[:300]
        assert headers["content-type"] == "application/json"
        assert int(headers["content-length"]) == len(body)
        assert json.loads(body)["errors"][0]["code"] == "SIZE_INVALID"


# The manifest budget (64 MiB by default) plus the process's own growth under 100 connections.
STALL_BOUND_MIB = 64 + 48


def test_stalled_8mib_manifest_puts_keep_memory_bounded(berth_factory):
    """100 connections send all but the last 100 bytes of an 8 MiB manifest and stall. RSS stays
    under idle + STALL_BOUND_MIB, and after they close comes back within 2x of idle."""
    srv = berth_factory(config=limits(timeouts={"bodystall": "30s"}))
    pid = srv.proc.pid
    requests.get(srv.url + "/v2/", timeout=2)
    idle = rss_mib(pid)
    length = 8384512
    chunk = b" " * (1 << 20)
    socks, peak = [], idle
    status = {}

    def stall(i):
        s = connect(srv, timeout=20)
        socks.append(s)
        try:
            s.sendall(f"PUT /v2/{REPO}/manifests/t{i} HTTP/1.1\r\nHost: x\r\nContent-Type: {MANIFEST}\r\n"
                      f"Content-Length: {length}\r\n\r\n".encode())
            left = length - 100
            while left > 0:
                n = min(left, len(chunk))
                s.sendall(chunk[:n])
                left -= n
        except OSError:
            pass  # refused over the budget: answered 503 and closed
        s.settimeout(0.5)
        try:
            status[i] = response(s.recv(4096))[0]
        except (socket.timeout, OSError, IndexError, ValueError):
            status[i] = None  # still stalled, holding its share of the budget

    threads = [threading.Thread(target=stall, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        peak = max(peak, rss_mib(pid))
        time.sleep(0.05)
    for t in threads:
        t.join(1)
    peak = max(peak, rss_mib(pid))
    held = sum(1 for v in status.values() if v is None)
    refused = sum(1 for v in status.values() if v == 503)
    assert held + refused == 100 and 1 <= held <= 8, status
    # A normal manifest PUT still gets a clear answer meanwhile (503 while the budget is full).
    r = requests.put(f"{srv.url}/v2/{REPO}/manifests/x", data=b"{}", headers={"Content-Type": MANIFEST}, timeout=5)
    assert r.status_code in (400, 503), r.text
    assert peak < idle + STALL_BOUND_MIB, (idle, peak)
    for s in socks:
        s.close()
    end = time.monotonic() + 10
    after = rss_mib(pid)
    while after > 2 * idle and time.monotonic() < end:
        time.sleep(0.2)
        after = rss_mib(pid)
    print(f"RSS idle {idle:.1f} MiB, peak {peak:.1f} MiB, after {after:.1f} MiB")
    assert after <= 2 * idle, (idle, peak, after)


def heap_in_use(debug_url: str) -> int:
    """Bytes the registry's allocator has handed out and not had back (`/debug/heapstats`):
    unlike RSS, blind to freed memory the allocator keeps."""
    return requests.get(debug_url + "/debug/heapstats", timeout=10).json()["in_use_bytes"]


def test_downloads_no_one_reads_hold_no_thread_and_little_memory(berth_factory):
    """A thread per stalled download (the filesystem reader waiting for room) let 512 stalled
    clients take tokio's whole blocking pool: every filesystem operation of the registry then
    waited for `bodystall` to cut them. And each held about 1 MiB of chunks read ahead, for as
    long as its client kept the connection: 1,000 such clients, 1 GiB. 600 clients ask for a
    4 MiB blob and read nothing: a fresh download is served at once, and each holds less than
    a quarter of that. (A reading parked and taken up again: the unit tests of
    `storage::file_stream`.)"""
    dport = free_port()
    srv = berth_factory(config=limits(timeouts={"bodystall": "60s"}, maxconnections=1000,
                                      debug={"addr": f"127.0.0.1:{dport}"}))
    debug_url = f"http://127.0.0.1:{dport}"
    data = bytes(range(256)) * (16 << 10)
    digest = push_blob(srv.url, REPO, data)
    request = f"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    stalled = []
    try:
        before = heap_in_use(debug_url)
        for _ in range(600):
            s = connect(srv)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(request)
            stalled.append(s)
        time.sleep(1)
        started = time.monotonic()
        r = requests.get(f"{srv.url}/v2/{REPO}/blobs/{digest}", timeout=20)
        assert r.status_code == 200 and r.content == data
        assert time.monotonic() - started < 5, time.monotonic() - started
        # Measured: 750-1,060 KiB each before, about 180 KiB now (mostly the chunk its
        # connection is writing, the socket's buffers having taken the rest). At most, where the
        # socket takes less: hyper's write queue (128 KiB) and one more chunk (128 KiB) besides
        # the connection's own few tens of KiB.
        per_download = (heap_in_use(debug_url) - before) / len(stalled)
        assert per_download < 384 << 10, f"{per_download / 1024:.0f} KiB per stalled download"
    finally:
        for s in stalled:
            s.close()


def test_a_download_that_pauses_goes_on_where_it_stood(berth_factory):
    """A client that stops reading its download for a while and then reads on gets every byte
    once, in order: the filesystem reading let go of what it read ahead while it waited, and
    went on from the first byte the client had not taken."""
    srv = berth_factory(config=limits(timeouts={"bodystall": "60s"}))
    data = os.urandom(4 << 20)
    digest = push_blob(srv.url, REPO, data)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(20)
    s.connect(("127.0.0.1", srv.port))
    try:
        s.sendall(f"GET /v2/{REPO}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = b""
        while b"\r\n\r\n" not in got or len(got) < 200_000:
            got += s.recv(65536)
        head, body = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"content-length: {len(data)}".encode() in head.lower(), head
        # Far longer than the filesystem reader waits before it parks (50 ms).
        time.sleep(1)
        while len(body) < len(data):
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {len(body)} of {len(data)} bytes"
            body += chunk
        assert len(body) == len(data) and hashlib.sha256(body).hexdigest() == digest.split(":")[1]
    finally:
        s.close()


def test_uploads_that_stall_hold_no_thread(berth_factory):
    """The writer thread of an upload waiting for bytes that do not come was held until
    `bodystall`: 512 stalled uploads took tokio's whole blocking pool, and every filesystem
    operation (a blob GET, a new upload) waited. With 600 stalled, both are served at once; an
    upload whose client goes away while its writing is parked keeps what arrived."""
    srv = berth_factory(config=limits(timeouts={"bodystall": "60s"}, maxconnections=1000))
    data = bytes(range(256)) * 64
    digest = push_blob(srv.url, REPO, data)
    stalled = []
    try:
        for _ in range(600):
            stalled.append(stalled_patch(srv, 1000)[0])
        time.sleep(1)
        started = time.monotonic()
        r = requests.get(f"{srv.url}/v2/{REPO}/blobs/{digest}", timeout=20)
        assert r.status_code == 200 and r.content == data
        fresh = bytes(range(256)) * 65
        assert push_blob(srv.url, REPO, fresh) == "sha256:" + hashlib.sha256(fresh).hexdigest()
        assert time.monotonic() - started < 5, time.monotonic() - started
    finally:
        for s in stalled:
            s.close()
    # Cut while its writing is parked: the failed PATCH moved nothing (the upload is as it was,
    # empty), and the upload carries on from there.
    s, loc = stalled_patch(srv, 30_000)
    time.sleep(0.5)
    s.close()
    time.sleep(0.5)
    r = requests.get(loc, timeout=5)
    assert r.status_code == 204 and r.headers.get("Range") == "0-0", (r.status_code, r.headers)
    body = bytes(range(256)) * 66
    r = requests.patch(loc, data=body, timeout=10, headers={"Content-Type": "application/octet-stream",
                                                             "Content-Range": f"0-{len(body) - 1}"})
    assert r.status_code == 202, r.text
    done = r.headers["Location"]
    done = done if done.startswith("http") else srv.url + done
    sep = "&" if "?" in done else "?"
    want = "sha256:" + hashlib.sha256(body).hexdigest()
    assert requests.put(f"{done}{sep}digest={want}", timeout=10).status_code == 201
    assert requests.get(f"{srv.url}/v2/{REPO}/blobs/{want}", timeout=5).content == body
