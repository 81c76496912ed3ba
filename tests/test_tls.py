"""HTTPS (`http.tls`): a CA and a server certificate for 127.0.0.1/localhost are made here with the
openssl CLI; berth serves the registry over TLS, verified against that CA by requests and by
skopeo (`--dest-cert-dir` / `--src-cert-dir`), and by curl over HTTP/2 (negotiated with ALPN, as
distribution offers it) as well as HTTP/1.1; shrugs off plain HTTP and stalled handshakes on its
TLS port, drains HTTP/2 downloads on shutdown, ends an HTTP/2 connection whose downloads no one
reads (with the `h2` library as a client that grants no window), and refuses to start (naming the
key) on a bad certificate or key file.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

import ocilayout as ol
from harness import BERTH_BIN, Server, free_port, rss_mib, wait_until_ready
from ocihelpers import push_blob, sha256

REPO = "secure/app"


def openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.fail("openssl is not installed (tests/setup.sh installs it)")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.crt/ca.key, and server.crt/server.key signed by it for IP 127.0.0.1 and localhost."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=berth test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                               "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                               "authorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    # skopeo (containers/image) reads a registry's CAs from *.crt files in --*-cert-dir.
    (d / "certs").mkdir()
    shutil.copy(d / "ca.crt", d / "certs" / "ca.crt")
    return d


def write_config(workdir: Path, port: int, cert: Path, key: Path, http: dict | None = None) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "log": {"level": "debug"},
        "http": {"addr": f"127.0.0.1:{port}", "tls": {"certificate": str(cert), "key": str(key)}, **(http or {})},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
    }
    path = workdir / f"berth-{port}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_tls_berth(workdir: Path, pki: Path, http: dict | None = None) -> Server:
    """berth on HTTPS with the test server certificate (and `http` settings); ready once /v2/
    answers over TLS."""
    port = free_port()
    config_path = write_config(workdir, port, pki / "server.crt", pki / "server.key", http)
    log_path = workdir / f"berth-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(BERTH_BIN), "serve", "--config", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(proc, port, workdir / "data", log_path, config_path)
    server.url = f"https://127.0.0.1:{port}"
    ca = str(pki / "ca.crt")
    wait_until_ready(proc, lambda: requests.get(server.url + "/v2/", verify=ca, timeout=1).status_code == 200,
                     log_path, what="berth over TLS")
    return server


@pytest.fixture
def tls_berth(tmp_path, pki):
    server = start_tls_berth(tmp_path / "srv", pki)
    yield server
    assert server.stop() == 0, server.log()[-3000:]
    assert "panicked" not in server.log()


@pytest.fixture
def https(pki):
    with requests.Session() as s:
        # Not trust_env: REQUESTS_CA_BUNDLE would override the session's CA.
        s.trust_env = False
        s.verify = str(pki / "ca.crt")
        yield s


def test_serves_the_api_over_https_verified_by_the_ca(tls_berth, https):
    r = https.get(f"{tls_berth.url}/v2/", timeout=10)
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    # The certificate names localhost too.
    assert https.get(f"https://localhost:{tls_berth.port}/v2/", timeout=10).status_code == 200
    # Without the test CA the certificate is not trusted.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_berth.url}/v2/", timeout=10)
    data = os.urandom(3000)
    dgst = push_blob(tls_berth.url, REPO, data, https)
    got = https.get(f"{tls_berth.url}/v2/{REPO}/blobs/{dgst}", timeout=10)
    assert got.status_code == 200 and got.content == data


def test_location_urls_say_https_unless_a_proxy_says_otherwise(tls_berth, https):
    r = https.post(f"{tls_berth.url}/v2/{REPO}/blobs/uploads/", timeout=10)
    assert r.status_code == 202
    assert r.headers["Location"].startswith(f"https://127.0.0.1:{tls_berth.port}/v2/{REPO}/blobs/uploads/")
    r = https.post(f"{tls_berth.url}/v2/{REPO}/blobs/uploads/", timeout=10,
                   headers={"X-Forwarded-Proto": "http", "X-Forwarded-Host": "registry.example"})
    assert r.headers["Location"].startswith(f"http://registry.example/v2/{REPO}/blobs/uploads/")


def test_plain_http_and_stalled_handshakes_do_not_stop_the_server(tls_berth, https):
    # A client that connects and says nothing must not hold up the others.
    stalled = socket.create_connection(("127.0.0.1", tls_berth.port), timeout=10)
    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{tls_berth.port}/v2/", timeout=10)
        with socket.create_connection(("127.0.0.1", tls_berth.port), timeout=10) as s:
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            assert not answer.startswith(b"HTTP/"), answer[:100]
        t = time.monotonic()
        assert https.get(f"{tls_berth.url}/v2/", timeout=10).status_code == 200
        assert time.monotonic() - t < 5
    finally:
        stalled.close()
    assert tls_berth.proc.poll() is None
    assert "TLS handshake failed" in tls_berth.log()


def curl(pki: Path, *args: str, stdin: bytes | None = None, out: Path | None = None) -> tuple[str, bytes]:
    """curl verified against the test CA; returns the HTTP version it spoke and the body."""
    exe = shutil.which("curl")
    if exe is None:
        pytest.fail("curl is not installed")
    out = out or pki / f"curl-{random.getrandbits(32)}.out"
    proc = subprocess.run([exe, "-sS", "--fail-with-body", "--cacert", str(pki / "ca.crt"), "-o", str(out),
                           "-w", "%{http_version}", *args], input=stdin, capture_output=True, timeout=60)
    body = out.read_bytes() if out.exists() else b""
    assert proc.returncode == 0, (args, proc.stderr, body[:500])
    return proc.stdout.decode(), body


def test_http2_is_negotiated_and_serves_pushes_and_pulls(tls_berth, https, pki):
    base = f"{tls_berth.url}/v2/{REPO}"
    layer = os.urandom(200_000)
    dgst = sha256(layer)
    # A push over HTTP/2: start a session, then finish it with the body streamed from stdin, which
    # HTTP/2 frames without a Content-Length.
    version, _ = curl(pki, "--http2", "-X", "POST", "-D", str(pki / "h2-headers"), f"{base}/blobs/uploads/")
    assert version == "2"
    location = next(line.split(":", 1)[1].strip() for line in (pki / "h2-headers").read_text().splitlines()
                    if line.lower().startswith("location:"))
    assert location.startswith(f"https://127.0.0.1:{tls_berth.port}/"), location
    sep = "&" if "?" in location else "?"
    version, _ = curl(pki, "--http2", "-X", "PUT", "-T", "-", "-H", "Content-Type: application/octet-stream",
                      f"{location}{sep}digest={dgst}", stdin=layer)
    assert version == "2"
    config = b'{"architecture":"amd64","os":"linux"}'
    push_blob(tls_berth.url, REPO, config, https)
    manifest = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        f'"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{sha256(config)}","size":{len(config)}}},'
        f'"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{dgst}","size":{len(layer)}}}]}}'
    ).encode()
    version, _ = curl(pki, "--http2", "-X", "PUT", "--data-binary", "@-",
                      "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json",
                      f"{base}/manifests/v1", stdin=manifest)
    assert version == "2"
    # Pulls over HTTP/2: the manifest by tag, the blob, a range of it.
    version, got = curl(pki, "--http2", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
                        f"{base}/manifests/v1")
    assert version == "2" and got == manifest
    version, got = curl(pki, "--http2", f"{base}/blobs/{dgst}")
    assert version == "2" and got == layer
    version, got = curl(pki, "--http2", "-r", "100-199", f"{base}/blobs/{dgst}")
    assert version == "2" and got == layer[100:200]
    # A client that offers only HTTP/1.1 gets it.
    version, got = curl(pki, "--http1.1", f"{base}/blobs/{dgst}")
    assert version == "1.1" and got == layer


def test_shutdown_drains_an_http2_download(tmp_path, pki, https):
    srv = start_tls_berth(tmp_path / "srv", pki)
    try:
        data = os.urandom(3 << 20)
        dgst = push_blob(srv.url, REPO, data, https)
        out = tmp_path / "download"
        exe = shutil.which("curl")
        assert exe, "curl is not installed"
        # About three seconds at 1 MiB/s: the server is told to stop while it streams.
        download = subprocess.Popen([exe, "-sS", "--http2", "--fail", "--cacert", str(pki / "ca.crt"),
                                     "--limit-rate", "1M", "-o", str(out), "-w", "%{http_version}",
                                     f"{srv.url}/v2/{REPO}/blobs/{dgst}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1)
        assert download.poll() is None
        assert srv.stop() == 0, srv.log()[-3000:]
        stdout, stderr = download.communicate(timeout=60)
        assert download.returncode == 0, stderr
        assert stdout == b"2"
        assert out.read_bytes() == data
        assert "panicked" not in srv.log()
    finally:
        srv.stop()


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.fail("skopeo is not installed (apt-get install skopeo); these tests must not be skipped")
    proc = subprocess.run([exe, "--insecure-policy", *args], capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, f"skopeo {' '.join(args)}: {proc.stderr}"
    return proc


def test_skopeo_copies_in_and_out_over_verified_tls(tls_berth, pki, tmp_path):
    src = ol.OciLayout(tmp_path / "src")
    big = ol.make_layer({"blob.bin": random.Random(11).randbytes(3 * 1024 * 1024)}, level=1)
    image = ol.make_image("tls", layers=[ol.make_layer(ol.random_files(random.Random(12), "tls")), big])
    src.add_image(image, tag="v1")
    certs = str(pki / "certs")
    dest = f"docker://127.0.0.1:{tls_berth.port}/{REPO}:v1"

    # Verification is on: without the CA skopeo refuses the registry.
    refused = skopeo("copy", f"oci:{src.path}:v1", dest, check=False)
    assert refused.returncode != 0
    assert "certificate" in refused.stderr.lower() or "x509" in refused.stderr.lower(), refused.stderr

    skopeo("copy", "--preserve-digests", "--dest-cert-dir", certs, f"oci:{src.path}:v1", dest)
    back = ol.OciLayout(tmp_path / "back")
    skopeo("copy", "--preserve-digests", "--src-cert-dir", certs, dest, f"oci:{back.path}:v1")

    assert back.resolve("v1")["digest"] == image.digest
    want, got = src.closure(image.digest), back.closure(image.digest)
    assert sorted(got) == sorted(want)
    for d, data in want.items():
        assert got[d] == data and sha256(data) == d


def run_berth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BERTH_BIN), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("broken, key_named", [
    ("key", "http.tls.key"),
    ("certificate", "http.tls.certificate"),
    ("mismatch", "http.tls.key"),
])
def test_bad_certificate_or_key_refuses_to_start_naming_the_key(pki, tmp_path, broken, key_named):
    cert, key = pki / "server.crt", pki / "server.key"
    if broken == "key":
        key = tmp_path / "garbage.key"
        key.write_text("this is not a PEM private key\n")
    elif broken == "certificate":
        cert = tmp_path / "missing.crt"
    else:
        key = pki / "ca.key"  # a valid key, but not the certificate's
    port = free_port()
    config = write_config(tmp_path / "srv", port, cert, key)
    proc = run_berth("serve", "--config", str(config))
    assert proc.returncode != 0
    assert key_named in proc.stderr, proc.stderr
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
    checked = run_berth("config", "check", str(config))
    assert checked.returncode != 0
    assert key_named in checked.stderr, checked.stderr


def test_config_check_accepts_a_good_certificate_and_key(pki, tmp_path):
    config = write_config(tmp_path, free_port(), pki / "server.crt", pki / "server.key")
    checked = run_berth("config", "check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "ok" in checked.stdout


class StalledH2:
    """An HTTP/2 client that asks for `streams` downloads and never reads them: it grants no
    flow-control window beyond `window` bytes a stream (0 by default) and never acknowledges
    what it receives, and pings all the while."""

    def __init__(self, pki: Path, port: int, path: str, streams: int, window: int = 0):
        import ssl

        import h2.config
        import h2.connection
        import h2.settings

        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.set_alpn_protocols(["h2"])
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                    server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        if window:
            self.conn.increment_flow_control_window(window * streams)
        for i in range(streams):
            self.conn.send_headers(self.conn.get_next_available_stream_id(),
                                   [(":method", "GET"), (":scheme", "https"), (":authority", f"127.0.0.1:{port}"),
                                    (":path", path)], end_stream=True)
        self.flush()
        self.closed: str | bool = False

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def pump(self, seconds: float) -> None:
        """Reads what comes (acknowledging nothing) and pings, for `seconds` or until the server
        closes the connection."""
        import h2.events

        end = time.monotonic() + seconds
        pinged = 0.0
        self.sock.settimeout(0.2)
        while time.monotonic() < end and not self.closed:
            if time.monotonic() - pinged >= 0.5:
                self.conn.ping(b"stalling")
                pinged = time.monotonic()
            try:
                self.flush()
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                self.closed = f"{type(e).__name__}: {e}"
                break
            if not data:
                self.closed = "closed by the server"
                break
            for e in self.conn.receive_data(data):
                if isinstance(e, h2.events.ConnectionTerminated):
                    self.closed = f"GOAWAY {e.error_code}"


def test_http2_connection_that_only_pings_is_closed_when_idle(tmp_path, pki, https):
    """Downloads handed out whole (the registry is done with them) that the client never lets
    out: it granted windows just short of them, and then only pings. No request is left in the
    connection, but each stream keeps its last frame. PINGs are not activity (as Go's HTTP/2
    server has it): the connection is closed `http.timeouts.idle` after its last request, where
    the PINGs kept it, and what its streams held, for ever."""
    idle = 2
    srv = start_tls_berth(tmp_path / "srv", pki, {"timeouts": {"idle": f"{idle}s", "bodystall": "60s"}})
    try:
        data = os.urandom(40 << 10)
        dgst = push_blob(srv.url, REPO, data, https)
        started = time.monotonic()
        c = StalledH2(pki, srv.port, f"/v2/{REPO}/blobs/{dgst}", 20, window=len(data) - 1000)
        c.pump(idle * 0.75)
        assert not c.closed, "closed before it was idle"
        c.pump(idle * 4)
        assert c.closed, "a connection with no request in it was kept open by PINGs"
        assert c.closed == "closed by the server" or c.closed.startswith("ConnectionResetError"), c.closed
        assert time.monotonic() - started < idle * 2 + 1, time.monotonic() - started
    finally:
        srv.stop()


def test_http2_downloads_no_one_reads_end_the_connection_after_bodystall(tmp_path, pki, https):
    """A client that asks for a hundred downloads over one HTTP/2 connection and grants no window
    writes nothing to stall and pings so it is never idle; every stream holds what it was handed
    (a few hundred KiB each: the chunk it is sending and the stream's buffer). The connection is
    closed once no stream has taken anything for `bodystall`, and that memory is given back;
    a slow but steady HTTP/2 download on the same server runs to its end."""
    stall = 3
    srv = start_tls_berth(tmp_path / "srv", pki, {"timeouts": {"bodystall": f"{stall}s"}})
    try:
        data = os.urandom(4 << 20)
        dgst = push_blob(srv.url, REPO, data, https)
        base = rss_mib(srv.proc.pid)
        c = StalledH2(pki, srv.port, f"/v2/{REPO}/blobs/{dgst}", 100)
        c.pump(1.5)
        held = rss_mib(srv.proc.pid) - base
        assert not c.closed
        assert held > 15, f"the stalled streams should hold memory to begin with: {held:.0f} MiB"
        started = time.monotonic()
        c.pump(stall * 3)
        assert c.closed, "the server kept a connection whose streams took nothing"
        # Closed by the server: a FIN, or a reset (it closed with the client's PINGs unread).
        assert c.closed == "closed by the server" or c.closed.startswith("ConnectionResetError"), c.closed
        # Checked four times per bodystall: closed after 3 s of no progress, within 3.75 s of it.
        assert time.monotonic() - started < stall * 1.5 + 1
        # The log is written by its own thread: the line may come a moment after the close.
        deadline = time.monotonic() + 5
        while "HTTP/2 responses not read for http.timeouts.bodystall" not in srv.log():
            assert time.monotonic() < deadline, srv.log()[-3000:]
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while rss_mib(srv.proc.pid) - base > held / 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rss_mib(srv.proc.pid) - base <= held / 3, (base, held, rss_mib(srv.proc.pid))
        # A reader that takes its download slowly but steadily is not a stalled one.
        exe = shutil.which("curl")
        assert exe, "curl is not installed"
        out = tmp_path / "download"
        p = subprocess.run([exe, "-sS", "--http2", "--fail", "--cacert", str(pki / "ca.crt"), "--limit-rate", "800K",
                            "-o", str(out), "-w", "%{http_version}", f"{srv.url}/v2/{REPO}/blobs/{dgst}"],
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"2" and out.read_bytes() == data
    finally:
        srv.stop()
