"""Generate and read OCI image layouts (and skopeo `dir:` images) for black-box tests and the benchmark.

Everything is deterministic for a given seed: layers are real gzip'd tar archives (fixed mtimes, fixed
gzip header), configs are real OCI image configs whose `rootfs.diff_ids` are the digests of the
uncompressed tars, and manifests/indexes are serialised once and then treated as opaque bytes, so a
digest computed here is the digest a registry must hand back.

Command line (used by bench/run.sh):
    python3 tests/ocilayout.py big DIR --tag TAG --size-mib 256 [--seed S] [--level 0]
writes an OCI layout with one image whose single layer holds one file of random (incompressible) bytes.
    python3 tests/ocilayout.py multiarch DIR --tag TAG
writes a small linux/amd64 + linux/arm64 image index.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_LAYOUT_VERSION = "1.0.0"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=False).encode()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    d = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    d.update(extra)
    return d


# ---------------------------------------------------------------------------------------------------
# layers and configs


def make_tar(files: dict[str, bytes], mtime: int = 1_700_000_000) -> bytes:
    """An uncompressed tar with the given files (parent directories are created), deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d + "/")
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    info.mtime = mtime
                    tar.addfile(info)
            data = files[path]
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = mtime
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """gzip with mtime 0 and no file name, so the same input always gives the same bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=level, mtime=0, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


@dataclass
class Layer:
    tar: bytes          # uncompressed
    blob: bytes         # gzip'd, what the registry stores

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)


def make_layer(files: dict[str, bytes], level: int = 6) -> Layer:
    tar = make_tar(files)
    return Layer(tar, gzip_bytes(tar, level))


def random_files(rng: random.Random, label: str, n: int = 3) -> dict[str, bytes]:
    files = {f"etc/{label}/release": f"{label}\n".encode()}
    for i in range(n):
        size = rng.randint(100, 20_000)
        files[f"usr/share/{label}/file{i}.bin"] = rng.randbytes(size)
        files[f"usr/share/{label}/file{i}.txt"] = (f"{label} {i} " * rng.randint(1, 200)).encode()
    return files


def make_config(layers: list[Layer], arch: str = "amd64", os_: str = "linux",
                variant: str | None = None, label: str = "test") -> bytes:
    cfg = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": os_,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"berth.test": label},
        },
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"berth test layer {i}"}
                    for i in range(len(layers))],
    }
    if variant:
        cfg["variant"] = variant
    return canonical_json(cfg)


# ---------------------------------------------------------------------------------------------------
# an image (manifest + config + layers) independent of where it is written


@dataclass
class Image:
    manifest: bytes
    media_type: str
    config: bytes
    layers: list[Layer]
    platform: dict | None = None

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    def blobs(self) -> dict[str, bytes]:
        out = {self.config_digest: self.config}
        for l in self.layers:
            out[l.digest] = l.blob
        return out

    def descriptor(self) -> dict:
        d = descriptor(self.media_type, self.manifest)
        if self.platform:
            d["platform"] = dict(self.platform)
        return d


def make_image(seed: int | str = 0, n_layers: int = 2, arch: str = "amd64", variant: str | None = None,
               docker: bool = False, label: str | None = None, layers: list[Layer] | None = None,
               annotations: dict | None = None) -> Image:
    """An image with `n_layers` small unique layers (or the given ones)."""
    rng = random.Random(f"{seed}-{arch}-{variant}-{docker}")
    label = label or f"img-{seed}-{arch}"
    if layers is None:
        layers = [make_layer(random_files(rng, f"{label}-l{i}")) for i in range(n_layers)]
    config = make_config(layers, arch=arch, variant=variant, label=label)
    if docker:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_DOCKER_MANIFEST,
            "config": descriptor(MT_DOCKER_CONFIG, config),
            "layers": [descriptor(MT_DOCKER_LAYER, l.blob) for l in layers],
        }
        mt = MT_DOCKER_MANIFEST
    else:
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": descriptor(MT_OCI_CONFIG, config),
            "layers": [descriptor(MT_OCI_LAYER_GZIP, l.blob) for l in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        mt = MT_OCI_MANIFEST
    platform = {"architecture": arch, "os": "linux"}
    if variant:
        platform["variant"] = variant
    return Image(canonical_json(manifest), mt, config, layers, platform)


@dataclass
class Index:
    body: bytes
    media_type: str
    images: list[Image]

    @property
    def digest(self) -> str:
        return sha256(self.body)

    def blobs(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for im in self.images:
            out.update(im.blobs())
        return out

    def descriptor(self) -> dict:
        return descriptor(self.media_type, self.body)


def make_index(images: list[Image], docker: bool = False) -> Index:
    mt = MT_DOCKER_LIST if docker else MT_OCI_INDEX
    body = {"schemaVersion": 2, "mediaType": mt, "manifests": [im.descriptor() for im in images]}
    return Index(canonical_json(body), mt, images)


def make_multiarch(seed: int | str = 0, docker: bool = False) -> Index:
    """A linux/amd64 + linux/arm64/v8 index; the two images share their first (base) layer."""
    rng = random.Random(f"base-{seed}")
    base = make_layer(random_files(rng, f"base-{seed}"))
    images = []
    for arch, variant in (("amd64", None), ("arm64", "v8")):
        r = random.Random(f"{seed}-{arch}")
        own = make_layer(random_files(r, f"app-{seed}-{arch}"))
        images.append(make_image(seed, arch=arch, variant=variant, docker=docker, layers=[base, own]))
    return make_index(images, docker=docker)


# ---------------------------------------------------------------------------------------------------
# OCI image layout on disk


class OciLayout:
    """A directory in the OCI image layout: oci-layout, index.json, blobs/<alg>/<hex>."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        lay = self.path / "oci-layout"
        if not lay.exists():
            lay.write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
        idx = self.path / "index.json"
        if not idx.exists():
            idx.write_bytes(canonical_json({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}))

    def blob_path(self, digest: str) -> Path:
        alg, hexd = digest.split(":", 1)
        return self.path / "blobs" / alg / hexd

    def put_blob(self, data: bytes) -> str:
        d = sha256(data)
        p = self.blob_path(d)
        if not p.exists():
            p.write_bytes(data)
        return d

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_bytes())

    def _tag(self, desc: dict, tag: str) -> None:
        idx = self.index()
        idx["manifests"] = [m for m in idx["manifests"]
                            if m.get("annotations", {}).get(REF_NAME) != tag]
        d = {k: v for k, v in desc.items() if k in ("mediaType", "digest", "size")}
        d["annotations"] = {REF_NAME: tag}
        idx["manifests"].append(d)
        (self.path / "index.json").write_bytes(canonical_json(idx))

    def add_image(self, image: Image, tag: str | None = None) -> dict:
        for blob in image.blobs().values():
            self.put_blob(blob)
        self.put_blob(image.manifest)
        desc = image.descriptor()
        if tag:
            self._tag(desc, tag)
        return desc

    def add_index(self, index: Index, tag: str | None = None) -> dict:
        for im in index.images:
            self.add_image(im)
        self.put_blob(index.body)
        desc = index.descriptor()
        if tag:
            self._tag(desc, tag)
        return desc

    def resolve(self, tag: str) -> dict:
        """The descriptor index.json holds for `tag`."""
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get(REF_NAME) == tag:
                return m
        raise KeyError(tag)

    def closure(self, digest: str) -> dict[str, bytes]:
        """Every blob reachable from manifest/index `digest` (including itself), digest -> bytes."""
        out: dict[str, bytes] = {}
        body = self.blob(digest)
        out[digest] = body
        doc = json.loads(body)
        for child in doc.get("manifests", []):
            out.update(self.closure(child["digest"]))
        if "config" in doc:
            out[doc["config"]["digest"]] = self.blob(doc["config"]["digest"])
        for layer in doc.get("layers", []):
            out[layer["digest"]] = self.blob(layer["digest"])
        return out


