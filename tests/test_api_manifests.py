"""Manifests (end-3, end-7, end-9), content negotiation, referrers (end-12) and conditional writes."""

from __future__ import annotations

import json
import os

import pytest

from ocihelpers import (ALL_MANIFEST_TYPES, DOCKER_LIST, DOCKER_MANIFEST, EMPTY_JSON, OCI_EMPTY, OCI_INDEX,
                        OCI_MANIFEST, build_index, build_manifest, descriptor, error_codes, get_manifest,
                        image_config, make_image, push_blob, push_manifest, sha256, sha512, to_bytes)

REPO = "team/app"


def _image(berth, client, media_type=OCI_MANIFEST, tag=None, repo=REPO):
    return make_image(berth.url, repo, tag, [os.urandom(300)], media_type=media_type, session=client,
                      return_body=True)


def _push_kind(berth, client, kind, tag):
    """Push a manifest of `kind` tagged `tag`; returns (digest, body bytes, media type)."""
    if kind in (OCI_MANIFEST, DOCKER_MANIFEST):
        dgst, body = _image(berth, client, kind, tag)
        return dgst, body, kind
    child_type = OCI_MANIFEST if kind == OCI_INDEX else DOCKER_MANIFEST
    children = []
    for _ in range(2):
        _, body = _image(berth, client, child_type)
        children.append((body, child_type))
    idx = to_bytes(build_index(children, media_type=kind,
                               platforms=[{"architecture": "amd64", "os": "linux"},
                                          {"architecture": "arm64", "os": "linux"}]))
    r = push_manifest(berth.url, REPO, tag, idx, kind, client)
    assert r.status_code == 201, r.text
    return sha256(idx), idx, kind


KINDS = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST]
KIND_IDS = ["oci-manifest", "oci-index", "docker-manifest", "docker-list"]


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_manifest_put_get_head_delete_by_tag_and_digest(berth, client, kind):
    dgst, body, mt = _push_kind(berth, client, kind, "v1")
    base = f"{berth.url}/v2/{REPO}/manifests"
    for ref in ("v1", dgst):
        g = client.get(f"{base}/{ref}", headers={"Accept": mt})
        assert g.status_code == 200
        assert g.content == body
        assert g.headers["Content-Type"] == mt
        assert g.headers.get("Docker-Content-Digest") == dgst
        assert int(g.headers["Content-Length"]) == len(body)
        h = client.head(f"{base}/{ref}", headers={"Accept": mt})
        assert h.status_code == 200
        assert h.content == b""
        assert h.headers["Content-Type"] == mt
        assert h.headers.get("Docker-Content-Digest") == dgst
        assert int(h.headers["Content-Length"]) == len(body)
    d = client.delete(f"{base}/{dgst}")
    assert d.status_code == 202
    for ref in ("v1", dgst):
        g = client.get(f"{base}/{ref}", headers={"Accept": mt})
        assert g.status_code == 404
        assert "MANIFEST_UNKNOWN" in error_codes(g)
        assert client.head(f"{base}/{ref}", headers={"Accept": mt}).status_code == 404


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_manifest_put_answers_201_with_location_and_digest(berth, client, kind):
    if kind in (OCI_MANIFEST, DOCKER_MANIFEST):
        cfg, layer = image_config(), os.urandom(100)
        push_blob(berth.url, REPO, cfg, client)
        push_blob(berth.url, REPO, layer, client)
        body = to_bytes(build_manifest(cfg, [layer], media_type=kind))
    else:
        child_type = OCI_MANIFEST if kind == OCI_INDEX else DOCKER_MANIFEST
        _, child = _image(berth, client, child_type)
        body = to_bytes(build_index([(child, child_type)], media_type=kind))
    r = push_manifest(berth.url, REPO, "t", body, kind, client)
    assert r.status_code == 201, r.text
    assert r.headers.get("Docker-Content-Digest") == sha256(body)
    assert r.headers["Location"].endswith(f"/v2/{REPO}/manifests/{sha256(body)}") or \
        r.headers["Location"].endswith(f"/v2/{REPO}/manifests/t")


def test_manifest_put_by_digest(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client)
    push_blob(berth.url, REPO, layer, client)
    body = to_bytes(build_manifest(cfg, [layer]))
    r = push_manifest(berth.url, REPO, sha256(body), body, OCI_MANIFEST, client)
    assert r.status_code == 201
    assert get_manifest(berth.url, REPO, sha256(body), session=client).content == body
    # no tag was created
    tags = client.get(f"{berth.url}/v2/{REPO}/tags/list")
    assert tags.status_code in (200, 404)
    if tags.status_code == 200:
        assert not tags.json().get("tags")


