"""Notifications (`notifications.endpoints`, issue 11): events in distribution's envelope, from a
durable outbox, to webhooks and `notification-sink` plugins. Every test runs its own receiver on
loopback (tests/eventreceiver.py) and drives the real binary over HTTP."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import requests
import yaml

import ocihelpers as oh
from authhelpers import basic, write_htpasswd
from eventreceiver import Hung, Receiver, refused_url
from harness import free_port, need_plugin, start_berth, start_distribution
from test_tls import pki  # noqa: F401  (the fixture: a CA and a server certificate for 127.0.0.1)

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"


def endpoint(name: str, url: str, **kw) -> dict:
    e = {"name": name, "url": url, "timeout": "1s", "threshold": 3, "backoff": "200ms", "maxbackoff": "1s"}
    e.update(kw)
    return e


def start(tmp: Path, endpoints: list[dict], root: Path | None = None, extra: dict | None = None,
          **outbox) -> object:
    """A berth with these endpoints, its outbox in tmp/outbox and a debug port."""
    dport = free_port()
    cfg = {
        "http": {"debug": {"addr": f"127.0.0.1:{dport}", "prometheus": {"enabled": True, "path": "/metrics"}}},
        "notifications": {"endpoints": endpoints, "outbox": {"directory": str(tmp / "outbox"), **outbox}},
    }
    for k, v in (extra or {}).items():
        cfg[k] = v
    srv = start_berth(tmp, root=root, config=cfg)
    srv.debug_url = f"http://127.0.0.1:{dport}"
    return srv


def notif_vars(srv) -> dict:
    return requests.get(srv.debug_url + "/debug/vars", timeout=10).json()["notifications"]


def wait_vars(srv, name: str, pred, timeout: float = 15) -> dict:
    end = time.monotonic() + timeout
    while True:
        v = notif_vars(srv)["endpoints"][name]
        if pred(v):
            return v
        if time.monotonic() > end:
            raise AssertionError(f"endpoint {name} never reached the state: {v}")
        time.sleep(0.05)


def push_blobs(url: str, repo: str, n: int, size: int = 64) -> list[str]:
    """n monolithic blob pushes (one push event each); their digests in order."""
    out = []
    with requests.Session() as s:
        for i in range(n):
            data = f"{repo}-{i}-".encode() + b"x" * size
            d = oh.digest(data)
            r = s.post(f"{url}/v2/{repo}/blobs/uploads/", params={"digest": d}, data=data, timeout=30)
            assert r.status_code == 201, r.text
            out.append(d)
    return out


def scenario(url: str) -> str:
    """The same operations against any registry: push (blobs, manifest by tag), pull (GET and
    HEAD manifest, GET blob), mount, delete manifest by digest (its tag goes too), delete blob."""
    layer = b"layer-for-events" * 8
    d = oh.make_image(url, "a/repo", "v1", layers=[layer])
    assert oh.get_manifest(url, "a/repo", "v1").status_code == 200
    assert requests.head(f"{url}/v2/a/repo/manifests/v1", headers={"Accept": oh.OCI_MANIFEST}).status_code == 200
    ld = oh.digest(layer)
    assert requests.get(f"{url}/v2/a/repo/blobs/{ld}").status_code == 200
    assert requests.head(f"{url}/v2/a/repo/blobs/{ld}").status_code == 200
    assert requests.post(f"{url}/v2/b/repo/blobs/uploads/?mount={ld}&from=a/repo").status_code == 201
    assert requests.delete(f"{url}/v2/a/repo/manifests/{d}").status_code == 202
    assert requests.delete(f"{url}/v2/b/repo/blobs/{ld}").status_code == 202
    return d


def comparable(e: dict, origin: str) -> dict:
    """An event without what differs between two registries (ids, times, addresses)."""
    t = dict(e["target"])
    if "url" in t:
        assert t["url"].startswith(origin + "/v2/"), t["url"]
        t["url"] = t["url"][len(origin):]
    r = dict(e["request"])
    for k in ("id", "addr", "host"):
        assert r.pop(k)
    s = e["source"]
    assert set(s) == {"addr", "instanceID"}
    assert set(e) == {"id", "timestamp", "action", "target", "request", "actor", "source"}
    return {"action": e["action"], "target": t, "request": r, "actor": e["actor"]}


def test_envelope_is_distributions(tmp_path):
    """Golden test against distribution 2.8.2: the same operations give the same events, field
    for field (names, omissions, values), except that a HEAD is no pull (as the issue asks:
    distribution 2.8.2 reports HEADs as pulls too). Headers from the config are sent, and the
    envelope has distribution's media type."""
    got = {}
    for who in ("distribution", "berth"):
        rc = Receiver()
        ep = endpoint("r", rc.url, headers={"Authorization": ["Bearer sekrit"], "X-Multi": ["a", "b"]})
        if who == "berth":
            srv = start(tmp_path / who, [ep])
        else:
            srv = start_distribution(tmp_path / who, tmp_path / who / "data",
                                     config={"notifications": {"endpoints": [ep]}})
        try:
            digest = scenario(srv.url)
            want = 11 if who == "distribution" else 9
            events = rc.wait_for(want)
            time.sleep(0.3)
            assert len(rc.events()) == want, rc.events()
            h = rc.accepted[0]["headers"]
            assert h["Content-Type"] == MEDIA_TYPE
            assert h["Authorization"] == "Bearer sekrit"
            assert h.get_all("X-Multi") == ["a", "b"]
            got[who] = ([comparable(e, srv.url) for e in events], digest, events, srv)
            if who == "berth":
                tail = requests.get(srv.debug_url + "/debug/events?n=3", timeout=10).json()["events"]
                assert [e["id"] for e in tail] == [e["id"] for e in events[-3:]]
                assert {e["source"]["addr"] for e in events} == {f"{socket.gethostname()}:{srv.port}"}
        finally:
            srv.stop()
            rc.close()
    dist, ddigest, _, _ = got["distribution"]
    berth, bdigest, raw, _ = got["berth"]
    # distribution 2.8.2 also reports each HEAD (manifest and blob) as a pull.
    assert [e["request"]["method"] for e in dist].count("HEAD") == 2
    dist = [e for e in dist if e["request"]["method"] != "HEAD"]
    # Same image bytes but for the config's random seed: digests of the manifest differ.
    dist = json.loads(json.dumps(dist).replace(ddigest, "MANIFEST"))
    berth = json.loads(json.dumps(berth).replace(bdigest, "MANIFEST"))
    # The config blob differs (random), so compare it apart from its digest and size.
    for ev in (dist[0], berth[0]):
        for k in ("digest", "size", "length", "url"):
            ev["target"].pop(k)
    for ev in (dist[2], dist[3], berth[2], berth[3]):
        for k in ("size", "length"):
            ev["target"].pop(k)
    assert berth == dist
    assert [e["action"] for e in raw] == ["push", "push", "push", "pull", "pull", "mount", "delete", "delete", "delete"]
    assert all(e["actor"] == {} for e in raw)


