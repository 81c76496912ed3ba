"""Docker image manifest schema 1 (`compatibility.schema1.enabled`), for Docker 1.9 and older.

Manifests are signed here exactly as libtrust signs them (pretty JSON with a three-space indent,
a `signatures` array spliced in before the closing brace, the splice point in each signature's
protected header), with EC, RSA and x509-chain keys; berth must verify every signature, keep the
manifest's digest over the payload without signatures, and serve the pushed bytes back.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.x509.oid import NameOID

from harness import OBJECT_STORES, TEST_STORAGE, start_berth, start_distribution
from ocihelpers import Client, error_codes, hex_of, push_blob, sha256

SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
UNSIGNED = "application/vnd.docker.distribution.manifest.v1+json"
ENABLED = {"compatibility": {"schema1": {"enabled": True}}}
V2 = ("docker", "registry", "v2")


# --- libtrust, in Python --------------------------------------------------------------------

def b64url(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


CURVES = {"P-256": (ec.SECP256R1, hashes.SHA256, "ES256", 32),
          "P-384": (ec.SECP384R1, hashes.SHA384, "ES384", 48),
          "P-521": (ec.SECP521R1, hashes.SHA512, "ES512", 66)}


class Key:
    """A signing key and how libtrust names it in a signature header."""

    def __init__(self, kind: str, x5c: bool = False):
        self.kind, self.x5c = kind, x5c
        if kind == "RSA":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        else:
            curve, self.hash, self.alg, self.size = CURVES[kind]
            self.private = ec.generate_private_key(curve())

    def kid(self) -> str:
        """libtrust's key ID, which it checks against the key when a jwk carries one."""
        der = self.private.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        h = hashlib.sha256(der)
        s = base64.b32encode(h.digest()[:30]).decode().rstrip("=")
        return ":".join(s[i:i + 4] for i in range(0, len(s), 4))

    def jwk(self) -> dict:
        pub = self.private.public_key().public_numbers()
        if self.kind == "RSA":
            n = pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")
            return {"e": b64url(pub.e.to_bytes(3, "big")), "kid": self.kid(), "kty": "RSA", "n": b64url(n)}
        return {"crv": self.kind, "kid": self.kid(), "kty": "EC",
                "x": b64url(pub.x.to_bytes(self.size, "big")), "y": b64url(pub.y.to_bytes(self.size, "big"))}

    def certificate(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "schema1 signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.private.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                .sign(self.private, hashes.SHA256()))
        return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def header(self) -> dict:
        if self.x5c:
            return {"alg": self.alg, "x5c": [self.certificate()]}
        return {"jwk": self.jwk(), "alg": self.alg}

    def sign(self, data: bytes) -> bytes:
        if self.kind == "RSA":
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(self.hash())))
        return r.to_bytes(self.size, "big") + s.to_bytes(self.size, "big")


def pretty(manifest: dict) -> bytes:
    """The payload as libtrust's callers marshal it: three-space indent."""
    return json.dumps(manifest, indent=3).encode()


def split_point(payload: bytes) -> int:
    """formatLength: the payload up to the last character before its closing brace."""
    close = len(payload.rstrip()) - 1
    assert payload[close:close + 1] == b"}"
    return len(payload[:close].rstrip())


def sign(payload: bytes, keys: list[Key], signer: list[Key] | None = None) -> bytes:
    """libtrust's Sign then PrettySignature; `signer[i]` (default `keys[i]`) makes signature i,
    `keys[i]` is the key its header names."""
    cut = split_point(payload)
    tail = payload[cut:]
    sigs = []
    for i, key in enumerate(keys):
        protected = b64url(json.dumps({"formatLength": cut, "formatTail": b64url(tail),
                                       "time": "2026-11-29T20:00:00Z"}, separators=(",", ":")))
        signing_input = f"{protected}.{b64url(payload)}".encode()
        by = (signer or keys)[i]
        sigs.append({"header": key.header(), "signature": b64url(by.sign(signing_input)), "protected": protected})
    block = json.dumps(sigs, indent=3).replace("\n", "\n   ")
    return payload[:cut] + b',\n   "signatures": ' + block.encode() + tail


def payload_of(signed: bytes) -> bytes:
    """The signed payload of a pretty JWS (what the digest covers), checking ES256 signatures."""
    doc = json.loads(signed)
    payload = None
    for sig in doc["signatures"]:
        protected = json.loads(unb64url(sig["protected"]))
        p = signed[:protected["formatLength"]] + unb64url(protected["formatTail"])
        assert payload is None or p == payload
        payload = p
        jwk = sig["header"]["jwk"]
        assert jwk["kty"] == "EC" and sig["header"]["alg"] == "ES256"
        pub = ec.EllipticCurvePublicNumbers(int.from_bytes(unb64url(jwk["x"]), "big"),
                                            int.from_bytes(unb64url(jwk["y"]), "big"), ec.SECP256R1()).public_key()
        raw = unb64url(sig["signature"])
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        pub.verify(der, f"{sig['protected']}.{b64url(p)}".encode(), ec.ECDSA(hashes.SHA256()))
    assert payload is not None
    return payload