def test_manifest_put_by_sha512_digest(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client)
    push_blob(berth.url, REPO, layer, client)
    body = to_bytes(build_manifest(cfg, [layer]))
    r = push_manifest(berth.url, REPO, sha512(body), body, OCI_MANIFEST, client)
    assert r.status_code == 201, r.text
    g = get_manifest(berth.url, REPO, sha512(body), session=client)
    assert g.status_code == 200 and g.content == body


def test_manifest_referencing_sha512_blobs(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client, algo="sha512")
    push_blob(berth.url, REPO, layer, client, algo="sha512")
    m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": descriptor("application/vnd.oci.image.config.v1+json", cfg, algo="sha512"),
         "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer, algo="sha512")]}
    r = push_manifest(berth.url, REPO, "sha512", m, OCI_MANIFEST, client)
    assert r.status_code == 201, r.text
    assert get_manifest(berth.url, REPO, "sha512", session=client).content == to_bytes(m)


def test_manifest_put_with_wrong_digest_is_digest_invalid_and_not_stored(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client)
    push_blob(berth.url, REPO, layer, client)
    body = to_bytes(build_manifest(cfg, [layer]))
    wrong = sha256(b"not the manifest")
    r = push_manifest(berth.url, REPO, wrong, body, OCI_MANIFEST, client)
    assert r.status_code == 400
    assert "DIGEST_INVALID" in error_codes(r)
    assert get_manifest(berth.url, REPO, wrong, session=client).status_code == 404
    assert get_manifest(berth.url, REPO, sha256(body), session=client).status_code == 404


def test_manifest_with_missing_layer_is_manifest_blob_unknown(berth, client):
    cfg = image_config()
    push_blob(berth.url, REPO, cfg, client)
    missing = os.urandom(100)
    body = to_bytes(build_manifest(cfg, [missing]))
    r = push_manifest(berth.url, REPO, "v1", body, OCI_MANIFEST, client)
    assert r.status_code == 400
    assert "MANIFEST_BLOB_UNKNOWN" in error_codes(r)
    assert get_manifest(berth.url, REPO, "v1", session=client).status_code == 404


def test_manifest_with_missing_config_is_manifest_blob_unknown(berth, client):
    layer = os.urandom(100)
    push_blob(berth.url, REPO, layer, client)
    body = to_bytes(build_manifest(image_config(), [layer]))
    r = push_manifest(berth.url, REPO, "v1", body, OCI_MANIFEST, client)
    assert r.status_code == 400
    assert "MANIFEST_BLOB_UNKNOWN" in error_codes(r)


def test_docker_manifest_with_missing_layer_is_manifest_blob_unknown(berth, client):
    cfg = image_config()
    push_blob(berth.url, REPO, cfg, client)
    body = to_bytes(build_manifest(cfg, [os.urandom(10)], media_type=DOCKER_MANIFEST))
    r = push_manifest(berth.url, REPO, "v1", body, DOCKER_MANIFEST, client)
    assert r.status_code == 400
    assert "MANIFEST_BLOB_UNKNOWN" in error_codes(r)


def test_blob_in_another_repository_does_not_satisfy_manifest(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, "other/repo", cfg, client)
    push_blob(berth.url, "other/repo", layer, client)
    body = to_bytes(build_manifest(cfg, [layer]))
    r = push_manifest(berth.url, REPO, "v1", body, OCI_MANIFEST, client)
    assert r.status_code == 400
    assert "MANIFEST_BLOB_UNKNOWN" in error_codes(r)


@pytest.mark.parametrize("kind", [OCI_INDEX, DOCKER_LIST], ids=["oci-index", "docker-list"])
def test_index_with_missing_child_is_refused(berth, client, kind):
    child_type = OCI_MANIFEST if kind == OCI_INDEX else DOCKER_MANIFEST
    _, present = _image(berth, client, child_type)
    cfg = image_config()
    absent = to_bytes(build_manifest(cfg, [b"never pushed"], media_type=child_type))
    idx = to_bytes(build_index([(present, child_type), (absent, child_type)], media_type=kind))
    r = push_manifest(berth.url, REPO, "multi", idx, kind, client)
    assert r.status_code == 400
    # distribution answers MANIFEST_BLOB_UNKNOWN for an index whose child manifest is missing
    assert "MANIFEST_BLOB_UNKNOWN" in error_codes(r)
    assert get_manifest(berth.url, REPO, "multi", session=client).status_code == 404