def test_actor_and_ignore_rules(tmp_path):
    """The actor is the authenticated user; `ignore.actions`, `ignore.mediatypes` and
    `ignoredmediatypes` drop exactly what they name, per endpoint."""
    everything, no_pulls, no_blobs = Receiver(), Receiver(), Receiver()
    path = write_htpasswd(tmp_path / "htpasswd", {"alice": "pw-alice-1"})
    srv = start(tmp_path, [
        endpoint("all", everything.url),
        endpoint("nopulls", no_pulls.url, ignore={"actions": ["pull"]}),
        endpoint("noblobs", no_blobs.url, ignoredmediatypes=["application/octet-stream"],
                 ignore={"mediatypes": ["application/vnd.oci.image.manifest.v1+json"]}),
    ], extra={"auth": {"htpasswd": {"realm": "r", "path": str(path)}}})
    try:
        s = requests.Session()
        s.headers["Authorization"] = basic("alice", "pw-alice-1")
        oh.make_image(srv.url, "x/y", "t", layers=[b"l" * 10], session=s)
        oh.make_image(srv.url, "x/y", "d", layers=[b"m" * 10], media_type=oh.DOCKER_MANIFEST, session=s)
        assert oh.get_manifest(srv.url, "x/y", "t", session=s).status_code == 200
        assert s.get(f"{srv.url}/v2/x/y/blobs/{oh.digest(b'l' * 10)}").status_code == 200
        ev = everything.wait_for(8)
        assert [e["action"] for e in ev] == ["push"] * 6 + ["pull"] * 2
        assert {e["actor"]["name"] for e in ev} == {"alice"}
        np = no_pulls.wait_for(6)
        nb = no_blobs.wait_for(1)
        # The slowest receiver has had its share once the fastest has all; let stragglers land.
        time.sleep(0.5)
        np, nb = no_pulls.events(), no_blobs.events()
        assert [e["action"] for e in np] == ["push"] * 6
        assert [(e["action"], e["target"]["mediaType"]) for e in nb] == [("push", oh.DOCKER_MANIFEST)]
    finally:
        srv.stop()
        for r in (everything, no_pulls, no_blobs):
            r.close()


