"""The OCI distribution-spec v1.1.1 conformance suite (conformance/0*_test.go), ported to pytest.

Each ginkgo `Specify` becomes one test (or a small chained group when the cases share state), named
after it. Test data are built exactly as conformance/setup.go builds them: random config blobs per
workflow, the fixed gzip layer, manifests carrying an unspecified field, referrers artifacts with a
subject, and the `.INVALID_MANIFEST_NAME` reference.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from dataclasses import dataclass, field

import pytest

from ocihelpers import OCI_INDEX, OCI_MANIFEST, absolute, error_codes, sha256

NAMESPACE = "oci/conformance"
TEST_TAG = "tagtest0"
EMPTY_LAYER_TAG = "emptylayer"
NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"
INVALID_MANIFEST_CONTENT = b"blablabla"
LAYER_B64 = ("H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0"
             "WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qD"
             "jMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA")
ANNOTATION_KEY = "org.opencontainers.conformance.test"
ARTIFACT_TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
ARTIFACT_TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
ARTIFACT_TYPE_INDEX = "application/vnd.food.stand"
ERROR_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
               "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_UNVERIFIED",
               "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "TAG_INVALID", "UNAUTHORIZED", "DENIED",
               "UNSUPPORTED"}
DUMMY_DIGEST = sha256(b"hello world")
NUM_WORKFLOWS = 5  # configs/manifests 0..4, as in setup.go


def _marshal(obj) -> bytes:
    """Like Go's json.MarshalIndent(v, "", "\\t")."""
    return json.dumps(obj, indent="\t").encode()


def _desc(media_type: str, content: bytes, data: bytes | None = None, unspecified: bytes | None = None) -> dict:
    d = {"mediaType": media_type, "digest": sha256(content), "size": len(content)}
    if data:
        d["data"] = base64.b64encode(data).decode()
    d["newUnspecifiedField"] = base64.b64encode(unspecified).decode() if unspecified else None
    return d


@dataclass
class Blob:
    content: bytes
    digest: str = field(init=False)

    def __post_init__(self):
        self.digest = sha256(self.content)

    @property
    def length(self) -> str:
        return str(len(self.content))