# --- images ---------------------------------------------------------------------------------

def layer_tar(name: str) -> bytes:
    """A gzipped layer tarball holding one file (real, so clients can unpack it)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = os.urandom(64)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def schema1_image(url: str, repo: str, tag: str, c: Client, push: bool = True) -> tuple[dict, list[bytes]]:
    """A two-layer schema 1 manifest as Docker 1.9 writes it (top layer first); its layers are
    pushed to `repo` unless `push` is false."""
    layers = [layer_tar("top"), layer_tar("base")]
    if push:
        for layer in layers:
            push_blob(url, repo, layer, c)
    top, base = os.urandom(32).hex(), os.urandom(32).hex()
    created = "2026-11-29T20:00:00.000000000Z"
    manifest = {
        "schemaVersion": 1,
        "name": repo,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": sha256(layer)} for layer in layers],
        "history": [
            {"v1Compatibility": json.dumps({
                "id": top, "parent": base, "created": created, "architecture": "amd64", "os": "linux",
                "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"/bin/sh\"]"]}}, separators=(",", ":"))},
            {"v1Compatibility": json.dumps({
                "id": base, "created": created,
                "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ADD file:base in /"]}}, separators=(",", ":"))},
        ],
    }
    return manifest, layers


def put(url: str, repo: str, ref: str, body: bytes, c: Client, media_type: str = SIGNED):
    return c.put(f"{url}/v2/{repo}/manifests/{ref}", data=body, headers={"Content-Type": media_type})


def get(url: str, repo: str, ref: str, c: Client, method: str = "GET"):
    accept = ", ".join([SIGNED, UNSIGNED, "application/json"])
    return c.request(method, f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})


@pytest.fixture(scope="module")
def enabled(tmp_path_factory):
    """One berth with schema 1 enabled for the module's tests (each uses its own repository)."""
    server = start_berth(tmp_path_factory.mktemp("schema1"), config=ENABLED)
    yield server
    server.stop()


# --- tests ----------------------------------------------------------------------------------

def test_disabled_by_default_answers_manifest_invalid(berth_factory):
    srv = berth_factory()
    with Client() as c:
        manifest, _ = schema1_image(srv.url, "old/client", "v1", c)
        signed = sign(pretty(manifest), [Key("P-256")])
        for media_type in (SIGNED, UNSIGNED):
            r = put(srv.url, "old/client", "v1", signed, c, media_type)
            assert r.status_code == 400, r.text
            assert error_codes(r) == ["MANIFEST_INVALID"]
            assert "schema 1" in r.json()["errors"][0]["message"]
        assert get(srv.url, "old/client", "v1", c).status_code == 404


def test_signed_manifest_round_trips_byte_for_byte(enabled):
    url, repo = enabled.url, "legacy/app"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "1.9", c)
        payload = pretty(manifest)
        signed = sign(payload, [Key("P-256")])
        dgst = sha256(payload)
        assert dgst != sha256(signed)
        r = put(url, repo, "1.9", signed, c)
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == dgst
        assert r.headers["Location"].endswith(f"/v2/{repo}/manifests/{dgst}")
        for ref in ("1.9", dgst):
            g = get(url, repo, ref, c)
            assert g.status_code == 200, g.text
            assert g.content == signed
            assert g.headers["Content-Type"] == SIGNED
            assert g.headers["Docker-Content-Digest"] == dgst
            h = get(url, repo, ref, c, "HEAD")
            assert h.status_code == 200
            assert h.headers["Content-Length"] == str(len(signed))
            assert h.headers["Docker-Content-Digest"] == dgst
        # By digest the URL names the payload's digest, not the signed bytes'.
        assert put(url, repo, dgst, signed, c).status_code == 201
        r = put(url, repo, sha256(signed), signed, c)
        assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
        assert c.get(f"{url}/v2/{repo}/tags/list").json()["tags"] == ["1.9"]
        d = c.delete(f"{url}/v2/{repo}/manifests/{dgst}")
        assert d.status_code == 202, d.text
        assert get(url, repo, dgst, c).status_code == 404
        assert get(url, repo, "1.9", c).status_code == 404