def test_failing_receiver_gets_everything_in_order_with_backoff(tmp_path):
    """A receiver that fails the first 4 deliveries: the first 3 are retried quickly, then the
    endpoint backs off (`backoff`, then doubled); afterwards every event arrives, in order,
    and none is sent again after it was accepted. /debug/vars and /metrics show it."""
    rc = Receiver(fail_first=4)
    srv = start(tmp_path, [endpoint("flaky", rc.url, threshold=3, backoff="400ms", maxbackoff="5s", batch=100)])
    try:
        digests = push_blobs(srv.url, "flaky/repo", 1)
        v = wait_vars(srv, "flaky", lambda v: v["consecutive_failures"] >= 3)
        assert v["last_error"] and "500" in v["last_error"], v
        assert v["delivered"] == 0 and v["pending"] >= 1
        digests += push_blobs(srv.url, "flaky/repo", 9)
        ev = rc.wait_for(10)
        time.sleep(0.3)
        ev = rc.events()
        assert [e["target"]["digest"] for e in ev] == digests
        assert len({e["id"] for e in ev}) == 10
        a = rc.attempts
        assert len(a) >= 5
        gaps = [b - x for x, b in zip(a, a[1:])]
        assert gaps[0] < 0.3 and gaps[1] < 0.3, gaps
        assert gaps[2] >= 0.35, gaps  # after the threshold: backoff
        assert gaps[3] >= 0.75, gaps  # then doubled
        v = wait_vars(srv, "flaky", lambda v: v["delivered"] == 10)
        assert v["pending"] == 0 and v["consecutive_failures"] == 0 and v["last_success"]
        m = requests.get(srv.debug_url + "/metrics", timeout=10).text
        assert 'berth_events_delivered_total{endpoint="flaky"} 10' in m, m
        assert 'berth_events_failed_total{endpoint="flaky"}' in m
    finally:
        srv.stop()
        rc.close()


def test_https_endpoint_trusts_its_cafile_only(tmp_path, pki):  # noqa: F811
    """An HTTPS receiver with a certificate from a private CA: delivered with `cafile`; without
    it (the system store) the certificate is refused and the events wait."""
    rc = Receiver(tls=(pki / "server.crt", pki / "server.key"))
    srv = start(tmp_path, [endpoint("tls", rc.url, cafile=str(pki / "ca.crt")),
                           endpoint("system", rc.url, threshold=1, backoff="100ms")])
    try:
        d = push_blobs(srv.url, "tls/repo", 2)
        assert [e["target"]["digest"] for e in rc.wait_for(2)] == d
        v = wait_vars(srv, "system", lambda v: v["failed"] > 0)
        assert "certificate" in v["last_error"].lower() or "issuer" in v["last_error"].lower(), v
        assert v["delivered"] == 0 and v["pending"] == 2
        assert len(rc.events()) == 2
    finally:
        srv.stop()
        rc.close()