@pytest.mark.parametrize("body", [b"blablabla", b"{", b"[]", b'{"schemaVersion": 2, "mediaType": "'
                                  + OCI_MANIFEST.encode() + b'", "config": 5, "layers": []}',
                                  b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'"}'],
                         ids=["garbage", "truncated", "array", "config-not-object", "no-config"])
def test_invalid_manifest_is_manifest_invalid(berth, client, body):
    r = push_manifest(berth.url, REPO, "bad", body, OCI_MANIFEST, client)
    assert r.status_code == 400
    assert "MANIFEST_INVALID" in error_codes(r)
    assert get_manifest(berth.url, REPO, "bad", session=client).status_code == 404


def test_index_body_with_manifest_media_type_is_manifest_invalid(berth, client):
    _, child = _image(berth, client)
    idx = build_index([(child, OCI_MANIFEST)])
    r = push_manifest(berth.url, REPO, "bad", idx, OCI_MANIFEST, client)
    assert r.status_code == 400
    assert "MANIFEST_INVALID" in error_codes(r)


def test_manifest_get_unknown_tag_is_404_manifest_unknown(berth, client):
    _image(berth, client, tag="exists")
    r = get_manifest(berth.url, REPO, "missing", session=client)
    assert r.status_code == 404
    assert "MANIFEST_UNKNOWN" in error_codes(r)
    r = get_manifest(berth.url, REPO, sha256(b"nope"), session=client)
    assert r.status_code == 404
    assert "MANIFEST_UNKNOWN" in error_codes(r)


def test_manifest_in_unknown_repository_is_404(berth, client):
    r = get_manifest(berth.url, "no/such/repo", "latest", session=client)
    assert r.status_code == 404
    assert set(error_codes(r)) & {"NAME_UNKNOWN", "MANIFEST_UNKNOWN"}


def test_delete_unknown_manifest_is_404(berth, client):
    _image(berth, client, tag="exists")
    r = client.delete(f"{berth.url}/v2/{REPO}/manifests/{sha256(b'nope')}")
    assert r.status_code == 404
    assert "MANIFEST_UNKNOWN" in error_codes(r)


def test_retag_moves_tag_and_keeps_old_digest(berth, client):
    d1, b1 = _image(berth, client, tag="latest")
    d2, b2 = _image(berth, client, tag="latest")
    g = get_manifest(berth.url, REPO, "latest", session=client)
    assert g.content == b2 and g.headers["Docker-Content-Digest"] == d2
    assert get_manifest(berth.url, REPO, d1, session=client).content == b1


def test_delete_by_tag_removes_only_the_tag(berth, client):
    dgst, body = _image(berth, client, tag="v1")
    r = push_manifest(berth.url, REPO, "v2", body, OCI_MANIFEST, client)
    assert r.status_code == 201
    d = client.delete(f"{berth.url}/v2/{REPO}/manifests/v1")
    assert d.status_code == 202
    assert get_manifest(berth.url, REPO, "v1", session=client).status_code == 404
    assert get_manifest(berth.url, REPO, "v2", session=client).content == body
    assert get_manifest(berth.url, REPO, dgst, session=client).content == body
    assert client.get(f"{berth.url}/v2/{REPO}/tags/list").json()["tags"] == ["v2"]


def test_delete_by_digest_removes_its_tags(berth, client):
    dgst, body = _image(berth, client, tag="v1")
    push_manifest(berth.url, REPO, "v2", body, OCI_MANIFEST, client)
    keep, _ = _image(berth, client, tag="keep")
    assert client.delete(f"{berth.url}/v2/{REPO}/manifests/{dgst}").status_code == 202
    for ref in ("v1", "v2", dgst):
        assert get_manifest(berth.url, REPO, ref, session=client).status_code == 404
    assert client.get(f"{berth.url}/v2/{REPO}/tags/list").json()["tags"] == ["keep"]


