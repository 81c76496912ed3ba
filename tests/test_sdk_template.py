"""The plugin author's path, walked as sdk/README.md tells it: the template copied out of the
repository with the README's Cargo.toml, built for wasm32-wasip2, run through `berth plugin
test`, then serving a registry that takes a 200 MiB push and pull under the default memory cap.

The copy builds in the plugins' target directory, so only the copied crate compiles (once per
session); the SDK and its dependencies are already built there by the plugins workspace.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import BERTH_BIN, PLUGIN_DIR, ROOT, start_berth
from ocihelpers import OCI_CONFIG, OCI_LAYER, absolute, image_config, push_blob, push_manifest, start_upload

README = ROOT / "sdk" / "README.md"
BLOB_MIB = 200


def readme_cargo_toml() -> str:
    """The Cargo.toml sdk/README.md gives an author building outside the repository."""
    text = README.read_text()
    m = re.search(r"replace `my-driver/Cargo\.toml` with this.*?```toml\n(.*?)```", text, re.S)
    assert m, "sdk/README.md no longer shows the Cargo.toml for a crate outside the repository"
    return m.group(1)


@pytest.fixture(scope="module")
def my_driver(tmp_path_factory) -> Path:
    """The template, copied and built as sdk/README.md says; the path of its component."""
    if shutil.which("cargo") is None:
        if os.environ.get("BERTH_REQUIRE_PLUGINS"):
            pytest.fail("cargo is not installed, and BERTH_REQUIRE_PLUGINS is set")
        pytest.skip("cargo is not installed")
    crate = tmp_path_factory.mktemp("author") / "my-driver"
    # cp -r /path/to/berth/plugins/template my-driver; cp /path/to/berth/plugins/Cargo.lock my-driver/
    shutil.copytree(ROOT / "plugins" / "template", crate, ignore=shutil.ignore_patterns("target"))
    shutil.copy(ROOT / "plugins" / "Cargo.lock", crate / "Cargo.lock")
    toml = readme_cargo_toml()
    assert "/path/to/berth/sdk" in toml
    (crate / "Cargo.toml").write_text(toml.replace("/path/to/berth/sdk", str(ROOT / "sdk")))
    target = PLUGIN_DIR.parent.parent  # plugins/target, shared with the plugins workspace
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    b = subprocess.run(["cargo", "build", "--target", "wasm32-wasip2", "--release"], cwd=crate, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert b.returncode == 0, b.stderr[-4000:]
    wasm = target / "wasm32-wasip2" / "release" / "my_driver.wasm"
    assert wasm.is_file(), b.stderr[-2000:]
    return wasm


def test_the_copied_template_passes_the_driver_suite(my_driver, tmp_path):
    scratch = tmp_path / "scratch"  # not created: `--grant` creates it
    r = subprocess.run([str(BERTH_BIN), "plugin", "test", str(my_driver), "--grant", f"{scratch}:/data",
                        "--config", "root=/data", "--instances", "2"],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    cases = [line for line in r.stdout.splitlines() if line.startswith(("ok ", "FAILED "))]
    assert cases and all(line.startswith("ok ") for line in cases), r.stdout
    names = {line.split()[1] for line in cases}
    assert {"large_file", "concurrent_writers_and_readers", "rename_races", "list_paging"} <= names, names
    assert f": {len(cases)} passed, 0 failed (" in r.stdout.splitlines()[-1], r.stdout
    assert scratch.is_dir()


def blob_chunks(seed: int, mib: int):
    """`mib` MiB of deterministic bytes, 1 MiB at a time: never the whole blob in memory."""
    rng = random.Random(seed)
    for _ in range(mib):
        yield rng.randbytes(1 << 20)


def test_the_copied_template_serves_a_200_mib_push_and_pull(my_driver, tmp_path, client):
    root = tmp_path / "data"
    root.mkdir()
    cfg = {
        # No memory_mib: the default cap (64 MiB) holds, a third of the blob.
        "plugins": {"my-driver": {"path": str(my_driver), "instances": 2, "config": {"root": "/data"},
                                  "grants": {"dirs": [{"host": str(root), "guest": "/data", "mode": "rw"}]}}},
        "storage": {"plugin": {"name": "my-driver"}},
    }
    srv = start_berth(tmp_path, root=root, config=cfg)
    try:
        # Push: one streamed PATCH from a generator, hashed on the way, then PUT ?digest=.
        h = hashlib.sha256()

        def body():
            for chunk in blob_chunks(7, BLOB_MIB):
                h.update(chunk)
                yield chunk

        loc = start_upload(srv.url, "author/app", client)
        r = client.patch(loc, data=body(), headers={"Content-Type": "application/octet-stream"}, timeout=300)
        assert r.status_code == 202, (r.status_code, r.text)
        layer = "sha256:" + h.hexdigest()
        r = client.put(absolute(srv.url, r.headers["Location"]), params={"digest": layer}, timeout=300)
        assert r.status_code == 201, (r.status_code, r.text)
        size = BLOB_MIB << 20

        config = image_config("author")
        push_blob(srv.url, "author/app", config, client)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                       "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer, "size": size}],
        }
        r = push_manifest(srv.url, "author/app", "v1", manifest, session=client)
        assert r.status_code == 201, (r.status_code, r.text)

        # Pull: the manifest by tag, then the layer it names, streamed and hashed.
        r = client.get(f"{srv.url}/v2/author/app/manifests/v1",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 200 and r.json()["layers"][0]["digest"] == layer
        pulled, n = hashlib.sha256(), 0
        with client.get(f"{srv.url}/v2/author/app/blobs/{layer}", stream=True, timeout=300) as r:
            assert r.status_code == 200, r.text
            assert r.headers["Docker-Content-Digest"] == layer
            for piece in r.iter_content(1 << 20):
                pulled.update(piece)
                n += len(piece)
        assert (n, "sha256:" + pulled.hexdigest()) == (size, layer)

        # The blob is a file in the granted directory, in distribution's layout.
        hexd = layer.split(":")[1]
        assert (root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data").stat().st_size == size
        assert "memory cap" not in srv.log()
    finally:
        srv.stop()