def test_sigkill_with_undelivered_events_then_restart_delivers_all(tmp_path):
    """Events for a receiver that is down, the registry SIGKILLed: after a restart every
    acknowledged push arrives, in order (at least once)."""
    url = refused_url()
    port = int(url.split(":")[2].split("/")[0])
    ep = [endpoint("down", url, threshold=1, backoff="100ms", maxbackoff="200ms")]
    srv = start(tmp_path, ep)
    digests = push_blobs(srv.url, "kill/repo", 15)
    assert notif_vars(srv)["endpoints"]["down"]["pending"] == 15
    srv.kill()
    srv2 = start(tmp_path, ep, root=srv.root)
    rc = Receiver(port=port)
    try:
        ev = rc.wait_for(15)
        seen = [e["target"]["digest"] for e in ev]
        # At least once, in order: first occurrences are the pushes, in push order.
        first = list(dict.fromkeys(seen))
        assert first == digests
        wait_vars(srv2, "down", lambda v: v["pending"] == 0)
    finally:
        srv2.stop()
        rc.close()


def test_dead_endpoints_do_not_slow_pushes_or_each_other(tmp_path):
    """A hung endpoint (accepts, never answers) and a refused one beside a healthy one: pushes
    take about as long as with no notifications, and the healthy endpoint gets everything."""
    hung, rc = Hung(), Receiver()

    def timed(srv, repo):
        t = time.monotonic()
        push_blobs(srv.url, repo, 30)
        return time.monotonic() - t

    plain = start_berth(tmp_path / "plain")
    try:
        timed(plain, "warm/up")
        base = min(timed(plain, "p/a"), timed(plain, "p/b"))
    finally:
        plain.stop()
    srv = start(tmp_path / "ev", [
        endpoint("hung", hung.url, timeout="2s"),
        endpoint("refused", refused_url()),
        endpoint("healthy", rc.url),
    ])
    try:
        timed(srv, "warm/up")
        with_dead = min(timed(srv, "e/a"), timed(srv, "e/b"))
        # Bounded, not a benchmark: each push may pay its outbox sync, never a dead endpoint's
        # timeout (30 pushes x 2 s would be a minute).
        assert with_dead < base * 3 + 1.5, (with_dead, base)
        assert len(rc.wait_for(90)) == 90
        # The cursor moves once the receiver's answer is back, just after it has the events.
        wait_vars(srv, "healthy", lambda v: v["pending"] == 0)
        v = notif_vars(srv)["endpoints"]
        assert v["hung"]["delivered"] == 0 and v["refused"]["delivered"] == 0
    finally:
        srv.stop()
        hung.close()
        rc.close()


def test_outbox_bound_drops_oldest_and_counts(tmp_path):
    """An endpoint down while 12 events arrive with room for 5: exactly 7 dropped (the oldest),
    at the next commit, counted in /debug/vars and /metrics, and the newest 5 arrive in order once it is up."""
    url = refused_url()
    port = int(url.split(":")[2].split("/")[0])
    srv = start(tmp_path, [endpoint("small", url, threshold=1, backoff="100ms", maxbackoff="200ms")], maxevents=5)
    rc = None
    try:
        digests = push_blobs(srv.url, "bound/repo", 12)
        # The bound is applied when the outbox commits (within pullflush, 250 ms here); the
        # count must then stay exact, not overshoot.
        wait_vars(srv, "small", lambda v: v["dropped"] >= 7)
        time.sleep(0.5)
        v = notif_vars(srv)
        assert v["endpoints"]["small"]["dropped"] == 7
        assert v["outbox"]["events"] == 5
        m = requests.get(srv.debug_url + "/metrics", timeout=10).text
        assert 'berth_events_dropped_total{endpoint="small"} 7' in m
        rc = Receiver(port=port)
        ev = rc.wait_for(5)
        time.sleep(0.3)
        assert [e["target"]["digest"] for e in rc.events()] == digests[7:]
    finally:
        srv.stop()
        if rc:
            rc.close()


