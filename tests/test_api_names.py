"""Repository names, tags and digests that are malformed: 400 with the spec's error code, never a 500,
and nothing touches storage. Paths are sent byte for byte (requests would normalise `..`)."""

from __future__ import annotations

import os

import pytest

from ocihelpers import (OCI_MANIFEST, build_manifest, image_config, make_image, push_blob, raw_error_codes,
                        raw_request, sha256, to_bytes)

BAD_NAMES = {
    "dotdot-slash": "../escape",
    "dotdot-inside": "a/../b",
    "dotdot-end": "a/..",
    "dot-component": "a/./b",
    "uppercase": "Team/App",
    "empty-component": "a//b",
    "leading-separator": "-a",
    "trailing-separator": "a-",
    "trailing-slash-in-name": "a/b/",
    "too-long-component": "x" * 256,
    "too-long-total": "a/" + "b" * 254,
    "encoded-dotdot": "a/%2e%2e/b",
    "encoded-slash": "a%2fb",
    "space": "a%20b",
}


def _endpoints(name: str, dgst: str):
    """(method, path, body) for every endpoint that carries a name."""
    return [
        ("GET", f"/v2/{name}/tags/list", None),
        ("GET", f"/v2/{name}/manifests/latest", None),
        ("HEAD", f"/v2/{name}/manifests/latest", None),
        ("PUT", f"/v2/{name}/manifests/latest", b"{}"),
        ("DELETE", f"/v2/{name}/manifests/{dgst}", None),
        ("GET", f"/v2/{name}/blobs/{dgst}", None),
        ("HEAD", f"/v2/{name}/blobs/{dgst}", None),
        ("DELETE", f"/v2/{name}/blobs/{dgst}", None),
        ("POST", f"/v2/{name}/blobs/uploads/", None),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={dgst}", b"x"),
        ("GET", f"/v2/{name}/referrers/{dgst}", None),
    ]


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_bad_name_is_400_name_invalid_everywhere(berth, name):
    dgst = sha256(b"x")
    for method, path, body in _endpoints(name, dgst):
        status, headers, data = raw_request(berth.url, method, path, body,
                                            {"Content-Type": OCI_MANIFEST} if body else {})
        assert status == 400, (method, path, status, data[:200])
        if method != "HEAD":
            assert "NAME_INVALID" in raw_error_codes(data), (method, path, data[:200])


def test_bad_names_leave_storage_untouched(berth):
    if berth.root is None:
        pytest.skip("no filesystem root")
    for name in BAD_NAMES.values():
        raw_request(berth.url, "POST", f"/v2/{name}/blobs/uploads/?digest={sha256(b'x')}", b"x")
    repos = berth.root / "docker" / "registry" / "v2" / "repositories"
    found = sorted(str(p.relative_to(berth.root)) for p in repos.rglob("*")) if repos.exists() else []
    assert found == []
    # nothing escaped the root either
    assert not (berth.root.parent / "escape").exists()


def test_name_of_255_characters_is_accepted(berth, client):
    name = "/".join(["a" * 50] * 4) + "/" + "b" * 51
    assert len(name) == 255
    dgst = push_blob(berth.url, name, b"long name", client)
    assert client.get(f"{berth.url}/v2/{name}/blobs/{dgst}").content == b"long name"


@pytest.mark.parametrize("name", ["a", "a/b/c/d", "a.b", "a_b", "a__b", "a-b", "a---b", "0/1", "x.y-z_w/q"])
def test_valid_names_are_accepted(berth, client, name):
    make_image(berth.url, name, "v1", [b"layer"], session=client)
    r = client.get(f"{berth.url}/v2/{name}/tags/list")
    assert r.status_code == 200
    assert r.json()["name"] == name