class Data:
    """conformance/setup.go's init(), in Python."""

    def __init__(self):
        rnd = random.Random()
        self.configs = []
        for _ in range(NUM_WORKFLOWS):
            author = "".join(rnd.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-")
                             for _ in range(16))
            cfg = {"author": author, "architecture": "amd64", "os": "linux",
                   "rootfs": {"type": "layers", "diff_ids": []}}
            self.configs.append(Blob(_marshal(cfg)))
        self.layer = Blob(base64.b64decode(LAYER_B64))
        layers = [_desc("application/vnd.oci.image.layer.v1.tar+gzip", self.layer.content)]
        self.manifests = []
        for i in range(NUM_WORKFLOWS):
            m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "config": _desc("application/vnd.oci.image.config.v1+json", self.configs[i].content,
                                 data=self.configs[i].content, unspecified=b"hello world"),
                 "layers": layers}
            self.manifests.append(Blob(_marshal(m)))
        empty_layer = {"schemaVersion": 2,
                       "config": _desc("application/vnd.oci.image.config.v1+json", self.configs[1].content,
                                       data=self.configs[1].content, unspecified=b"hello world"),
                       "layers": []}
        self.empty_layer_manifest = Blob(_marshal(empty_layer))

        self.blob_a = Blob(rnd.randbytes(42))
        self.setup_chunked_blob(42, rnd)

        self.empty_json = Blob(b"{}")
        empty_desc = _desc("application/vnd.oci.empty.v1+json", b"{}")
        self.ref_blob_a = Blob(b"NHL Peanut Butter on my NHL bagel")
        self.ref_blob_b = Blob(b"NBA Strawberry Jam on my NBA croissant")
        subject4 = _desc(OCI_MANIFEST, self.manifests[4].content)
        subject3 = _desc(OCI_MANIFEST, self.manifests[3].content)
        self.annotations: dict[str, str] = {}

        def artifact(config, layers, subject, annotation=None, artifact_type=None):
            m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
            if artifact_type:
                m["artifactType"] = artifact_type
            m["config"] = config
            m["layers"] = layers
            m["subject"] = subject
            if annotation:
                m["annotations"] = {ANNOTATION_KEY: annotation}
            b = Blob(_marshal(m))
            if annotation:
                self.annotations[b.digest] = annotation
            return b

        self.refs_a_config = artifact(_desc(ARTIFACT_TYPE_A, self.ref_blob_a.content), [empty_desc],
                                      subject4, "test config a")
        self.refs_b_config = artifact(_desc(ARTIFACT_TYPE_B, self.ref_blob_b.content), [empty_desc],
                                      subject4, "test config b")
        self.refs_a_layer = artifact(empty_desc, [_desc(ARTIFACT_TYPE_A, self.ref_blob_a.content)],
                                     subject4, "test layer a", ARTIFACT_TYPE_A)
        self.refs_b_layer = artifact(empty_desc, [_desc(ARTIFACT_TYPE_B, self.ref_blob_b.content)],
                                     subject4, "test layer b", ARTIFACT_TYPE_B)
        self.refs_c_layer = artifact(empty_desc, [_desc(ARTIFACT_TYPE_B, self.ref_blob_b.content)],
                                     subject3, None, ARTIFACT_TYPE_B)
        idx = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": ARTIFACT_TYPE_INDEX,
               "manifests": [_desc(OCI_MANIFEST, self.refs_a_config.content),
                             _desc(OCI_MANIFEST, self.refs_a_layer.content)],
               "subject": subject4, "annotations": {ANNOTATION_KEY: "test index"}}
        self.refs_index = Blob(_marshal(idx))
        self.annotations[self.refs_index.digest] = "test index"
        self.crossmount_namespace = f"conformance-{uuid.uuid4()}"

    def setup_chunked_blob(self, size: int, rnd) -> None:
        self.blob_b = Blob(rnd.randbytes(size))
        b = self.blob_b.content
        self.chunk1 = b[:size // 2 + 1]
        self.chunk2 = b[size // 2 + 1:]
        self.chunk1_range = f"0-{len(self.chunk1) - 1}"
        self.chunk2_range = f"{len(self.chunk1)}-{len(b) - 1}"


class Reg:
    """A tiny reggie: requests against one registry with <name> = NAMESPACE by default."""

    def __init__(self, server, client):
        self.url = server.url
        self.c = client
        self.d = Data()

    def u(self, path: str, name: str = NAMESPACE) -> str:
        return self.url + path.replace("<name>", name)

    def loc(self, resp) -> str:
        location = resp.headers.get("Location")
        assert location, f"no Location in {resp.status_code} {resp.headers}"
        return absolute(self.url, location)

    def put_blob(self, blob: Blob, name: str = NAMESPACE):
        r = self.c.post(self.u("/v2/<name>/blobs/uploads/", name))
        r = self.c.put(self.loc(r), params={"digest": blob.digest}, data=blob.content,
                       headers={"Content-Type": "application/octet-stream", "Content-Length": blob.length})
        assert 200 <= r.status_code < 300, (r.status_code, r.text)
        return r

    def put_manifest(self, ref: str, blob: Blob, media_type: str = OCI_MANIFEST):
        r = self.c.put(self.u(f"/v2/<name>/manifests/{ref}"), data=blob.content,
                       headers={"Content-Type": media_type})
        assert 200 <= r.status_code < 300, (r.status_code, r.text)
        return r


def ok_or(r, *codes) -> bool:
    return 200 <= r.status_code < 300 or r.status_code in codes


@pytest.fixture
def reg(berth, client):
    return Reg(berth, client)


# ==================================================================================== 01 Pull

@pytest.fixture
def pull(reg):
    """Pull / Setup: Populate registry with test blob (x2), test layer, test manifest (x2)."""
    d = reg.d
    reg.put_blob(d.configs[0])
    reg.put_blob(d.configs[1])
    reg.put_blob(d.layer)
    reg.put_manifest(TEST_TAG, d.manifests[0])
    reg.put_manifest(d.manifests[1].digest, d.manifests[1])
    return reg


class TestPull:
    def test_head_request_to_nonexistent_blob_should_result_in_404(self, pull):
        r = pull.c.head(pull.u(f"/v2/<name>/blobs/{DUMMY_DIGEST}"))
        assert r.status_code == 404

    def test_head_request_to_existing_blob_should_yield_200(self, pull):
        cfg = pull.d.configs[0]
        r = pull.c.head(pull.u(f"/v2/<name>/blobs/{cfg.digest}"))
        assert r.status_code == 200
        if r.headers.get("Docker-Content-Digest"):
            assert r.headers["Docker-Content-Digest"] == cfg.digest

    def test_get_nonexistent_blob_should_result_in_404(self, pull):
        r = pull.c.get(pull.u(f"/v2/<name>/blobs/{DUMMY_DIGEST}"))
        assert r.status_code == 404

    def test_get_request_to_existing_blob_url_should_yield_200(self, pull):
        cfg = pull.d.configs[0]
        r = pull.c.get(pull.u(f"/v2/<name>/blobs/{cfg.digest}"))
        assert r.status_code == 200
        assert r.content == cfg.content

    def test_head_request_to_nonexistent_manifest_should_return_404(self, pull):
        r = pull.c.head(pull.u(f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}"))
        assert r.status_code == 404

    @pytest.mark.parametrize("i", [0, 1])
    def test_head_request_to_manifest_path_digest_should_yield_200(self, pull, i):
        m = pull.d.manifests[i]
        r = pull.c.head(pull.u(f"/v2/<name>/manifests/{m.digest}"), headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        if r.headers.get("Docker-Content-Digest"):
            assert r.headers["Docker-Content-Digest"] == m.digest

    def test_head_request_to_manifest_path_tag_should_yield_200(self, pull):
        r = pull.c.head(pull.u(f"/v2/<name>/manifests/{TEST_TAG}"), headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        if r.headers.get("Docker-Content-Digest"):
            assert r.headers["Docker-Content-Digest"] == pull.d.manifests[0].digest

    def test_get_nonexistent_manifest_should_return_404(self, pull):
        r = pull.c.get(pull.u(f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}"))
        assert r.status_code == 404

    @pytest.mark.parametrize("i", [0, 1])
    def test_get_request_to_manifest_path_digest_should_yield_200(self, pull, i):
        m = pull.d.manifests[i]
        r = pull.c.get(pull.u(f"/v2/<name>/manifests/{m.digest}"), headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == m.content

    def test_get_request_to_manifest_path_tag_should_yield_200(self, pull):
        r = pull.c.get(pull.u(f"/v2/<name>/manifests/{TEST_TAG}"), headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == pull.d.manifests[0].content

    def test_400_response_body_should_contain_oci_conforming_json_message(self, pull):
        r = pull.c.get(pull.u("/v2/<name>/manifests/sha256:totallywrong"), data=INVALID_MANIFEST_CONTENT,
                       headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code in (400, 404)
        if r.status_code == 400:
            codes = error_codes(r)
            assert codes, r.text
            assert codes[0] in ERROR_CODES

    def test_teardown(self, pull):
        """Teardown: delete manifests (before blobs), config blobs and layer created in setup."""
        d = pull.d
        for m in d.manifests[:2]:
            assert ok_or(pull.c.delete(pull.u(f"/v2/<name>/manifests/{m.digest}")), 405)
        for b in (d.configs[0], d.configs[1], d.layer):
            assert ok_or(pull.c.delete(pull.u(f"/v2/<name>/blobs/{b.digest}")), 404, 405)


# ==================================================================================== 02 Push

class TestPushBlobUploadStreamed:
    def test_patch_with_blob_in_body_then_put_with_digest(self, reg):
        """PATCH request with blob in body should yield 202 response;
        PUT request to session URL with digest should yield 201 response."""
        d = reg.d
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/"))
        assert r.headers.get("Location")
        r = reg.c.patch(reg.loc(r), data=d.blob_a.content, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        r = reg.c.put(reg.loc(r), params={"digest": d.blob_a.digest},
                      headers={"Content-Type": "application/octet-stream"})
        # (the suite sets Content-Length: <blob length> but sends no body; Go's client then sends 0)
        assert r.status_code == 201, r.text
        assert r.headers.get("Location")
        assert reg.c.get(reg.u(f"/v2/<name>/blobs/{d.blob_a.digest}")).content == d.blob_a.content


class TestPushBlobUploadMonolithic:
    def test_get_nonexistent_blob_should_result_in_404(self, reg):
        assert reg.c.get(reg.u(f"/v2/<name>/blobs/{DUMMY_DIGEST}")).status_code == 404

    def test_post_request_with_digest_and_blob_should_yield_201_or_202(self, reg):
        """...and GET request to blob URL from prior request should yield 200 or 404 based on response code."""
        cfg = reg.d.configs[1]
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/"), params={"digest": cfg.digest}, data=cfg.content,
                       headers={"Content-Length": cfg.length, "Content-Type": "application/octet-stream"})
        assert r.headers.get("Location")
        assert r.status_code in (201, 202)
        g = reg.c.get(reg.u(f"/v2/<name>/blobs/{cfg.digest}"))
        if r.status_code == 202:
            assert g.status_code == 404
        else:
            assert g.status_code == 200
            assert g.content == cfg.content

    def test_post_request_should_yield_a_session_id_then_put_upload_of_a_blob_should_yield_201(self, reg):
        """POST request should yield a session ID; PUT upload of a blob should yield a 201 Response;
        GET request to existing blob should yield 200 response."""
        cfg = reg.d.configs[1]
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/"))
        assert r.status_code == 202
        r = reg.c.put(reg.loc(r), params={"digest": cfg.digest}, data=cfg.content,
                      headers={"Content-Length": cfg.length, "Content-Type": "application/octet-stream"})
        assert r.headers.get("Location")
        assert r.status_code == 201
        g = reg.c.get(reg.u(f"/v2/<name>/blobs/{cfg.digest}"))
        assert g.status_code == 200
        assert g.content == cfg.content

    def test_put_upload_of_a_layer_blob_should_yield_201(self, reg):
        """PUT upload of a layer blob should yield a 201 Response; GET request to existing layer should yield 200."""
        layer = reg.d.layer
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/"))
        r = reg.c.put(reg.loc(r), params={"digest": layer.digest}, data=layer.content,
                      headers={"Content-Length": layer.length, "Content-Type": "application/octet-stream"})
        assert r.headers.get("Location")
        assert r.status_code == 201
        g = reg.c.get(reg.u(f"/v2/<name>/blobs/{layer.digest}"))
        assert g.status_code == 200
        assert g.content == layer.content


def _chunk_session(reg):
    r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/"), headers={"Content-Length": "0"})
    assert r.headers.get("Location")
    min_len = r.headers.get("OCI-Chunk-Min-Length")
    if min_len and int(min_len) > len(reg.d.chunk1):
        reg.d.setup_chunked_blob(int(min_len) * 2 - 2, random.Random())
    return r


class TestPushBlobUploadChunked:
    def test_out_of_order_blob_upload_should_return_416(self, reg):
        d = reg.d
        r = _chunk_session(reg)
        r = reg.c.patch(reg.loc(r), data=d.chunk2,
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(d.chunk2)),
                                 "Content-Range": d.chunk2_range})
        assert r.status_code == 416

    def test_chunked_upload_sequence(self, reg):
        """PATCH request with first chunk should return 202; Retry previous blob chunk should return 416;
        Get on stale blob upload should return 204 with a range and location; PATCH request with second
        chunk should return 202; PUT request with digest should return 201."""
        d = reg.d
        prev = _chunk_session(reg)
        r = reg.c.patch(reg.loc(prev), data=d.chunk1,
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(d.chunk1)),
                                 "Content-Range": d.chunk1_range})
        assert r.status_code == 202
        assert r.headers.get("Range") == d.chunk1_range

        # Retry previous blob chunk should return 416
        r = reg.c.patch(reg.loc(prev), data=d.chunk1,
                        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(d.chunk1)),
                                 "Content-Range": d.chunk1_range})
        assert r.status_code == 416

        # Get on stale blob upload should return 204 with a range and location
        r = reg.c.get(reg.loc(prev))
        assert r.status_code == 204
        assert r.headers.get("Location")
        assert r.headers.get("Range") == d.chunk1_range
        last = r

        # PATCH request with second chunk should return 202
        r = reg.c.patch(reg.loc(last), data=d.chunk2,
                        headers={"Content-Length": str(len(d.chunk2)), "Content-Range": d.chunk2_range,
                                 "Content-Type": "application/octet-stream"})
        assert r.status_code == 202
        assert r.headers.get("Location")

        # PUT request with digest should return 201
        r = reg.c.put(reg.loc(r), params={"digest": d.blob_b.digest},
                      headers={"Content-Length": "0", "Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        assert r.headers.get("Location")
        assert reg.c.get(reg.u(f"/v2/<name>/blobs/{d.blob_b.digest}")).content == d.blob_b.content


class TestPushCrossRepositoryBlobMount:
    def test_cross_mounting_of_a_blob_without_the_from_argument_should_yield_session_id(self, reg):
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/", reg.d.crossmount_namespace),
                       params={"mount": DUMMY_DIGEST})
        assert r.status_code == 202
        assert r.headers.get("Location")

    def _push_blob_a(self, reg):
        TestPushBlobUploadStreamed().test_patch_with_blob_in_body_then_put_with_digest(reg)

    def test_post_request_to_mount_another_repositorys_blob_should_return_201_or_202(self, reg):
        """...; GET request to test digest within cross-mount namespace should return 200 (if 201);
        Cross-mounting of nonexistent blob should yield session id (if 202)."""
        self._push_blob_a(reg)
        d = reg.d
        ns = d.crossmount_namespace
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/", ns), params={"mount": d.blob_a.digest, "from": NAMESPACE})
        assert r.status_code in (201, 202)
        location = r.headers.get("Location", "")
        rel = location.split("://", 1)[-1]
        rel = rel[rel.index("/"):] if "://" in location else location
        if r.status_code == 201:
            assert rel == f"/v2/{ns}/blobs/{d.blob_a.digest}"
            g = reg.c.get(absolute(reg.url, location))
            assert g.status_code == 200
            assert g.content == d.blob_a.content
        else:
            assert rel.startswith(f"/v2/{ns}/blobs/uploads/")

    def test_cross_mounting_without_from_automatic_content_discovery(self, reg):
        """Cross-mounting without from, and automatic content discovery enabled should return a 201
        / disabled should return a 202 (OCI_AUTOMATIC_CROSSMOUNT): whichever the registry does, it must
        be one of the two, and consistent."""
        self._push_blob_a(reg)
        d = reg.d
        ns = d.crossmount_namespace
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/", ns), params={"mount": d.blob_a.digest, "from": NAMESPACE})
        if r.status_code != 201:
            pytest.skip("mount with from did not yield 201; the suite skips this case")
        r = reg.c.post(reg.u("/v2/<name>/blobs/uploads/", ns + "-auto"), params={"mount": d.blob_a.digest})
        assert r.status_code in (201, 202)
        if r.status_code == 201:
            g = reg.c.get(reg.u(f"/v2/<name>/blobs/{d.blob_a.digest}", ns + "-auto"))
            assert g.status_code == 200
        else:
            assert r.headers.get("Location")
            assert "/blobs/uploads/" in r.headers["Location"]


@pytest.fixture
def push_manifest_setup(reg):
    # the blobs manifests[1] needs, pushed by the monolithic cases of the suite
    reg.put_blob(reg.d.configs[1])
    reg.put_blob(reg.d.layer)
    return reg


class TestPushManifestUpload:
    def test_get_nonexistent_manifest_should_return_404(self, reg):
        assert reg.c.get(reg.u(f"/v2/<name>/manifests/{NONEXISTENT_MANIFEST}")).status_code == 404

    def test_put_should_accept_a_manifest_upload(self, push_manifest_setup):
        reg = push_manifest_setup
        m = reg.d.manifests[1]
        for i in range(4):
            r = reg.c.put(reg.u(f"/v2/<name>/manifests/test{i}"), data=m.content,
                          headers={"Content-Type": OCI_MANIFEST})
            assert r.headers.get("Location")
            assert r.status_code == 201
        # GET request to manifest URL (digest) should yield 200 response
        g = reg.c.get(reg.u(f"/v2/<name>/manifests/{m.digest}"), headers={"Accept": OCI_MANIFEST})
        assert g.status_code == 200
        assert g.content == m.content

    def test_registry_should_accept_a_manifest_upload_with_no_layers(self, push_manifest_setup):
        reg = push_manifest_setup
        m = reg.d.empty_layer_manifest
        r = reg.c.put(reg.u(f"/v2/<name>/manifests/{EMPTY_LAYER_TAG}"), data=m.content,
                      headers={"Content-Type": OCI_MANIFEST})
        # the suite only warns when unsupported; berth is expected to support it
        assert r.status_code == 201, r.text
        assert r.headers.get("Location")
        g = reg.c.get(reg.u(f"/v2/<name>/manifests/{m.digest}"), headers={"Accept": OCI_MANIFEST})
        assert g.content == m.content

    def test_teardown(self, push_manifest_setup):
        reg = push_manifest_setup
        d = reg.d
        reg.put_manifest("test0", d.manifests[1])
        reg.put_manifest(EMPTY_LAYER_TAG, d.empty_layer_manifest)
        assert ok_or(reg.c.delete(reg.u(f"/v2/<name>/manifests/{d.manifests[1].digest}")), 405)
        assert ok_or(reg.c.delete(reg.u(f"/v2/<name>/manifests/{d.empty_layer_manifest.digest}")), 405)
        assert ok_or(reg.c.delete(reg.u(f"/v2/<name>/blobs/{d.configs[1].digest}")), 404, 405)
        assert ok_or(reg.c.delete(reg.u(f"/v2/<name>/blobs/{d.layer.digest}")), 404, 405)


# ======================================================================= 03 Content discovery

@pytest.fixture
def discovery(reg):
    """Content Discovery / Setup: test blob, test layer, test tags, references setup."""
    d = reg.d
    reg.put_blob(d.configs[2])
    reg.put_blob(d.layer)
    for i in range(4):
        reg.put_manifest(f"test{i}", d.manifests[2])
    assert d.empty_json.digest == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    reg.put_blob(d.empty_json)
    reg.put_blob(d.ref_blob_a)
    reg.subject_headers = []
    r = reg.put_manifest(d.refs_a_config.digest, d.refs_a_config)
    reg.subject_headers.append((r.headers.get("OCI-Subject"), d.manifests[4].digest))
    r = reg.put_manifest(d.refs_a_layer.digest, d.refs_a_layer)
    reg.subject_headers.append((r.headers.get("OCI-Subject"), d.manifests[4].digest))
    r = reg.put_manifest(d.refs_index.digest, d.refs_index, OCI_INDEX)
    reg.subject_headers.append((r.headers.get("OCI-Subject"), d.manifests[4].digest))
    reg.put_blob(d.configs[4])
    reg.put_blob(d.layer)
    reg.put_manifest(TEST_TAG, d.manifests[4])
    reg.put_blob(d.ref_blob_b)
    r = reg.put_manifest(d.refs_b_config.digest, d.refs_b_config)
    reg.subject_headers.append((r.headers.get("OCI-Subject"), d.manifests[4].digest))
    r = reg.put_manifest(d.refs_b_layer.digest, d.refs_b_layer)
    reg.subject_headers.append((r.headers.get("OCI-Subject"), d.manifests[4].digest))
    r = reg.put_manifest(d.refs_c_layer.digest, d.refs_c_layer)
    reg.subject_headers.append((r.headers.get("OCI-Subject"), d.manifests[3].digest))
    return reg


def _tags(r) -> list[str]:
    try:
        return r.json().get("tags") or []
    except ValueError:
        return []


class TestContentDiscovery:
    def test_references_setup_oci_subject_headers(self, discovery):
        """References setup: every manifest PUT with a subject answers OCI-Subject: <subject digest>."""
        for got, want in discovery.subject_headers:
            assert got == want

    def test_get_request_to_list_tags_should_yield_200(self, discovery):
        r = discovery.c.get(discovery.u("/v2/<name>/tags/list"))
        assert r.status_code == 200
        assert sorted(_tags(r)) == ["tagtest0", "test0", "test1", "test2", "test3"]

    def test_get_number_of_tags_should_be_limitable_by_n_query_parameter(self, discovery):
        num_tags = len(_tags(discovery.c.get(discovery.u("/v2/<name>/tags/list"))))
        n = num_tags // 2
        r = discovery.c.get(discovery.u("/v2/<name>/tags/list"), params={"n": str(n)})
        assert r.status_code == 200
        assert len(_tags(r)) == n

    def test_get_start_of_tag_is_set_by_last_query_parameter(self, discovery):
        num_tags = len(_tags(discovery.c.get(discovery.u("/v2/<name>/tags/list"))))
        n = num_tags // 2
        tag_list = _tags(discovery.c.get(discovery.u("/v2/<name>/tags/list"), params={"n": str(n)}))
        r = discovery.c.get(discovery.u("/v2/<name>/tags/list"), params={"n": str(n), "last": tag_list[n - 1]})
        assert r.status_code == 200
        second = _tags(r)
        assert len(second) <= n
        assert all(t > tag_list[n - 1] for t in second)

    def test_referrers_get_request_to_nonexistent_blob_should_result_in_empty_200(self, discovery):
        r = discovery.c.get(discovery.u(f"/v2/<name>/referrers/{DUMMY_DIGEST}"))
        assert r.status_code == 200
        assert r.headers.get("Content-Type") == OCI_INDEX
        assert len(r.json().get("manifests") or []) == 0

    def test_referrers_get_request_to_existing_blob_should_yield_200(self, discovery):
        d = discovery.d
        r = discovery.c.get(discovery.u(f"/v2/<name>/referrers/{d.manifests[4].digest}"))
        assert r.status_code == 200
        assert r.headers.get("Content-Type") == OCI_INDEX
        manifests = r.json()["manifests"]
        assert len(manifests) == 5
        assert manifests[0]["digest"] != manifests[1]["digest"]
        for m in manifests:
            assert len(m.get("annotations", {})) == 1
            assert m["annotations"][ANNOTATION_KEY] == d.annotations[m["digest"]]

    def test_referrers_get_request_to_existing_blob_with_filter_should_yield_200(self, discovery):
        d = discovery.d
        r = discovery.c.get(discovery.u(f"/v2/<name>/referrers/{d.manifests[4].digest}"),
                            params={"artifactType": ARTIFACT_TYPE_A})
        assert r.status_code == 200
        assert r.headers.get("Content-Type") == OCI_INDEX
        manifests = r.json()["manifests"]
        if r.headers.get("OCI-Filters-Applied"):
            assert len(manifests) == 2
            assert r.headers["OCI-Filters-Applied"] == "artifactType"
        else:
            assert len(manifests) == 5
        for m in manifests:
            assert len(m.get("annotations", {})) == 1
            assert m["annotations"][ANNOTATION_KEY] == d.annotations[m["digest"]]

    def test_referrers_get_request_to_missing_manifest_should_yield_200(self, discovery):
        d = discovery.d
        r = discovery.c.get(discovery.u(f"/v2/<name>/referrers/{d.manifests[3].digest}"))
        assert r.status_code == 200
        assert r.headers.get("Content-Type") == OCI_INDEX
        manifests = r.json()["manifests"]
        assert len(manifests) == 1
        assert manifests[0]["digest"] == d.refs_c_layer.digest

    def test_teardown(self, discovery):
        """Delete created manifest & associated tags; delete blobs; references teardown."""
        d = discovery.d
        c, u = discovery.c, discovery.u
        for ref in (d.refs_index.digest, d.manifests[2].digest, d.manifests[4].digest, d.refs_a_config.digest,
                    d.refs_a_layer.digest, TEST_TAG, d.refs_b_config.digest, d.refs_b_layer.digest,
                    d.refs_c_layer.digest):
            assert ok_or(c.delete(u(f"/v2/<name>/manifests/{ref}")), 405, 404)
        assert ok_or(c.delete(u(f"/v2/<name>/blobs/{d.configs[2].digest}")), 405)
        assert ok_or(c.delete(u(f"/v2/<name>/blobs/{d.layer.digest}")), 405)
        for b in (d.configs[4], d.ref_blob_a, d.ref_blob_b, d.empty_json):
            assert ok_or(c.delete(u(f"/v2/<name>/blobs/{b.digest}")), 405, 404)


# ====================================================================== 04 Content management

@pytest.fixture
def management(reg):
    """Content Management / Setup: config blob, layer, tag; count tags before deleting."""
    d = reg.d
    reg.put_blob(d.configs[3])
    reg.put_blob(d.layer)
    reg.put_manifest(TEST_TAG, d.manifests[3])
    r = reg.c.get(reg.u("/v2/<name>/tags/list"))
    assert r.status_code == 200
    reg.num_tags = len(_tags(r))
    return reg


class TestContentManagement:
    def test_manifest_delete_sequence(self, management):
        """DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405);
        DELETE request to manifest (digest) should yield 202 response unless already deleted;
        GET request to deleted manifest URL should yield 404 response, unless delete is disallowed;
        GET request to tags list should reflect manifest deletion."""
        reg, d = management, management.d
        r = reg.c.delete(reg.u(f"/v2/<name>/manifests/{TEST_TAG}"))
        assert r.status_code in (400, 202, 405)
        if r.status_code == 400:
            assert error_codes(r)[:1] == ["UNSUPPORTED"]
        r = reg.c.delete(reg.u(f"/v2/<name>/manifests/{d.manifests[3].digest}"))
        assert r.status_code in (202, 404)
        r = reg.c.get(reg.u(f"/v2/<name>/manifests/{d.manifests[3].digest}"))
        assert r.status_code in (404, 200)
        r = reg.c.get(reg.u("/v2/<name>/tags/list"))
        assert r.status_code == 200
        assert len(_tags(r)) < reg.num_tags

    def test_blob_delete_sequence(self, management):
        """DELETE request to blob URL should yield 202 response; GET request to deleted blob URL should
        yield 404 response."""
        reg, d = management, management.d
        r = reg.c.delete(reg.u(f"/v2/<name>/blobs/{d.configs[3].digest}"))
        assert r.status_code in (202, 404, 405)
        r = reg.c.delete(reg.u(f"/v2/<name>/blobs/{d.layer.digest}"))
        assert r.status_code in (202, 404, 405)
        if r.status_code != 405:
            g = reg.c.get(reg.u(f"/v2/<name>/blobs/{d.configs[3].digest}"))
            assert g.status_code == 404


def test_base_api_route_get_v2_should_yield_200(berth, client):
    """GET /v2/ (end-1)."""
    r = client.get(berth.url + "/v2/")
    assert r.status_code == 200