def plugin_entry(name: str, **kw) -> dict:
    e = {"path": str(need_plugin(name)), "deadline_ms": 1000}
    e.update(kw)
    return e


def test_cloudevents_plugin(tmp_path):
    """notify-cloudevents: a CloudEvents 1.0 structured document per event to the one address
    it was granted; the same plugin aimed at another address is refused the connection (the
    receiver there gets nothing, the events wait: nothing is lost)."""
    rc, other = Receiver(), Receiver()
    plugins = {
        "ce": plugin_entry("notify-cloudevents", config={"url": rc.url, "source": "/berth/test"},
                           grants={"network": [f"127.0.0.1:{rc.port}"]}),
        "ce-denied": plugin_entry("notify-cloudevents", config={"url": other.url},
                                  grants={"network": [f"127.0.0.1:{rc.port}"]}),
    }
    srv = start(tmp_path, [{"name": "ce", "plugin": "ce"},
                           {"name": "denied", "plugin": "ce-denied", "threshold": 1, "backoff": "100ms"}],
                extra={"plugins": plugins})
    try:
        d = oh.make_image(srv.url, "ce/repo", "v1", layers=[b"c" * 20])
        ev = rc.wait_for(3)
        h = rc.accepted[-1]["headers"]
        assert h["Content-Type"] == "application/cloudevents+json"
        last = ev[-1]
        for k in ("specversion", "type", "source", "id", "time", "datacontenttype", "data"):
            assert k in last, last
        assert last["specversion"] == "1.0"
        assert last["source"] == "/berth/test"
        assert last["type"] == "io.berth.registry.manifest.push"
        assert last["datacontenttype"] == "application/json"
        assert last["data"]["target"]["digest"] == d and last["data"]["target"]["tag"] == "v1"
        assert last["id"] == last["data"]["id"]
        assert [e["type"] for e in ev] == ["io.berth.registry.blob.push"] * 2 + ["io.berth.registry.manifest.push"]
        v = wait_vars(srv, "denied", lambda v: v["failed"] > 0 and v["last_error"])
        assert v["delivered"] == 0 and v["pending"] == 3, v
        assert other.events() == []
    finally:
        srv.stop()
        rc.close()
        other.close()


def test_file_plugin_writes_json_lines(tmp_path):
    """notify-file: every event a JSON line (the webhook's event) in its granted directory."""
    audit = tmp_path / "audit"
    plugins = {"audit": plugin_entry("notify-file", config={"path": "/audit/events.jsonl"},
                                     grants={"dirs": [{"host": str(audit), "guest": "/audit", "mode": "rw"}]})}
    srv = start(tmp_path, [{"name": "audit", "plugin": "audit"}], extra={"plugins": plugins})
    try:
        d = oh.make_image(srv.url, "f/repo", "v1", layers=[b"f" * 20])
        assert requests.delete(f"{srv.url}/v2/f/repo/manifests/{d}").status_code == 202
        wait_vars(srv, "audit", lambda v: v["delivered"] == 5)
        lines = (audit / "events.jsonl").read_text().splitlines()
        ev = [json.loads(x) for x in lines]
        assert [e["action"] for e in ev] == ["push", "push", "push", "delete", "delete"]
        assert ev[2]["target"]["digest"] == d and ev[4]["target"] == {"repository": "f/repo", "tag": "v1"}
    finally:
        srv.stop()