def test_four_mib_manifest_round_trips_byte_for_byte(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client)
    push_blob(berth.url, REPO, layer, client)
    m = build_manifest(cfg, [layer], annotations={"pad": ""})
    base = len(to_bytes(m))
    m["annotations"]["pad"] = "x" * (4 * 1024 * 1024 - base)
    body = to_bytes(m)
    assert len(body) == 4 * 1024 * 1024
    r = push_manifest(berth.url, REPO, "big", body, OCI_MANIFEST, client)
    assert r.status_code == 201, r.text[:500]
    assert r.headers.get("Docker-Content-Digest") == sha256(body)
    for ref in ("big", sha256(body)):
        g = get_manifest(berth.url, REPO, ref, session=client)
        assert g.status_code == 200
        assert g.content == body
    h = client.head(f"{berth.url}/v2/{REPO}/manifests/big", headers={"Accept": OCI_MANIFEST})
    assert int(h.headers["Content-Length"]) == len(body)


def test_manifest_bytes_are_not_reformatted(berth, client):
    """Whitespace, key order and unknown fields survive: the registry stores what it was given."""
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client)
    push_blob(berth.url, REPO, layer, client)
    m = build_manifest(cfg, [layer])
    m["zzUnknownField"] = {"nested": [1, 2, 3]}
    body = ("\n\n  " + json.dumps(m, indent=7, sort_keys=True) + "\n   ").encode()
    r = push_manifest(berth.url, REPO, "fmt", body, OCI_MANIFEST, client)
    assert r.status_code == 201, r.text
    assert get_manifest(berth.url, REPO, "fmt", session=client).content == body


def test_oci_manifest_without_media_type_field_uses_content_type(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client)
    push_blob(berth.url, REPO, layer, client)
    m = build_manifest(cfg, [layer])
    del m["mediaType"]
    r = push_manifest(berth.url, REPO, "nomt", m, OCI_MANIFEST, client)
    assert r.status_code == 201, r.text
    g = get_manifest(berth.url, REPO, "nomt", session=client)
    assert g.headers["Content-Type"] == OCI_MANIFEST


# ------------------------------------------------------------------------------ content negotiation

@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_accept_negotiation_returns_stored_type(berth, client, kind):
    dgst, body, mt = _push_kind(berth, client, kind, "v1")
    accepts = [mt, ", ".join(ALL_MANIFEST_TYPES), f"text/plain;q=0.1, {mt};q=0.9", "*/*"]
    for accept in accepts:
        for ref in ("v1", dgst):
            g = client.get(f"{berth.url}/v2/{REPO}/manifests/{ref}", headers={"Accept": accept})
            assert g.status_code == 200, (accept, g.text)
            assert g.headers["Content-Type"] == mt
            assert g.content == body
    # the stored type listed after another one
    g = client.get(f"{berth.url}/v2/{REPO}/manifests/v1", headers={"Accept": f"application/json, {mt}"})
    assert g.status_code == 200 and g.content == body


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_manifest_never_served_under_another_type(berth, client, kind):
    """When Accept does not list the stored type, a GET *by digest* either refuses (404/406) or serves
    the stored bytes with the stored Content-Type: content fetched by digest must hash to that digest.
    By tag, a registry may pick another document (distribution resolves lists to a platform), but what
    it serves must still match its Docker-Content-Digest."""
    dgst, body, mt = _push_kind(berth, client, kind, "v1")
    for other in (t for t in ALL_MANIFEST_TYPES if t != mt):
        g = client.get(f"{berth.url}/v2/{REPO}/manifests/{dgst}", headers={"Accept": other})
        assert g.status_code in (200, 404, 406), (other, g.status_code)
        if g.status_code == 200:
            assert sha256(g.content) == dgst, f"by digest with Accept {other}: served another document"
            assert g.headers["Content-Type"] == mt
        t = client.get(f"{berth.url}/v2/{REPO}/manifests/v1", headers={"Accept": other})
        assert t.status_code in (200, 404, 406), (other, t.status_code)
        if t.status_code == 200:
            assert sha256(t.content) == t.headers["Docker-Content-Digest"]


# ------------------------------------------------------------------------------ conditional writes

def _cfg_layer(berth, client):
    cfg, layer = image_config(), os.urandom(100)
    push_blob(berth.url, REPO, cfg, client)
    push_blob(berth.url, REPO, layer, client)
    return to_bytes(build_manifest(cfg, [layer]))