@pytest.mark.parametrize("kind,x5c", [("P-256", False), ("P-384", False), ("RSA", False),
                                       ("P-256", True), ("P-384", True), ("RSA", True)],
                         ids=["ec-p256", "ec-p384", "rsa", "x5c-p256", "x5c-p384", "x5c-rsa"])
def test_every_libtrust_key_kind_verifies(enabled, kind, x5c):
    url, repo = enabled.url, f"keys/{kind.lower().replace('-', '')}{'-x5c' if x5c else ''}"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "latest", c)
        payload = pretty(manifest)
        signed = sign(payload, [Key(kind, x5c)])
        r = put(url, repo, "latest", signed, c)
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == sha256(payload)
        assert get(url, repo, "latest", c).content == signed
        # The same key kind, but a signature that key did not make.
        forged = sign(payload, [Key(kind, x5c)], signer=[Key(kind)])
        r = put(url, repo, "latest", forged, c)
        assert r.status_code == 400 and error_codes(r) == ["MANIFEST_UNVERIFIED"], r.text


def test_p521_is_refused_not_trusted(enabled):
    """ES512 cannot be verified yet: such a manifest is refused, never stored unverified."""
    url, repo = enabled.url, "keys/p521"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "latest", c)
        r = put(url, repo, "latest", sign(pretty(manifest), [Key("P-521")]), c)
        assert r.status_code == 400 and error_codes(r) == ["MANIFEST_UNVERIFIED"], r.text
        assert "P-521" in r.json()["errors"][0]["message"]


def test_every_signature_must_verify(enabled):
    url, repo = enabled.url, "multi/signed"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "v1", c)
        payload = pretty(manifest)
        a, b = Key("P-256"), Key("P-384")
        r = put(url, repo, "v1", sign(payload, [a, b]), c)
        assert r.status_code == 201, r.text
        r = put(url, repo, "v1", sign(payload, [a, b], signer=[a, Key("P-384")]), c)
        assert r.status_code == 400 and error_codes(r) == ["MANIFEST_UNVERIFIED"], r.text


def test_tampering_and_forgery_are_unverified(enabled):
    url, repo = enabled.url, "attack/target"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "v1", c)
        payload = pretty(manifest)
        key = Key("P-256")
        signed = sign(payload, [key])
        cases = {
            # a byte of the signed part changed after signing
            "tampered": signed.replace(b'"architecture": "amd64"', b'"architecture": "arm64"', 1),
            # signed by another key than the one the header names
            "other key": sign(payload, [key], signer=[Key("P-256")]),
            # a field repeated after the signed part, which a last-key-wins reader would take
            "smuggled": signed.replace(b'"signatures"', b'"tag": "v2",\n   "signatures"', 1),
            # the protected header moved past the end of the manifest
            "bad length": signed.replace(
                json.loads(signed)["signatures"][0]["protected"].encode(),
                b64url(json.dumps({"formatLength": 10 ** 6, "formatTail": "Cn0"})).encode()),
            "empty signatures": payload[:split_point(payload)] + b',\n   "signatures": []' + payload[split_point(payload):],
            # claimed to be signed, carries no signatures
            "unsigned": payload,
        }
        for name, body in cases.items():
            r = put(url, repo, "v1", body, c)
            assert r.status_code == 400, (name, r.text)
            assert error_codes(r) == ["MANIFEST_UNVERIFIED"], (name, r.text)
        assert get(url, repo, "v1", c).status_code == 404


def test_name_tag_and_blobs_must_match(enabled):
    url, repo = enabled.url, "attack/names"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "v1", c)
        key = Key("P-256")
        r = put(url, repo, "v2", sign(pretty(manifest), [key]), c)
        assert r.status_code == 400 and error_codes(r) == ["TAG_INVALID"], r.text
        r = put(url, "attack/other", "v1", sign(pretty(manifest), [key]), c)
        assert r.status_code == 400 and error_codes(r) == ["NAME_INVALID"], r.text
        unknown, layers = schema1_image(url, repo, "v1", c, push=False)
        r = put(url, repo, "v1", sign(pretty(unknown), [key]), c)
        assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"], r.text
        assert r.json()["errors"][0]["detail"]["digest"] in {sha256(layer) for layer in layers}
        bad = dict(manifest, history=manifest["history"][:1])
        r = put(url, repo, "v1", sign(pretty(bad), [key]), c)
        assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"], r.text
        assert c.get(f"{url}/v2/{repo}/tags/list").json().get("tags") in (None, [])


def test_unsigned_json_is_served_as_pushed(enabled):
    url, repo = enabled.url, "legacy/unsigned"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "v1", c)
        body = pretty(manifest)
        r = put(url, repo, "v1", body, c, UNSIGNED)
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == sha256(body)
        g = get(url, repo, "v1", c)
        assert g.status_code == 200 and g.content == body
        assert g.headers["Content-Type"] == UNSIGNED