def test_reload_swaps_a_sink_plugin_with_its_new_configuration(tmp_path):
    """POST /admin/reload on the debug listener reloads sink plugins as it does every other
    kind: after the configuration names another file for notify-file, new events go there."""
    audit = tmp_path / "audit"
    plugins = {"audit": plugin_entry("notify-file", config={"path": "/audit/before.jsonl"},
                                     grants={"dirs": [{"host": str(audit), "guest": "/audit", "mode": "rw"}]})}
    srv = start(tmp_path, [{"name": "audit", "plugin": "audit"}], extra={"plugins": plugins})
    try:
        first = push_blobs(srv.url, "r/reload", 1)
        wait_vars(srv, "audit", lambda v: v["delivered"] == 1)
        cfg = yaml.safe_load(srv.config_path.read_text())
        cfg["plugins"]["audit"]["config"]["path"] = "/audit/after.jsonl"
        srv.config_path.write_text(yaml.safe_dump(cfg))
        r = requests.post(srv.debug_url + "/admin/reload", timeout=30)
        assert r.status_code == 200, r.text
        assert "notification-sink plugin" in r.json()["serving"], r.text
        second = push_blobs(srv.url, "r/reload", 1, size=65)
        wait_vars(srv, "audit", lambda v: v["delivered"] == 2)
        digests = lambda f: [json.loads(x)["target"]["digest"] for x in (audit / f).read_text().splitlines()]
        assert digests("before.jsonl") == first
        assert digests("after.jsonl") == second
    finally:
        srv.stop()


def test_hung_plugin_sink_is_a_retry_and_loses_nothing(tmp_path):
    """A sink plugin stuck past its deadline (its receiver never answers) is cut off and the
    batch retried: once the receiver answers, every event arrives."""
    hung = Hung()
    port = hung.port
    plugins = {"ce": plugin_entry("notify-cloudevents", deadline_ms=300, config={"url": hung.url},
                                  grants={"network": [f"127.0.0.1:{port}"]})}
    srv = start(tmp_path, [{"name": "ce", "plugin": "ce", "threshold": 1, "backoff": "100ms", "maxbackoff": "200ms"}],
                extra={"plugins": plugins})
    rc = None
    try:
        digests = push_blobs(srv.url, "h/repo", 3)
        v = wait_vars(srv, "ce", lambda v: v["failed"] > 0)
        assert "deadline" in (v["last_error"] or "").lower() or "time" in (v["last_error"] or "").lower(), v
        assert requests.get(srv.url + "/v2/", timeout=5).status_code == 200
        hung.close()
        rc = Receiver(port=port)
        ev = rc.wait_for(3)
        assert list(dict.fromkeys(e["data"]["target"]["digest"] for e in ev)) == digests
    finally:
        srv.stop()
        if rc:
            rc.close()


@pytest.mark.parametrize("mode", ["trap", "loop", "error"])
def test_hostile_sink_plugin_loses_nothing(tmp_path, mode):
    """A sink plugin that traps, spins past its deadline or answers an error on its first
    delivery: the registry keeps answering, the batch is retried, and every event lands, in
    order."""
    state = tmp_path / "state"
    plugins = {"bad": plugin_entry("hostile-notify", deadline_ms=300, config={"mode": mode},
                                   grants={"dirs": [{"host": str(state), "guest": "/state", "mode": "rw"}]})}
    srv = start(tmp_path, [{"name": "bad", "plugin": "bad", "threshold": 1, "backoff": "100ms", "maxbackoff": "200ms"}],
                extra={"plugins": plugins})
    try:
        digests = push_blobs(srv.url, "hostile/repo", 4)
        v = wait_vars(srv, "bad", lambda v: v["delivered"] >= 4)
        assert v["failed"] >= 1 and v["dropped"] == 0, v
        assert (state / "tripped").read_text() == mode
        lines = [json.loads(x) for x in (state / "events.jsonl").read_text().splitlines()]
        assert list(dict.fromkeys(e["target"]["digest"] for e in lines)) == digests
        assert requests.get(srv.url + "/v2/", timeout=5).status_code == 200
    finally:
        srv.stop()
