"""Small helpers to talk to an OCI registry with `requests`: digests, blob and manifest pushes, images.

Everything here is plain HTTP against the OCI distribution spec v1.1; no registry-specific behaviour.
Every request carries a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
from urllib.parse import urljoin

import requests

TIMEOUT = 30

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)

EMPTY_JSON = b"{}"


class Client(requests.Session):
    """A requests.Session with a default timeout on every request."""

    def __init__(self, timeout: float = TIMEOUT):
        super().__init__()
        self.default_timeout = timeout

    def request(self, method, url, **kwargs):  # noqa: D401
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, **kwargs)


def _s(session):
    return session if session is not None else Client()


# --- digests -------------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def digest(data: bytes, algo: str = "sha256") -> str:
    if algo == "sha256":
        return sha256(data)
    if algo == "sha512":
        return sha512(data)
    raise ValueError(algo)


def hex_of(dgst: str) -> str:
    return dgst.split(":", 1)[1]


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


# --- responses -----------------------------------------------------------------------------

def error_codes(resp: requests.Response) -> list[str]:
    """The `code` of every error in an OCI error body ([] if the body is not one)."""
    try:
        body = resp.json()
    except ValueError:
        return []
    if not isinstance(body, dict):
        return []
    return [e.get("code") for e in body.get("errors", []) if isinstance(e, dict)]


def absolute(url: str, location: str) -> str:
    """Resolve a Location header (absolute URL or absolute path) against the registry URL."""
    return urljoin(url + "/", location)


# --- blobs ---------------------------------------------------------------------------------

def start_upload(url: str, repo: str, session=None) -> str:
    """POST /v2/<repo>/blobs/uploads/ and return the absolute upload URL."""
    s = _s(session)
    r = s.post(f"{url}/v2/{repo}/blobs/uploads/")
    if r.status_code != 202:
        raise AssertionError(f"POST upload: {r.status_code} {r.text}")
    return absolute(url, r.headers["Location"])


def push_blob(url: str, repo: str, data: bytes, session=None, algo: str = "sha256") -> str:
    """Push `data` (POST then PUT ?digest=) and return its digest."""
    s = _s(session)
    dgst = digest(data, algo)
    loc = start_upload(url, repo, s)
    r = s.put(loc, params={"digest": dgst}, data=data,
              headers={"Content-Type": "application/octet-stream"})
    if r.status_code != 201:
        raise AssertionError(f"PUT blob {dgst}: {r.status_code} {r.text}")
    return dgst


def get_blob(url: str, repo: str, dgst: str, session=None) -> bytes:
    s = _s(session)
    r = s.get(f"{url}/v2/{repo}/blobs/{dgst}")
    if r.status_code != 200:
        raise AssertionError(f"GET blob {dgst}: {r.status_code} {r.text}")
    return r.content


# --- manifests -----------------------------------------------------------------------------

def to_bytes(manifest) -> bytes:
    if isinstance(manifest, (bytes, bytearray)):
        return bytes(manifest)
    return json.dumps(manifest, indent=2).encode()


def descriptor(media_type: str, data: bytes, algo: str = "sha256", **extra) -> dict:
    d = {"mediaType": media_type, "digest": digest(data, algo), "size": len(data)}
    d.update(extra)
    return d


def push_manifest(url: str, repo: str, ref: str, manifest, media_type: str | None = None,
                  session=None, headers: dict | None = None) -> requests.Response:
    """PUT a manifest (dict or bytes) at `ref`; returns the response (no status check)."""
    s = _s(session)
    body = to_bytes(manifest)
    if media_type is None:
        media_type = json.loads(body).get("mediaType", OCI_MANIFEST)
    h = {"Content-Type": media_type}
    h.update(headers or {})
    return s.put(f"{url}/v2/{repo}/manifests/{ref}", data=body, headers=h)


def get_manifest(url: str, repo: str, ref: str, accept=ALL_MANIFEST_TYPES, session=None) -> requests.Response:
    s = _s(session)
    if not isinstance(accept, str):
        accept = ", ".join(accept)
    return s.get(f"{url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept})


def image_config(seed: str = "") -> bytes:
    cfg = {"architecture": "amd64", "os": "linux", "author": seed or os.urandom(8).hex(),
           "rootfs": {"type": "layers", "diff_ids": []}}
    return json.dumps(cfg).encode()


def build_manifest(config: bytes, layers: list[bytes], media_type: str = OCI_MANIFEST,
                   config_type: str | None = None, layer_type: str | None = None,
                   subject: dict | None = None, artifact_type: str | None = None,
                   annotations: dict | None = None) -> dict:
    docker = media_type == DOCKER_MANIFEST
    config_type = config_type or (DOCKER_CONFIG if docker else OCI_CONFIG)
    layer_type = layer_type or (DOCKER_LAYER if docker else OCI_LAYER)
    m: dict = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type:
        m["artifactType"] = artifact_type
    m["config"] = descriptor(config_type, config)
    m["layers"] = [descriptor(layer_type, layer) for layer in layers]
    if subject:
        m["subject"] = subject
    if annotations:
        m["annotations"] = annotations
    return m


def build_index(children: list[tuple[bytes, str]], media_type: str = OCI_INDEX,
                platforms: list[dict] | None = None, subject: dict | None = None,
                artifact_type: str | None = None, annotations: dict | None = None) -> dict:
    """`children` are (manifest bytes, media type) pairs."""
    idx: dict = {"schemaVersion": 2, "mediaType": media_type}
    if artifact_type:
        idx["artifactType"] = artifact_type
    idx["manifests"] = []
    for i, (body, mt) in enumerate(children):
        d = descriptor(mt, body)
        if platforms:
            d["platform"] = platforms[i]
        idx["manifests"].append(d)
    if subject:
        idx["subject"] = subject
    if annotations:
        idx["annotations"] = annotations
    return idx


def make_image(url: str, repo: str, tag: str | None, layers: list[bytes] | None = None,
               media_type: str = OCI_MANIFEST, config: bytes | None = None, session=None,
               return_body: bool = False):
    """Push config, layers and a manifest (tagged `tag`, or by digest if tag is None).

    Returns the manifest digest (or (digest, manifest bytes) with return_body=True).
    """
    s = _s(session)
    layers = [os.urandom(512)] if layers is None else layers
    config = config if config is not None else image_config()
    push_blob(url, repo, config, s)
    for layer in layers:
        push_blob(url, repo, layer, s)
    body = to_bytes(build_manifest(config, layers, media_type=media_type))
    dgst = sha256(body)
    r = push_manifest(url, repo, tag or dgst, body, media_type, s)
    if r.status_code != 201:
        raise AssertionError(f"PUT manifest {repo}:{tag}: {r.status_code} {r.text}")
    return (dgst, body) if return_body else dgst


def raw_request(url: str, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = TIMEOUT):
    """Send `path` byte for byte (no dot-segment normalisation, unlike requests/urllib3).

    Returns (status, headers as a case-insensitive dict, body bytes).
    """
    import http.client
    from urllib.parse import urlparse

    from requests.structures import CaseInsensitiveDict

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, CaseInsensitiveDict(resp.getheaders()), data
    finally:
        conn.close()


def raw_error_codes(body: bytes) -> list[str]:
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    return [e.get("code") for e in doc.get("errors", []) if isinstance(e, dict)]
