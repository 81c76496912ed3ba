"""Real object storage services for the tests, started on loopback: moto's standalone S3 server
(from PyPI) and Azurite's blob service (from npm). Each starts once per test process, on a free
port, and is stopped when the process exits. `BERTH_TEST_S3_ENDPOINT` / `BERTH_TEST_AZURE_URL`
point the tests at services already running instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from harness import wait_until_ready

S3_BUCKET = "berth-tests"
S3_KEYS = {"accesskey": "berth-test-key", "secretkey": "berth-test-secret", "region": "us-east-1"}
AZURE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, in Microsoft's documentation).
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZURE_CONTAINER = "berth-tests"
AZURITE_PREFIX = Path(os.environ.get("BERTH_AZURITE_PREFIX", Path.home() / ".cache" / "berth" / "azurite"))

_started: dict[str, str] = {}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(name: str, argv: list[str], ready, deadline_s: float = 60) -> subprocess.Popen:
    log = tempfile.NamedTemporaryFile(prefix=f"berth-{name}-", suffix=".log", delete=False)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    atexit.register(lambda: (proc.terminate(), proc.wait(10)))
    wait_until_ready(proc, ready, Path(log.name), what=name, deadline_s=deadline_s, poll_s=0.1)
    return proc


def s3_endpoint() -> str:
    """Endpoint of an S3-compatible server holding bucket S3_BUCKET."""
    if "s3" not in _started:
        url = os.environ.get("BERTH_TEST_S3_ENDPOINT")
        if not url:
            port = _free_port()
            url = f"http://127.0.0.1:{port}"
            _spawn("moto", ["python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                   lambda: requests.get(url + "/", timeout=1).status_code < 500)
        if not _bucket_exists(url):
            s3_client(url).create_bucket(Bucket=S3_BUCKET)
        _started["s3"] = url
    return _started["s3"]


def s3_client(url: str | None = None):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url or s3_endpoint(), aws_access_key_id=S3_KEYS["accesskey"],
                        aws_secret_access_key=S3_KEYS["secretkey"], region_name=S3_KEYS["region"],
                        config=Config(s3={"addressing_style": "path"}))


def _bucket_exists(url: str) -> bool:
    try:
        s3_client(url).head_bucket(Bucket=S3_BUCKET)
        return True
    except Exception:
        return False


_made: set[tuple[str, str]] = set()


def s3_bucket(name: str) -> str:
    """Bucket `name`, created on first use (by this process or another one)."""
    if ("s3", name) not in _made:
        try:
            s3_client().create_bucket(Bucket=name)
        except Exception as e:  # noqa: BLE001 - botocore's error class is generated per service
            if getattr(e, "response", {}).get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        _made.add(("s3", name))
    return name


def azure_container(name: str) -> str:
    """Container `name`, created on first use (by this process or another one)."""
    if ("azure", name) not in _made:
        from azure.core.exceptions import ResourceExistsError

        try:
            azure_service().create_container(name)
        except ResourceExistsError:
            pass
        _made.add(("azure", name))
    return name


def s3_config(rootdirectory: str, **extra) -> dict:
    """berth's (and distribution's) `storage.s3` section for the test server."""
    cfg = {**S3_KEYS, "bucket": S3_BUCKET, "regionendpoint": s3_endpoint(), "rootdirectory": rootdirectory}
    cfg.update(extra)
    return cfg


class SlowS3:
    """A proxy in front of the test S3 server that answers the requests `slow` picks (method,
    path and query, headers) only after `delay` seconds, as a real service does with a server-
    side copy or the completion of a large multipart upload. Everything else passes at once."""

    def __init__(self, delay: float, slow):
        import http.client
        import http.server
        import threading
        import urllib.parse

        upstream = urllib.parse.urlsplit(s3_endpoint())
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    del self.headers["Transfer-Encoding"]
                    self.headers["Content-Length"] = str(len(body))
                else:
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n) if n else None
                if slow(self.command, self.path, self.headers):
                    proxy.delayed += 1
                    time.sleep(delay)
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=dict(self.headers))
                    r = conn.getresponse()
                    data = r.read()
                finally:
                    conn.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                # A HEAD answer's length is the object's, not its (empty) body's.
                length = r.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

        self.delayed = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def azure_url() -> str:
    """Blob service URL of an Azurite holding container AZURE_CONTAINER."""
    if "azure" not in _started:
        url = os.environ.get("BERTH_TEST_AZURE_URL")
        if not url:
            exe = AZURITE_PREFIX / "node_modules" / ".bin" / "azurite-blob"
            if not exe.exists():
                raise RuntimeError(f"azurite is not installed at {exe}: run tests/setup.sh")
            port = _free_port()
            location = tempfile.mkdtemp(prefix="berth-azurite-")
            atexit.register(lambda: shutil.rmtree(location, ignore_errors=True))
            url = f"http://127.0.0.1:{port}/{AZURE_ACCOUNT}"
            _spawn("azurite", [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", location,
                               "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
                   lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=1) is not None)
        container = azure_service(url).get_container_client(AZURE_CONTAINER)
        if not container.exists():
            container.create_container()
        _started["azure"] = url
    return _started["azure"]


def azure_service(url: str | None = None):
    from azure.storage.blob import BlobServiceClient

    conn = (f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
            f"BlobEndpoint={url or azure_url()};")
    return BlobServiceClient.from_connection_string(conn)


def azure_config(rootdirectory: str, **extra) -> dict:
    cfg = {"accountname": AZURE_ACCOUNT, "accountkey": AZURE_KEY, "container": AZURE_CONTAINER,
           "serviceurl": azure_url(), "rootdirectory": rootdirectory}
    cfg.update(extra)
    return cfg


def main() -> None:
    """Start both services for a whole test run: print their environment, then wait."""
    import signal
    import sys

    print(f"export BERTH_TEST_S3_ENDPOINT={s3_endpoint()}")
    print(f"export BERTH_TEST_AZURE_URL={azure_url()}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
