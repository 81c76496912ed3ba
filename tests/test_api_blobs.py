"""Base route, blobs and blob uploads (OCI distribution spec v1.1 end-1, end-2, end-4..6, end-10, end-11, end-13)."""

from __future__ import annotations

import os
import uuid

import pytest

from ocihelpers import (absolute, error_codes, hex_of, push_blob, sha256, sha512, start_upload)

REPO = "team/app"
OCTET = {"Content-Type": "application/octet-stream"}


def test_get_v2_answers_200_with_api_version_header(berth, client):
    r = client.get(berth.url + "/v2/")
    assert r.status_code == 200
    assert r.headers.get("Docker-Distribution-API-Version") == "registry/2.0"


def test_head_v2_answers_200(berth, client):
    r = client.head(berth.url + "/v2/")
    assert r.status_code == 200


# ------------------------------------------------------------------------------ blob GET / HEAD

def test_blob_get_and_head_round_trip(berth, client):
    data = os.urandom(100_000)
    dgst = push_blob(berth.url, REPO, data, client)
    r = client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert r.status_code == 200
    assert r.content == data
    assert sha256(r.content) == dgst
    assert int(r.headers["Content-Length"]) == len(data)
    assert r.headers.get("Docker-Content-Digest") == dgst

    h = client.head(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert h.status_code == 200
    assert h.content == b""
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers.get("Docker-Content-Digest") == dgst


def test_blob_get_unknown_is_404_blob_unknown(berth, client):
    push_blob(berth.url, REPO, b"something so the repository exists", client)
    r = client.get(f"{berth.url}/v2/{REPO}/blobs/{sha256(b'never pushed')}")
    assert r.status_code == 404
    assert "BLOB_UNKNOWN" in error_codes(r)
    h = client.head(f"{berth.url}/v2/{REPO}/blobs/{sha256(b'never pushed')}")
    assert h.status_code == 404


def test_blob_is_scoped_to_its_repository(berth, client):
    dgst = push_blob(berth.url, "one/repo", b"only in one/repo", client)
    push_blob(berth.url, "two/repo", b"other", client)
    assert client.head(f"{berth.url}/v2/one/repo/blobs/{dgst}").status_code == 200
    assert client.head(f"{berth.url}/v2/two/repo/blobs/{dgst}").status_code == 404


@pytest.mark.parametrize("rng,start,end", [("bytes=10-19", 10, 19), ("bytes=0-0", 0, 0),
                                           ("bytes=99990-", 99990, 99999), ("bytes=-5", 99995, 99999)])
def test_blob_range_read_is_206_with_content_range(berth, client, rng, start, end):
    data = os.urandom(100_000)
    dgst = push_blob(berth.url, REPO, data, client)
    r = client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}", headers={"Range": rng})
    assert r.status_code == 206
    assert r.content == data[start:end + 1]
    assert r.headers.get("Content-Range") == f"bytes {start}-{end}/{len(data)}"
    assert int(r.headers["Content-Length"]) == end - start + 1
    assert r.headers.get("Docker-Content-Digest") == dgst


def test_blob_range_beyond_end_is_416(berth, client):
    data = os.urandom(1000)
    dgst = push_blob(berth.url, REPO, data, client)
    r = client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}", headers={"Range": "bytes=5000-6000"})
    assert r.status_code == 416