def test_if_none_match_star_refuses_existing_tag(berth, client):
    first, second = _cfg_layer(berth, client), _cfg_layer(berth, client)
    r = push_manifest(berth.url, REPO, "ci", first, OCI_MANIFEST, client, headers={"If-None-Match": "*"})
    assert r.status_code == 201, r.text
    r = push_manifest(berth.url, REPO, "ci", second, OCI_MANIFEST, client, headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert get_manifest(berth.url, REPO, "ci", session=client).content == first
    # an unconditional PUT still overwrites
    r = push_manifest(berth.url, REPO, "ci", second, OCI_MANIFEST, client)
    assert r.status_code == 201
    assert get_manifest(berth.url, REPO, "ci", session=client).content == second


def test_if_match_put_succeeds_only_on_current_digest(berth, client):
    a, b, c = (_cfg_layer(berth, client) for _ in range(3))
    assert push_manifest(berth.url, REPO, "ci", a, OCI_MANIFEST, client).status_code == 201
    r = push_manifest(berth.url, REPO, "ci", b, OCI_MANIFEST, client, headers={"If-Match": f'"{sha256(a)}"'})
    assert r.status_code == 201, r.text
    # a is stale now
    r = push_manifest(berth.url, REPO, "ci", c, OCI_MANIFEST, client, headers={"If-Match": f'"{sha256(a)}"'})
    assert r.status_code == 412
    g = get_manifest(berth.url, REPO, "ci", session=client)
    assert g.content == b and g.headers["Docker-Content-Digest"] == sha256(b)


def test_if_match_put_on_missing_tag_is_412(berth, client):
    a = _cfg_layer(berth, client)
    r = push_manifest(berth.url, REPO, "nothere", a, OCI_MANIFEST, client,
                      headers={"If-Match": f'"{sha256(a)}"'})
    assert r.status_code == 412
    assert get_manifest(berth.url, REPO, "nothere", session=client).status_code == 404


def test_if_match_delete(berth, client):
    a, b = _cfg_layer(berth, client), _cfg_layer(berth, client)
    assert push_manifest(berth.url, REPO, "ci", a, OCI_MANIFEST, client).status_code == 201
    r = client.delete(f"{berth.url}/v2/{REPO}/manifests/ci", headers={"If-Match": f'"{sha256(b)}"'})
    assert r.status_code == 412
    assert get_manifest(berth.url, REPO, "ci", session=client).content == a
    r = client.delete(f"{berth.url}/v2/{REPO}/manifests/ci", headers={"If-Match": f'"{sha256(a)}"'})
    assert r.status_code == 202
    assert get_manifest(berth.url, REPO, "ci", session=client).status_code == 404


# ------------------------------------------------------------------------------ referrers

def _subject(berth, client):
    dgst, body = _image(berth, client, tag="app")
    return {"mediaType": OCI_MANIFEST, "digest": dgst, "size": len(body)}


def _artifact(berth, client, subject, artifact_type=None, config_type=None, annotations=None):
    push_blob(berth.url, REPO, EMPTY_JSON, client)
    payload = os.urandom(50)
    push_blob(berth.url, REPO, payload, client)
    if artifact_type:
        m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
             "config": descriptor(OCI_EMPTY, EMPTY_JSON),
             "layers": [descriptor("application/octet-stream", payload)], "subject": subject}
    else:
        m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor(config_type, payload),
             "layers": [descriptor(OCI_EMPTY, EMPTY_JSON)], "subject": subject}
    if annotations:
        m["annotations"] = annotations
    body = to_bytes(m)
    r = push_manifest(berth.url, REPO, sha256(body), body, OCI_MANIFEST, client)
    assert r.status_code == 201, r.text
    assert r.headers.get("OCI-Subject") == subject["digest"]
    return sha256(body), body


def test_put_with_subject_answers_oci_subject_header(berth, client):
    subject = _subject(berth, client)
    _artifact(berth, client, subject, artifact_type="application/vnd.example.sbom")


def test_put_without_subject_has_no_oci_subject_header(berth, client):
    body = _cfg_layer(berth, client)
    r = push_manifest(berth.url, REPO, "plain", body, OCI_MANIFEST, client)
    assert r.status_code == 201
    assert "OCI-Subject" not in r.headers