@pytest.mark.skipif(TEST_STORAGE in OBJECT_STORES, reason="checks files on disk")
def test_stored_in_distribution_layout(enabled):
    url, repo = enabled.url, "layout/check"
    with Client() as c:
        manifest, _ = schema1_image(url, repo, "v1", c)
        payload = pretty(manifest)
        assert put(url, repo, "v1", sign(payload, [Key("P-256")]), c).status_code == 201
    if enabled.root is None:
        pytest.skip("storage is not a directory")
    h = hex_of(sha256(payload))
    v2 = enabled.root.joinpath(*V2)
    # distribution stores the payload without signatures as the revision's blob
    assert (v2 / "blobs/sha256" / h[:2] / h / "data").read_bytes() == payload
    assert (v2 / "repositories" / repo / "_manifests/revisions/sha256" / h / "link").read_text() == sha256(payload)
    assert (v2 / "repositories" / repo / "_manifests/tags/v1/current/link").read_text() == sha256(payload)


def test_skopeo_copies_a_schema1_image_to_oci(enabled, tmp_path):
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.fail("skopeo is not installed")
    url, repo = enabled.url, "legacy/skopeo"
    with Client() as c:
        manifest, layers = schema1_image(url, repo, "v1", c)
        assert put(url, repo, "v1", sign(pretty(manifest), [Key("P-256")]), c).status_code == 201
    out = tmp_path / "oci"
    proc = subprocess.run([exe, "--insecure-policy", "copy", "--src-tls-verify=false",
                           f"docker://{enabled.host}/{repo}:v1", f"oci:{out}:v1"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((out / "index.json").read_text())
    mdesc = index["manifests"][0]
    oci = json.loads((out / "blobs" / "sha256" / hex_of(mdesc["digest"])).read_bytes())
    # schema 1 lists the top layer first; OCI lists the base first
    assert [l["digest"] for l in oci["layers"]] == [sha256(layer) for layer in reversed(layers)]
    for layer in layers:
        assert (out / "blobs" / "sha256" / hex_of(sha256(layer))).read_bytes() == layer
    config = json.loads((out / "blobs" / "sha256" / hex_of(oci["config"]["digest"])).read_bytes())
    assert config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest() for layer in reversed(layers)]
    assert config["config"]["Cmd"] == ["/bin/sh"]


needs_distribution = pytest.mark.skipif(shutil.which("docker-registry") is None,
                                        reason="docker-registry not installed")


@needs_distribution
def test_distribution_serves_what_berth_wrote(tmp_path, berth_factory):
    root = tmp_path / "root"
    srv = berth_factory(root=root, config=ENABLED)
    repo = "interop/legacy"
    with Client() as c:
        manifest, _ = schema1_image(srv.url, repo, "v1", c)
        payload = pretty(manifest)
        assert put(srv.url, repo, "v1", sign(payload, [Key("P-256")]), c).status_code == 201
    assert srv.stop() == 0
    dist = start_distribution(tmp_path / "dist", root, config=ENABLED)
    try:
        with Client() as c:
            for ref in ("v1", sha256(payload)):
                g = get(dist.url, repo, ref, c)
                assert g.status_code == 200, g.text
                assert g.headers["Content-Type"] == SIGNED
                assert g.headers["Docker-Content-Digest"] == sha256(payload)
                # distribution serves the same payload, signed with its own key
                assert payload_of(g.content) == payload
    finally:
        dist.stop()


@needs_distribution
def test_berth_serves_what_distribution_wrote(tmp_path, berth_factory):
    root = tmp_path / "root"
    dist = start_distribution(tmp_path / "dist", root, config=ENABLED)
    repo = "interop/legacy"
    try:
        with Client() as c:
            manifest, _ = schema1_image(dist.url, repo, "v1", c)
            payload = pretty(manifest)
            r = put(dist.url, repo, "v1", sign(payload, [Key("P-256")]), c)
            assert r.status_code == 201, r.text
            assert r.headers["Docker-Content-Digest"] == sha256(payload)
    finally:
        dist.stop()
    srv = berth_factory(root=root, config=ENABLED)
    with Client() as c:
        for ref in ("v1", sha256(payload)):
            g = get(srv.url, repo, ref, c)
            assert g.status_code == 200, g.text
            assert g.headers["Docker-Content-Digest"] == sha256(payload)
            # distribution kept the payload only; berth signs it, as distribution does
            assert g.headers["Content-Type"] == SIGNED
            assert payload_of(g.content) == payload