def write_dir_image(path: str | os.PathLike, image: Image | Index) -> None:
    """containers/image `dir:` transport: `version`, `manifest.json`, blobs named by hex digest;
    for a list, each instance manifest is `<hex>.manifest.json`. Any manifest type may be stored,
    which is how a Docker schema2 image (or list) is pushed with its digests preserved."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    (p / "version").write_text("Directory Transport Version: 1.1\n")
    images = image.images if isinstance(image, Index) else [image]
    for im in images:
        for d, blob in im.blobs().items():
            (p / d.split(":", 1)[1]).write_bytes(blob)
    if isinstance(image, Index):
        for im in images:
            (p / (im.digest.split(":", 1)[1] + ".manifest.json")).write_bytes(im.manifest)
        (p / "manifest.json").write_bytes(image.body)
    else:
        (p / "manifest.json").write_bytes(image.manifest)


# ---------------------------------------------------------------------------------------------------
# big single-layer image for the benchmark


def write_big_image(path: str | os.PathLike, tag: str, size_mib: int, seed: str = "0", level: int = 0) -> dict:
    """One layer: a tar holding one file of `size_mib` MiB of random bytes, gzip'd at `level`
    (random data does not compress; level 0 writes stored deflate blocks, which is fast and still a
    valid tar+gzip layer). Different seeds give different layers. Streams to disk in chunks."""
    layout = OciLayout(path)
    tmp = layout.path / "blobs" / "layer.tmp"
    rng = random.Random(f"big-{size_mib}-{seed}")
    total = size_mib * 1024 * 1024
    tar_hash = hashlib.sha256()
    gz_hash = hashlib.sha256()

    class HashingFile(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self):
            return True

        def write(self, b):
            gz_hash.update(b)
            return self.f.write(b)

    with open(tmp, "wb") as raw:
        hf = HashingFile(raw)
        with gzip.GzipFile(fileobj=hf, mode="wb", compresslevel=level, mtime=0, filename="") as gz:
            info = tarfile.TarInfo("data/random.bin")
            info.size = total
            info.mode = 0o644
            info.mtime = 1_700_000_000
            header = info.tobuf(format=tarfile.PAX_FORMAT)
            tar_hash.update(header)
            gz.write(header)
            left = total
            chunk = 4 * 1024 * 1024
            while left:
                n = min(chunk, left)
                b = rng.randbytes(n)
                tar_hash.update(b)
                gz.write(b)
                left -= n
            pad = (512 - total % 512) % 512
            trailer = b"\0" * pad + b"\0" * 1024  # end-of-archive: two zero blocks
            tar_hash.update(trailer)
            gz.write(trailer)
    layer_digest = "sha256:" + gz_hash.hexdigest()
    layer_size = tmp.stat().st_size
    os.replace(tmp, layout.blob_path(layer_digest))
    diff_id = "sha256:" + tar_hash.hexdigest()

    class _L:  # enough of Layer for make_config
        pass

    fake = _L()
    fake.diff_id = diff_id
    config = make_config([fake], label=f"big-{size_mib}-{seed}")  # type: ignore[list-item]
    layout.put_blob(config)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": descriptor(MT_OCI_CONFIG, config),
        "layers": [{"mediaType": MT_OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
    })
    layout.put_blob(manifest)
    desc = descriptor(MT_OCI_MANIFEST, manifest)
    layout._tag(desc, tag)
    return desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    big = sub.add_parser("big", help="one image with one big random layer")
    big.add_argument("dir")
    big.add_argument("--tag", default="big")
    big.add_argument("--size-mib", type=int, default=256)
    big.add_argument("--seed", default="0", help="different seeds give different layers")
    big.add_argument("--level", type=int, default=0, help="gzip level (0: stored blocks, fastest)")
    small = sub.add_parser("multiarch", help="a small linux/amd64 + linux/arm64 index")
    small.add_argument("dir")
    small.add_argument("--tag", default="multi")
    args = ap.parse_args()
    if args.cmd == "big":
        print(json.dumps(write_big_image(args.dir, args.tag, args.size_mib, args.seed, args.level)))
    else:
        print(json.dumps(OciLayout(args.dir).add_index(make_multiarch(), args.tag)))


if __name__ == "__main__":
    main()