def test_referrers_lists_descriptors_with_artifact_type_and_annotations(berth, client):
    subject = _subject(berth, client)
    d1, b1 = _artifact(berth, client, subject, artifact_type="application/vnd.example.sbom",
                       annotations={"org.example.k": "v1"})
    d2, b2 = _artifact(berth, client, subject, config_type="application/vnd.example.sig")
    r = client.get(f"{berth.url}/v2/{REPO}/referrers/{subject['digest']}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    idx = r.json()
    assert idx["schemaVersion"] == 2
    assert idx.get("mediaType") == OCI_INDEX
    by_digest = {m["digest"]: m for m in idx["manifests"]}
    assert set(by_digest) == {d1, d2}
    assert by_digest[d1]["artifactType"] == "application/vnd.example.sbom"
    assert by_digest[d1]["annotations"] == {"org.example.k": "v1"}
    assert by_digest[d1]["size"] == len(b1)
    assert by_digest[d1]["mediaType"] == OCI_MANIFEST
    # without artifactType, the config media type is the artifact type
    assert by_digest[d2]["artifactType"] == "application/vnd.example.sig"
    assert by_digest[d2]["size"] == len(b2)


def test_referrers_artifact_type_filter(berth, client):
    subject = _subject(berth, client)
    sbom, _ = _artifact(berth, client, subject, artifact_type="application/vnd.example.sbom")
    _artifact(berth, client, subject, artifact_type="application/vnd.example.sig")
    r = client.get(f"{berth.url}/v2/{REPO}/referrers/{subject['digest']}",
                   params={"artifactType": "application/vnd.example.sbom"})
    assert r.status_code == 200
    assert r.headers.get("OCI-Filters-Applied") == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom]
    r = client.get(f"{berth.url}/v2/{REPO}/referrers/{subject['digest']}",
                   params={"artifactType": "application/vnd.example.none"})
    assert r.status_code == 200
    assert r.json()["manifests"] == []
    unfiltered = client.get(f"{berth.url}/v2/{REPO}/referrers/{subject['digest']}")
    assert "OCI-Filters-Applied" not in unfiltered.headers
    assert len(unfiltered.json()["manifests"]) == 2


def test_referrers_index_as_referrer(berth, client):
    subject = _subject(berth, client)
    _, child = _image(berth, client)
    idx = build_index([(child, OCI_MANIFEST)], subject=subject, artifact_type="application/vnd.example.bundle")
    body = to_bytes(idx)
    r = push_manifest(berth.url, REPO, sha256(body), body, OCI_INDEX, client)
    assert r.status_code == 201, r.text
    assert r.headers.get("OCI-Subject") == subject["digest"]
    refs = client.get(f"{berth.url}/v2/{REPO}/referrers/{subject['digest']}").json()["manifests"]
    assert [(m["digest"], m["mediaType"], m.get("artifactType")) for m in refs] == \
        [(sha256(body), OCI_INDEX, "application/vnd.example.bundle")]


def test_referrers_drop_deleted_referrer(berth, client):
    subject = _subject(berth, client)
    d1, _ = _artifact(berth, client, subject, artifact_type="application/vnd.example.a")
    d2, _ = _artifact(berth, client, subject, artifact_type="application/vnd.example.b")
    assert client.delete(f"{berth.url}/v2/{REPO}/manifests/{d1}").status_code == 202
    refs = client.get(f"{berth.url}/v2/{REPO}/referrers/{subject['digest']}").json()["manifests"]
    assert [m["digest"] for m in refs] == [d2]


def test_referrers_are_per_repository(berth, client):
    subject = _subject(berth, client)
    _artifact(berth, client, subject, artifact_type="application/vnd.example.a")
    make_image(berth.url, "other/repo", "x", session=client)
    r = client.get(f"{berth.url}/v2/other/repo/referrers/{subject['digest']}")
    assert r.status_code == 200
    assert r.json()["manifests"] == []


def test_referrers_with_malformed_digest_is_400(berth, client):
    _subject(berth, client)
    r = client.get(f"{berth.url}/v2/{REPO}/referrers/sha256:nothex")
    assert r.status_code == 400
    assert "DIGEST_INVALID" in error_codes(r)


def test_subject_manifest_may_be_absent(berth, client):
    missing = {"mediaType": OCI_MANIFEST, "digest": sha256(b"not pushed"), "size": 10}
    d, _ = _artifact(berth, client, missing, artifact_type="application/vnd.example.a")
    refs = client.get(f"{berth.url}/v2/{REPO}/referrers/{missing['digest']}").json()["manifests"]
    assert [m["digest"] for m in refs] == [d]
