"""Start and stop the real `berth` binary (or distribution, for interop) on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
BERTH_BIN = Path(os.environ.get("BERTH_BIN", ROOT / "target" / "release" / "berth"))
# Where the plugins workspace leaves its components (`cd plugins && cargo build --target
# wasm32-wasip2 --release`); BERTH_PLUGIN_DIR overrides.
PLUGIN_DIR = Path(os.environ.get("BERTH_PLUGIN_DIR", ROOT / "plugins" / "target" / "wasm32-wasip2" / "release"))
# BERTH_TEST_STORAGE=storage-fs runs every start_berth on the storage-fs component instead of the
# native filesystem driver (same root directory, preopened read-write as /data).
# BERTH_TEST_STORAGE=s3 or azure runs them on a real S3-compatible server (moto) or Azurite
# instead, each root directory mapped to its own key prefix in the bucket.
TEST_STORAGE = os.environ.get("BERTH_TEST_STORAGE", "")
OBJECT_STORES = ("s3", "azure")


def object_store_config(kind: str, root: Path, **extra) -> dict:
    """`storage.<kind>` for an object store, in a bucket (container) and key prefix of `root`'s
    own: no test's listings see another test's objects (and moto and Azurite, which scan a
    whole bucket per listing, never scan them)."""
    import hashlib

    import objectstores

    name = "berth-" + hashlib.sha256(str(root).encode()).hexdigest()[:16]
    if kind == "s3":
        if "bucket" not in extra:
            extra["bucket"] = objectstores.s3_bucket(name)
        return {"s3": objectstores.s3_config("/" + name, **extra)}
    if "container" not in extra:
        extra["container"] = objectstores.azure_container(name)
    return {"azure": objectstores.azure_config("/" + name, **extra)}


def plugin_wasm(name: str) -> Path:
    """The built component of first-party plugin `name` (e.g. storage-fs)."""
    return PLUGIN_DIR / f"berth_{name.replace('-', '_')}.wasm"


def plugin_storage_config(name: str, root: Path | None = None, **extra) -> dict:
    """Config fragment selecting storage plugin `name`; with `root`, preopened rw as /data."""
    entry: dict = {"path": str(plugin_wasm(name))}
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        entry["grants"] = {"dirs": [{"host": str(root), "guest": "/data", "mode": "rw"}]}
        entry["config"] = {"root": "/data"}
        entry["instances"] = 2
    entry.update(extra)
    return {"plugins": {name: entry}, "storage": {"plugin": {"name": name}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running registry process."""

    proc: subprocess.Popen
    port: int
    root: Path | None
    log_path: Path
    config_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: the process dies with no chance to clean up."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def wait_until_ready(proc: subprocess.Popen, ready, log_path: Path, what: str = "server",
                     deadline_s: float = 30, poll_s: float = 0.05) -> None:
    """Poll `ready()` (connection errors count as not yet) until it is true; fail with the log
    if `proc` exits first or the deadline passes (the process is then killed)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        time.sleep(poll_s)
    proc.kill()
    raise RuntimeError(f"{what} did not become ready:\n{log_path.read_text(errors='replace')}")


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    wait_until_ready(proc, lambda: requests.get(url + "/v2/", timeout=1).status_code in (200, 401), log_path)


def need_plugin(name: str) -> Path:
    """The built component of plugin `name`; skips the test if it is not built, fails it under
    BERTH_REQUIRE_PLUGINS (the test run has just built them)."""
    import pytest

    p = plugin_wasm(name)
    if not p.is_file():
        if os.environ.get("BERTH_REQUIRE_PLUGINS"):
            pytest.fail(f"{p} is not built, and BERTH_REQUIRE_PLUGINS is set")
        pytest.skip(f"{p} is not built (cd plugins && cargo build --target wasm32-wasip2 --release)")
    return p


def start_berth(workdir: Path, root: Path | None = None, config: dict | None = None,
                env: dict | None = None, port: int | None = None) -> Server:
    """Start berth with storage under `root` (default workdir/data).

    `config` is merged over the default test config (filesystem storage, delete enabled).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cfg: dict = {
        "log": {"level": "info"},
        "http": {"addr": f"127.0.0.1:{port}"},
        "storage": {"delete": {"enabled": True}},
    }
    if config and "storage" in config and "inmemory" in config["storage"]:
        root = None
    elif config and "storage" in config and "plugin" in config["storage"]:
        root = root or (workdir / "data")
    elif config and "storage" in config and any(k in config["storage"] for k in ("s3", "azure", "gcs")):
        root = None
    elif (TEST_STORAGE and TEST_STORAGE != "filesystem" and "filesystem" not in (config or {}).get("storage", {})
          and not any(k.startswith(("BERTH_STORAGE_FILESYSTEM", "BERTH_STORAGE_INMEMORY")) for k in (env or {}))):
        # Tests about the native driver's own keys keep it.
        root = root or workdir / "data"
        if TEST_STORAGE in OBJECT_STORES:
            # Blobs stream through berth, so the suite sees berth's own headers; the redirects
            # have their own tests (test_object_storage.py).
            cfg["storage"].update(object_store_config(TEST_STORAGE, root))
            cfg["storage"]["redirect"] = {"disable": True}
            root = None
        else:
            plugin = plugin_storage_config(TEST_STORAGE, root)
            _merge(plugin, config or {})
            config = plugin
    else:
        root = root or workdir / "data"
        cfg["storage"]["filesystem"] = {"rootdirectory": str(root)}
    _merge(cfg, config or {})
    config_path = workdir / f"berth-{port}.yml"
    config_path.write_text(yaml.safe_dump(cfg))
    log_path = workdir / f"berth-{port}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(BERTH_BIN), "serve", "--config", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=workdir)
    server = Server(proc, port, root, log_path, config_path)
    _wait_ready(proc, server.url, log_path)
    return server


def start_distribution(workdir: Path, root: Path, port: int | None = None, config: dict | None = None) -> Server:
    """Start distribution 2.8.2 (Debian's docker-registry) on `root`; under BERTH_TEST_STORAGE=s3
    on the same bucket prefix a berth with that root uses. `config` is merged over its config."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    storage = object_store_config("s3", root) if TEST_STORAGE == "s3" else {"filesystem": {"rootdirectory": str(root)}}
    cfg = {
        "version": 0.1,
        "log": {"level": "warn"},
        "http": {"addr": f"127.0.0.1:{port}"},
        "storage": {**storage, "delete": {"enabled": True}, "redirect": {"disable": True}},
    }
    _merge(cfg, config or {})
    config_path = workdir / f"distribution-{port}.yml"
    config_path.write_text(yaml.safe_dump(cfg))
    log_path = workdir / f"distribution-{port}.log"
    with open(log_path, "wb") as log:
        # distribution's AWS SDK refuses a custom CA bundle with its own transport; loopback
        # S3 needs none.
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        proc = subprocess.Popen(["docker-registry", "serve", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    server = Server(proc, port, root, log_path, config_path)
    _wait_ready(proc, server.url, log_path)
    return server


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