def test_blob_delete_then_404(berth, client):
    data = os.urandom(1000)
    dgst = push_blob(berth.url, REPO, data, client)
    r = client.delete(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert r.status_code == 202
    assert client.head(f"{berth.url}/v2/{REPO}/blobs/{dgst}").status_code == 404
    g = client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert g.status_code == 404
    assert "BLOB_UNKNOWN" in error_codes(g)
    again = client.delete(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert again.status_code == 404
    assert "BLOB_UNKNOWN" in error_codes(again)


# ------------------------------------------------------------------------------ uploads

def test_monolithic_post_with_digest_is_201(berth, client):
    data = os.urandom(5000)
    dgst = sha256(data)
    r = client.post(f"{berth.url}/v2/{REPO}/blobs/uploads/", params={"digest": dgst}, data=data, headers=OCTET)
    assert r.status_code == 201, r.text
    assert r.headers.get("Location")
    assert r.headers.get("Docker-Content-Digest") == dgst
    g = client.get(absolute(berth.url, r.headers["Location"]))
    assert g.status_code == 200 and g.content == data


def test_post_then_put_is_202_then_201(berth, client):
    data = os.urandom(5000)
    dgst = sha256(data)
    r = client.post(f"{berth.url}/v2/{REPO}/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    assert f"/v2/{REPO}/blobs/uploads/" in loc
    r = client.put(absolute(berth.url, loc), params={"digest": dgst}, data=data, headers=OCTET)
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/v2/{REPO}/blobs/{dgst}")
    assert r.headers.get("Docker-Content-Digest") == dgst
    assert client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}").content == data


def _patch(client, loc, chunk, start):
    return client.patch(loc, data=chunk, headers={"Content-Type": "application/octet-stream",
                                                  "Content-Range": f"{start}-{start + len(chunk) - 1}"})


def test_chunked_patch_with_content_range(berth, client):
    data = os.urandom(30_000)
    chunks = [data[0:10_000], data[10_000:25_000], data[25_000:]]
    loc = start_upload(berth.url, REPO, client)
    off = 0
    for chunk in chunks:
        r = _patch(client, loc, chunk, off)
        assert r.status_code == 202, r.text
        off += len(chunk)
        assert r.headers.get("Range") == f"0-{off - 1}"
        assert r.headers.get("Location")
        loc = absolute(berth.url, r.headers["Location"])
    r = client.put(loc, params={"digest": sha256(data)}, headers=OCTET)
    assert r.status_code == 201, r.text
    assert client.get(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}").content == data


def test_out_of_order_chunk_is_416_and_session_stays_usable(berth, client):
    data = os.urandom(3000)
    a, b, c = data[:1000], data[1000:2000], data[2000:]
    loc = start_upload(berth.url, REPO, client)
    r = _patch(client, loc, a, 0)
    assert r.status_code == 202
    loc = absolute(berth.url, r.headers["Location"])
    # skip chunk b: starts at 2000 while the session is at 1000
    r = _patch(client, loc, c, 2000)
    assert r.status_code == 416
    # The chunk may be left unread, so the connection cannot carry the next request: the
    # answer says so, and the client opens a new one instead of finding this one closed.
    assert r.headers.get("Connection", "").lower() == "close", r.headers
    # a chunk overlapping what was already written is out of order too
    r = _patch(client, loc, b, 500)
    assert r.status_code == 416
    # the session is intact and still at 1000
    s = client.get(loc)
    assert s.status_code == 204
    assert s.headers.get("Range") == "0-999"
    r = _patch(client, loc, b, 1000)
    assert r.status_code == 202, r.text
    loc = absolute(berth.url, r.headers["Location"])
    r = _patch(client, loc, c, 2000)
    assert r.status_code == 202
    loc = absolute(berth.url, r.headers["Location"])
    r = client.put(loc, params={"digest": sha256(data)}, headers=OCTET)
    assert r.status_code == 201, r.text
    assert client.get(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}").content == data


def test_malformed_content_range_is_416(berth, client):
    loc = start_upload(berth.url, REPO, client)
    r = client.patch(loc, data=b"abc", headers={"Content-Type": "application/octet-stream",
                                                "Content-Range": "garbage"})
    assert r.status_code in (400, 416)
    assert r.status_code != 500


def test_streamed_patch_without_content_range(berth, client):
    data = os.urandom(3 * 1024 * 1024 + 17)

    def gen(buf):
        for i in range(0, len(buf), 256 * 1024):
            yield buf[i:i + 256 * 1024]

    loc = start_upload(berth.url, REPO, client)
    half = len(data) // 2
    # chunked transfer encoding, no Content-Length and no Content-Range
    r = client.patch(loc, data=gen(data[:half]), headers=OCTET)
    assert r.status_code == 202, r.text
    assert r.headers.get("Range") == f"0-{half - 1}"
    loc = absolute(berth.url, r.headers["Location"])
    r = client.patch(loc, data=gen(data[half:]), headers=OCTET)
    assert r.status_code == 202
    assert r.headers.get("Range") == f"0-{len(data) - 1}"
    loc = absolute(berth.url, r.headers["Location"])
    r = client.put(loc, params={"digest": sha256(data)}, headers=OCTET)
    assert r.status_code == 201, r.text
    assert sha256(client.get(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}").content) == sha256(data)


def test_put_with_final_chunk_in_body(berth, client):
    data = os.urandom(4000)
    loc = start_upload(berth.url, REPO, client)
    r = client.patch(loc, data=data[:1500], headers=OCTET)
    assert r.status_code == 202
    loc = absolute(berth.url, r.headers["Location"])
    r = client.put(loc, params={"digest": sha256(data)}, data=data[1500:],
                   headers={**OCTET, "Content-Range": f"1500-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    assert client.get(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}").content == data


def test_put_without_final_body(berth, client):
    data = os.urandom(4000)
    loc = start_upload(berth.url, REPO, client)
    r = client.patch(loc, data=data, headers=OCTET)
    assert r.status_code == 202
    r = client.put(absolute(berth.url, r.headers["Location"]), params={"digest": sha256(data)},
                   headers={"Content-Length": "0"})
    assert r.status_code == 201, r.text
    assert client.get(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}").content == data


def test_empty_blob_round_trip(berth, client):
    dgst = push_blob(berth.url, REPO, b"", client)
    assert dgst == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    r = client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert r.status_code == 200 and r.content == b""


def test_upload_status_is_204_with_range_and_location(berth, client):
    loc = start_upload(berth.url, REPO, client)
    r = client.patch(loc, data=b"x" * 1234, headers=OCTET)
    assert r.status_code == 202
    loc = absolute(berth.url, r.headers["Location"])
    s = client.get(loc)
    assert s.status_code == 204
    assert s.headers.get("Range") == "0-1233"
    assert f"/v2/{REPO}/blobs/uploads/" in s.headers.get("Location", "")
    assert s.content == b""


def test_cancel_upload_then_404_blob_upload_unknown(berth, client):
    loc = start_upload(berth.url, REPO, client)
    r = client.patch(loc, data=b"partial", headers=OCTET)
    assert r.status_code == 202
    loc = absolute(berth.url, r.headers["Location"])
    d = client.delete(loc)
    assert d.status_code == 204
    s = client.get(loc)
    assert s.status_code == 404
    assert "BLOB_UPLOAD_UNKNOWN" in error_codes(s)
    p = client.patch(loc, data=b"more", headers=OCTET)
    assert p.status_code == 404
    assert "BLOB_UPLOAD_UNKNOWN" in error_codes(p)
    u = client.put(loc, params={"digest": sha256(b"partial")}, headers=OCTET)
    assert u.status_code == 404
    assert "BLOB_UPLOAD_UNKNOWN" in error_codes(u)
    assert client.head(f"{berth.url}/v2/{REPO}/blobs/{sha256(b'partial')}").status_code == 404


def test_unknown_upload_session_is_404_blob_upload_unknown(berth, client):
    push_blob(berth.url, REPO, b"repo exists", client)
    loc = f"{berth.url}/v2/{REPO}/blobs/uploads/{uuid.uuid4()}"
    for r in (client.get(loc), client.patch(loc, data=b"x", headers=OCTET),
              client.put(loc, params={"digest": sha256(b'x')}, data=b"x", headers=OCTET)):
        assert r.status_code == 404
        assert "BLOB_UPLOAD_UNKNOWN" in error_codes(r)


def test_upload_session_is_bound_to_its_repository(berth, client):
    loc = start_upload(berth.url, "first/repo", client)
    other = loc.replace("/v2/first/repo/", "/v2/second/repo/")
    r = client.put(other, params={"digest": sha256(b"x")}, data=b"x", headers=OCTET)
    assert r.status_code == 404
    assert client.head(f"{berth.url}/v2/second/repo/blobs/{sha256(b'x')}").status_code == 404


def test_completed_session_cannot_be_reused(berth, client):
    data = b"once"
    loc = start_upload(berth.url, REPO, client)
    r = client.put(loc, params={"digest": sha256(data)}, data=data, headers=OCTET)
    assert r.status_code == 201
    r = client.patch(loc, data=b"again", headers=OCTET)
    assert r.status_code == 404
    assert "BLOB_UPLOAD_UNKNOWN" in error_codes(r)


# ------------------------------------------------------------------------------ cross-repository mount

def test_mount_existing_blob_is_201(berth, client):
    data = os.urandom(2000)
    dgst = push_blob(berth.url, "src/repo", data, client)
    r = client.post(f"{berth.url}/v2/dst/repo/blobs/uploads/", params={"mount": dgst, "from": "src/repo"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/v2/dst/repo/blobs/{dgst}")
    assert r.headers.get("Docker-Content-Digest") == dgst
    g = client.get(f"{berth.url}/v2/dst/repo/blobs/{dgst}")
    assert g.status_code == 200 and g.content == data
    # the source keeps its blob
    assert client.head(f"{berth.url}/v2/src/repo/blobs/{dgst}").status_code == 200


def test_mount_missing_blob_falls_back_to_upload_session_202(berth, client):
    push_blob(berth.url, "src/repo", b"unrelated", client)
    data = os.urandom(2000)
    dgst = sha256(data)
    r = client.post(f"{berth.url}/v2/dst/repo/blobs/uploads/", params={"mount": dgst, "from": "src/repo"})
    assert r.status_code == 202
    loc = r.headers["Location"]
    assert f"/v2/dst/repo/blobs/uploads/" in loc
    assert client.head(f"{berth.url}/v2/dst/repo/blobs/{dgst}").status_code == 404
    # the fallback session is a real upload session
    r = client.put(absolute(berth.url, loc), params={"digest": dgst}, data=data, headers=OCTET)
    assert r.status_code == 201
    assert client.get(f"{berth.url}/v2/dst/repo/blobs/{dgst}").content == data


def test_mount_from_unknown_repository_falls_back_202(berth, client):
    dgst = sha256(b"nowhere")
    r = client.post(f"{berth.url}/v2/dst/repo/blobs/uploads/", params={"mount": dgst, "from": "no/such/repo"})
    assert r.status_code == 202
    assert "/blobs/uploads/" in r.headers["Location"]


# ------------------------------------------------------------------------------ digests

def test_sha512_blob_monolithic_and_session(berth, client):
    data = os.urandom(10_000)
    dgst = sha512(data)
    r = client.post(f"{berth.url}/v2/{REPO}/blobs/uploads/", params={"digest": dgst}, data=data, headers=OCTET)
    assert r.status_code == 201, r.text
    assert r.headers.get("Docker-Content-Digest") == dgst
    g = client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert g.status_code == 200 and g.content == data
    assert g.headers.get("Docker-Content-Digest") == dgst
    h = client.head(f"{berth.url}/v2/{REPO}/blobs/{dgst}")
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(data)

    data2 = os.urandom(10_000)
    assert push_blob(berth.url, REPO, data2, client, algo="sha512") == sha512(data2)
    assert client.get(f"{berth.url}/v2/{REPO}/blobs/{sha512(data2)}").content == data2


def test_wrong_digest_on_put_is_digest_invalid_and_nothing_stored(berth, client):
    data = os.urandom(3000)
    claimed = sha256(b"something else entirely")
    loc = start_upload(berth.url, REPO, client)
    r = client.put(loc, params={"digest": claimed}, data=data, headers=OCTET)
    assert r.status_code == 400
    assert "DIGEST_INVALID" in error_codes(r)
    assert client.head(f"{berth.url}/v2/{REPO}/blobs/{claimed}").status_code == 404
    assert client.head(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}").status_code == 404


def test_wrong_sha512_digest_is_digest_invalid(berth, client):
    data = os.urandom(3000)
    claimed = sha512(b"not it")
    r = client.post(f"{berth.url}/v2/{REPO}/blobs/uploads/", params={"digest": claimed}, data=data, headers=OCTET)
    assert r.status_code == 400
    assert "DIGEST_INVALID" in error_codes(r)
    assert client.head(f"{berth.url}/v2/{REPO}/blobs/{claimed}").status_code == 404


def test_wrong_digest_on_monolithic_post_is_digest_invalid(berth, client):
    data = os.urandom(3000)
    claimed = sha256(b"x")
    r = client.post(f"{berth.url}/v2/{REPO}/blobs/uploads/", params={"digest": claimed}, data=data, headers=OCTET)
    assert r.status_code == 400
    assert "DIGEST_INVALID" in error_codes(r)
    assert client.head(f"{berth.url}/v2/{REPO}/blobs/{claimed}").status_code == 404
    assert client.head(f"{berth.url}/v2/{REPO}/blobs/{sha256(data)}").status_code == 404


def test_put_without_digest_parameter_is_rejected(berth, client):
    loc = start_upload(berth.url, REPO, client)
    r = client.put(loc, data=b"abc", headers=OCTET)
    assert r.status_code == 400
    assert "DIGEST_INVALID" in error_codes(r)


def test_digest_header_matches_content_for_large_blob(berth, client):
    data = os.urandom(8 * 1024 * 1024)
    dgst = push_blob(berth.url, REPO, data, client)
    with client.get(f"{berth.url}/v2/{REPO}/blobs/{dgst}", stream=True) as r:
        assert r.status_code == 200
        import hashlib
        h = hashlib.sha256()
        n = 0
        for piece in r.iter_content(1 << 20):
            h.update(piece)
            n += len(piece)
    assert n == len(data)
    assert h.hexdigest() == hex_of(dgst)
