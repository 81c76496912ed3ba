"""Tag listing (end-8a/8b) and the catalog, with n/last pagination and Link headers."""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlparse

from ocihelpers import OCI_MANIFEST, error_codes, make_image, push_manifest

REPO = "team/app"
LINK_RE = re.compile(r'^<([^>]+)>;\s*rel="?next"?$')


def _tag_all(berth, client, tags, repo=REPO):
    _, body = make_image(berth.url, repo, tags[0], [os.urandom(64)], session=client, return_body=True)
    for t in tags[1:]:
        r = push_manifest(berth.url, repo, t, body, OCI_MANIFEST, client)
        assert r.status_code == 201, r.text


def _next(resp) -> str | None:
    link = resp.headers.get("Link")
    if not link:
        return None
    m = LINK_RE.match(link.strip())
    assert m, f"malformed Link header {link!r}"
    return m.group(1)


def test_tags_are_listed_in_lexical_order(berth, client):
    tags = ["latest", "b", "a", "C", "1.0", "a-1", "a_1", "10", "2", "Z9", "v1.2.3", "_x"]
    _tag_all(berth, client, tags)
    r = client.get(f"{berth.url}/v2/{REPO}/tags/list")
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == REPO
    assert body["tags"] == sorted(tags)  # byte order


def test_tags_n_limits_and_link_points_to_next_page(berth, client):
    tags = [f"t{i:02d}" for i in range(7)]
    _tag_all(berth, client, tags)
    r = client.get(f"{berth.url}/v2/{REPO}/tags/list", params={"n": "3"})
    assert r.status_code == 200
    assert r.json()["tags"] == ["t00", "t01", "t02"]
    nxt = _next(r)
    assert nxt is not None
    q = parse_qs(urlparse(nxt).query)
    assert urlparse(nxt).path == f"/v2/{REPO}/tags/list"
    assert q["n"] == ["3"] and q["last"] == ["t02"]


def test_tags_pagination_walk_collects_every_tag_once(berth, client):
    tags = sorted(f"tag-{i:03d}" for i in range(11))
    _tag_all(berth, client, tags)
    seen, pages = [], 0
    url = f"{berth.url}/v2/{REPO}/tags/list?n=4"
    while url and pages < 10:
        r = client.get(url)
        assert r.status_code == 200
        page = r.json()["tags"]
        assert len(page) <= 4
        seen += page
        pages += 1
        nxt = _next(r)
        url = (berth.url + nxt if nxt.startswith("/") else nxt) if nxt else None
    assert seen == tags
    assert pages == 3


def test_tags_last_without_n(berth, client):
    _tag_all(berth, client, ["a", "b", "c", "d"])
    r = client.get(f"{berth.url}/v2/{REPO}/tags/list", params={"last": "b"})
    assert r.status_code == 200
    assert r.json()["tags"] == ["c", "d"]


def test_tags_last_page_has_no_link(berth, client):
    _tag_all(berth, client, ["a", "b"])
    r = client.get(f"{berth.url}/v2/{REPO}/tags/list", params={"n": "5"})
    assert r.json()["tags"] == ["a", "b"]
    assert "Link" not in r.headers
    r = client.get(f"{berth.url}/v2/{REPO}/tags/list", params={"n": "5", "last": "b"})
    assert r.status_code == 200
    assert not r.json().get("tags")


def test_tags_list_of_unknown_repository_is_404_name_unknown(berth, client):
    r = client.get(f"{berth.url}/v2/no/such/repo/tags/list")
    assert r.status_code == 404
    assert "NAME_UNKNOWN" in error_codes(r)


def test_tags_invalid_n_is_not_a_server_error(berth, client):
    _tag_all(berth, client, ["a"])
    r = client.get(f"{berth.url}/v2/{REPO}/tags/list", params={"n": "banana"})
    assert r.status_code in (200, 400)


def test_catalog_lists_repositories_sorted(berth, client):
    repos = ["zeta", "alpha/one", "alpha/two/three", "beta", "alpha"]
    for repo in repos:
        make_image(berth.url, repo, "latest", [os.urandom(16)], session=client)
    r = client.get(f"{berth.url}/v2/_catalog")
    assert r.status_code == 200
    assert r.json()["repositories"] == sorted(repos)


def test_catalog_pagination(berth, client):
    repos = sorted(f"repo{i}/img" for i in range(5))
    for repo in repos:
        make_image(berth.url, repo, "latest", [os.urandom(16)], session=client)
    r = client.get(f"{berth.url}/v2/_catalog", params={"n": "2"})
    assert r.status_code == 200
    assert r.json()["repositories"] == repos[:2]
    nxt = _next(r)
    assert nxt is not None
    q = parse_qs(urlparse(nxt).query)
    assert urlparse(nxt).path == "/v2/_catalog"
    assert q["n"] == ["2"] and q["last"] == [repos[1]]
    seen, url, pages = [], f"{berth.url}/v2/_catalog?n=2", 0
    while url and pages < 10:
        r = client.get(url)
        seen += r.json()["repositories"]
        pages += 1
        nxt = _next(r)
        url = (berth.url + nxt if nxt.startswith("/") else nxt) if nxt else None
    assert seen == repos
    r = client.get(f"{berth.url}/v2/_catalog", params={"last": repos[2]})
    assert r.json()["repositories"] == repos[3:]


def test_catalog_of_empty_registry(berth, client):
    r = client.get(f"{berth.url}/v2/_catalog")
    assert r.status_code == 200
    assert r.json().get("repositories") in ([], None)
