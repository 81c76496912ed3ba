"""HTTPS (`http.tls`): a CA and a server certificate for 127.0.0.1/localhost are made here with the
openssl CLI; berth serves the registry over TLS, verified against that CA by requests and by
skopeo (`--dest-cert-dir` / `--src-cert-dir`), and by curl over HTTP/2 (negotiated with ALPN, as
distribution offers it) as well as HTTP/1.1; shrugs off plain HTTP and stalled handshakes on its
TLS port, drains HTTP/2 downloads on shutdown, and refuses to start (naming the key) on a bad
certificate or key file.
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
from harness import BERTH_BIN, Server, free_port, wait_until_ready
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


def write_config(workdir: Path, port: int, cert: Path, key: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = {
        "log": {"level": "debug"},
        "http": {"addr": f"127.0.0.1:{port}", "tls": {"certificate": str(cert), "key": str(key)}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
    }
    path = workdir / f"berth-{port}.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_tls_berth(workdir: Path, pki: Path) -> Server:
    """berth on HTTPS with the test server certificate; ready once /v2/ answers over TLS."""
    port = free_port()
    config_path = write_config(workdir, port, pki / "server.crt", pki / "server.key")
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