@pytest.mark.parametrize("tag", [".hidden", "-dash", "a" * 129, "t%21"], ids=["dot", "dash", "129chars", "bang"])
def test_invalid_tag_on_put_is_400(berth, client, tag):
    cfg, layer = image_config(), b"layer"
    push_blob(berth.url, "team/app", cfg, client)
    push_blob(berth.url, "team/app", layer, client)
    body = to_bytes(build_manifest(cfg, [layer]))
    status, _, data = raw_request(berth.url, "PUT", f"/v2/team/app/manifests/{tag}", body,
                                  {"Content-Type": OCI_MANIFEST})
    assert status == 400, data[:200]
    assert raw_error_codes(data), data[:200]


def test_tag_of_128_characters_is_accepted(berth, client):
    tag = "A" + "b" * 127
    make_image(berth.url, "team/app", tag, [b"layer"], session=client)
    assert client.get(f"{berth.url}/v2/team/app/manifests/{tag}",
                      headers={"Accept": OCI_MANIFEST}).status_code == 200


BAD_DIGESTS = {
    "short-hex": "sha256:abc",
    "non-hex": "sha256:" + "g" * 64,
    "uppercase-hex": "sha256:" + "A" * 64,
    "long-hex": "sha256:" + "a" * 65,
    "sha512-short": "sha512:" + "a" * 64,
    "unknown-algorithm": "md5:" + "a" * 32,
    "empty-hex": "sha256:",
    "totallywrong": "sha256:totallywrong",
}


@pytest.mark.parametrize("bad", list(BAD_DIGESTS.values()), ids=list(BAD_DIGESTS))
def test_malformed_digest_is_400_digest_invalid_everywhere(berth, client, bad):
    repo = "team/app"
    make_image(berth.url, repo, "v1", [b"layer"], session=client)
    loc_r = client.post(f"{berth.url}/v2/{repo}/blobs/uploads/")
    loc = loc_r.headers["Location"]
    loc_path = loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc_path else "?"
    cases = [
        ("GET", f"/v2/{repo}/blobs/{bad}", None),
        ("HEAD", f"/v2/{repo}/blobs/{bad}", None),
        ("DELETE", f"/v2/{repo}/blobs/{bad}", None),
        ("GET", f"/v2/{repo}/manifests/{bad}", None),
        ("HEAD", f"/v2/{repo}/manifests/{bad}", None),
        ("DELETE", f"/v2/{repo}/manifests/{bad}", None),
        ("PUT", f"/v2/{repo}/manifests/{bad}", b"{}"),
        ("POST", f"/v2/{repo}/blobs/uploads/?digest={bad}", b"data"),
        ("PUT", f"{loc_path}{sep}digest={bad}", b"data"),
        ("GET", f"/v2/{repo}/referrers/{bad}", None),
    ]
    for method, path, body in cases:
        status, _, data = raw_request(berth.url, method, path, body,
                                      {"Content-Type": "application/octet-stream"} if body else {})
        assert status == 400, (method, path, status, data[:200])
        if method != "HEAD":
            assert "DIGEST_INVALID" in raw_error_codes(data), (method, path, data[:200])


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "a" * 32, "garbage"])
def test_mount_with_malformed_digest_falls_back_or_refuses(berth, client, bad):
    """The spec: a mount with an invalid digest falls back to a 202 upload session; a 400
    DIGEST_INVALID is also a clean answer. Never a 500 or a 201."""
    push_blob(berth.url, "src/repo", b"x", client)
    status, headers, data = raw_request(berth.url, "POST", f"/v2/dst/repo/blobs/uploads/?mount={bad}&from=src/repo")
    assert status in (202, 400), data[:200]
    if status == 400:
        assert "DIGEST_INVALID" in raw_error_codes(data)


def test_unknown_route_is_404_not_500(berth):
    for path in ("/v2/team/app/nonsense", "/v3/", "/v2/team/app/blobs/"):
        status, _, _ = raw_request(berth.url, "GET", path)
        assert status in (400, 404, 405), (path, status)
