"""Replicas: two Berth processes serving one storage (the same directory, or the same bucket and
prefix), as behind a load balancer. A tag write that depends on where the tag points (a
client's `If-None-Match: *` or `If-Match`, an admission policy) moves the tag by
compare-and-swap in storage, so of writes racing through different replicas exactly one lands,
as within one process. Before, each process serialised only its own writes, and every replica
let one through."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest
import requests

from harness import object_store_config, start_berth
from ocihelpers import OCI_MANIFEST, build_manifest, error_codes, image_config, push_blob, sha256, to_bytes
from test_admission import admission_config, components  # noqa: F401  (a fixture)

# Writes racing to one tag, spread over the two replicas.
RACERS = 12


def storage_config(kind: str, shared) -> dict:
    if kind == "filesystem":
        return {"storage": {"filesystem": {"rootdirectory": str(shared)}}}
    storage = object_store_config(kind, shared)
    storage["redirect"] = {"disable": True}
    return {"storage": storage}


def replicas(tmp_path, kind: str, extra: dict | None = None):
    cfg = storage_config(kind, tmp_path / "shared")
    cfg.update(extra or {})
    return [start_berth(tmp_path / name, root=tmp_path / "shared", config=cfg) for name in ("a", "b")]


def manifests(url: str, repo: str, n: int) -> list[bytes]:
    """`n` distinct image manifests whose blobs are pushed (through one replica: storage is
    shared)."""
    out = []
    s = requests.Session()
    for i in range(n):
        config, layer = image_config(f"replica-{i}"), f"layer {i}".encode() * 8
        push_blob(url, repo, config, s)
        push_blob(url, repo, layer, s)
        out.append(to_bytes(build_manifest(config, [layer])))
    return out


def race(servers, repo: str, tag: str, bodies: list[bytes], headers: dict) -> list[requests.Response]:
    """PUTs each body to `tag` at once, alternating replicas."""
    start = threading.Barrier(len(bodies))

    def put(i: int) -> requests.Response:
        start.wait(timeout=30)
        return requests.put(f"{servers[i % 2].url}/v2/{repo}/manifests/{tag}", data=bodies[i],
                            headers={"Content-Type": OCI_MANIFEST, **headers}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(put, range(len(bodies))))


def target_everywhere(servers, repo: str, tag: str) -> set[str | None]:
    """Where `tag` points as each replica answers, once their caches (at most 1 s) caught up."""
    time.sleep(1.2)
    seen = set()
    for s in servers:
        r = requests.head(f"{s.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=10)
        seen.add(r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None)
    return seen


def only_winner(responses: list[requests.Response], loser_status: int, loser_code: str) -> int:
    statuses = [r.status_code for r in responses]
    winners = [i for i, s in enumerate(statuses) if s == 201]
    assert len(winners) == 1, statuses
    for r in responses:
        if r.status_code != 201:
            assert r.status_code == loser_status and error_codes(r) == [loser_code], (r.status_code, r.text)
    return winners[0]


@pytest.mark.parametrize("kind", ["filesystem", "s3", "azure"])
def test_conditional_tag_writes_racing_through_two_replicas_let_exactly_one_through(tmp_path, kind):
    servers = replicas(tmp_path, kind)
    try:
        bodies = manifests(servers[0].url, "team/app", RACERS)
        # Rounds on fresh tags: a race that one round happens not to provoke, the next may.
        for tag in ("v1", "v2", "v3"):
            created = race(servers, "team/app", tag, bodies, {"If-None-Match": "*"})
            first = only_winner(created, 412, "PRECONDITION_FAILED")
            assert target_everywhere(servers, "team/app", tag) == {sha256(bodies[first])}
            # Every other manifest, each on the condition that the tag is still where it is.
            rest = [b for i, b in enumerate(bodies) if i != first]
            moved = race(servers, "team/app", tag, rest, {"If-Match": f'"{sha256(bodies[first])}"'})
            second = only_winner(moved, 412, "PRECONDITION_FAILED")
            assert target_everywhere(servers, "team/app", tag) == {sha256(rest[second])}
        # A write without a condition is last-writer-wins, as in distribution.
        assert requests.put(f"{servers[1].url}/v2/team/app/manifests/v1", data=bodies[0],
                            headers={"Content-Type": OCI_MANIFEST}, timeout=30).status_code == 201
        assert target_everywhere(servers, "team/app", "v1") == {sha256(bodies[0])}
    finally:
        for s in servers:
            s.stop()


@pytest.mark.parametrize("kind", ["filesystem", "s3"])
def test_an_immutable_tag_pushed_through_two_replicas_at_once_takes_exactly_one(tmp_path, kind, components):  # noqa: F811
    cfg = admission_config(
        {"immutable": {"path": str(components["admission-immutable-tags"]), "config": {"protect.prod/**": "v*"}}},
        [("prod/**", ["immutable"])])
    servers = replicas(tmp_path, kind, cfg)
    try:
        bodies = manifests(servers[0].url, "prod/app", RACERS)
        for tag in ("v1.0", "v2.0", "v3.0"):
            pushed = race(servers, "prod/app", tag, bodies, {})
            winner = only_winner(pushed, 403, "DENIED")
            assert target_everywhere(servers, "prod/app", tag) == {sha256(bodies[winner])}
            for r in pushed:
                if r.status_code == 403:
                    assert "immutable" in r.json()["errors"][0]["message"], r.text
    finally:
        for s in servers:
            s.stop()


def test_replicas_with_notifications_each_need_an_outbox_of_their_own(tmp_path):
    from eventreceiver import Receiver

    rc = Receiver()
    endpoint = {"name": "audit", "url": rc.url, "backoff": "100ms"}
    # The default outbox lives beside the data: the second replica cannot share it, and says so.
    first = start_berth(tmp_path / "a", root=tmp_path / "shared",
                        config={"notifications": {"endpoints": [endpoint]}})
    try:
        with pytest.raises(RuntimeError) as refused:
            start_berth(tmp_path / "b", root=tmp_path / "shared", config={"notifications": {"endpoints": [endpoint]}})
        assert "is open in another process" in str(refused.value), refused.value
        assert "notifications.outbox.directory" in str(refused.value), refused.value
    finally:
        first.stop()
    # Each with its own: both deliver what they served.
    servers = [start_berth(tmp_path / name, root=tmp_path / "shared",
                           config={"notifications": {"endpoints": [endpoint],
                                                     "outbox": {"directory": str(tmp_path / name / "outbox")}}})
               for name in ("a", "b")]
    try:
        before = len(rc.events())
        for s in servers:
            s_body = manifests(s.url, "team/app", 1)[0]
            assert requests.put(f"{s.url}/v2/team/app/manifests/{s.port}", data=s_body,
                                headers={"Content-Type": OCI_MANIFEST}, timeout=30).status_code == 201
        want = sorted(str(s.port) for s in servers)
        deadline = time.monotonic() + 20
        while True:
            pushed = [e for e in rc.events()[before:] if e["action"] == "push" and e["target"].get("tag")]
            if len(pushed) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(e["target"]["tag"] for e in pushed) == want
        assert len({e["source"]["instanceID"] for e in pushed}) == 2
    finally:
        for s in servers:
            s.stop()
        rc.close()
