"""Token auth with an external issuer (`auth.token`), the way GitLab runs a registry: the test holds
its own keys and certificate bundle (tests/authtokens.py), mints tokens, and Berth accepts exactly
those. Every refusal is checked as a client sees it: status, the exact `WWW-Authenticate`
challenge (what docker, skopeo and containerd act on) and distribution's JSON error body.

One registry serves the module (token mode, no policy: the token's `access` claim decides); a
second one with `leeway: 0` and a narrowed `signingalgorithms` serves the cases about time and
algorithms.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
import yaml

import authtokens as at
from authhelpers import (assert_no_secret, assert_unauthorized, auth_counters, bearer, bearer_challenge,
                         counter_delta, token_parts)
from harness import BERTH_BIN, free_port, start_berth
from ocihelpers import (OCI_MANIFEST, Client, build_manifest, image_config, make_image, push_blob, random_bytes,
                        sha256, to_bytes)

SERVICE = "berth-test"
ISSUER = "test-issuer"
REALM = "https://gitlab.example.test/jwt/auth"


def challenge(scopes=None, error=None) -> str:
    return bearer_challenge(REALM, SERVICE, scopes, error)


@pytest.fixture(scope="module")
def keys():
    return {kind: at.SigningKey(kind) for kind in at.KINDS}


@pytest.fixture(scope="module")
def jwks_key():
    """A key Berth knows only from the JWKS file (distribution 3), by its thumbprint kid."""
    return at.SigningKey("P-256", name="jwks only")


@pytest.fixture(scope="module")
def issuer(keys):
    return at.Issuer(list(keys.values()), ISSUER, SERVICE)


def token_config(d, keys, jwks_key, **over) -> dict:
    bundle = at.write_bundle(d / "bundle.pem", keys.values())
    jwks = at.write_jwks(d / "jwks.json", [jwks_key])
    token = {"realm": REALM, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(bundle), "jwks": str(jwks)}
    token.update(over)
    return {"auth": {"token": token}}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, keys, jwks_key):
    d = tmp_path_factory.mktemp("auth-token")
    dport = free_port()
    cfg = token_config(d, keys, jwks_key)
    cfg["log"] = {"level": "debug"}
    cfg["http"] = {"debug": {"addr": f"127.0.0.1:{dport}"}}
    srv = start_berth(d, config=cfg)
    srv.debug_url = f"http://127.0.0.1:{dport}"
    srv.secrets = []  # every token sent: none may appear in the log
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict(tmp_path_factory, keys, jwks_key):
    d = tmp_path_factory.mktemp("auth-token-strict")
    srv = start_berth(d, config=token_config(d, keys, jwks_key, leeway="0s", signingalgorithms=["RS256", "ES256"]))
    yield srv
    srv.stop()


def session(srv, token: str) -> Client:
    c = Client()
    c.headers.update(bearer(token))
    getattr(srv, "secrets", []).extend(token_parts(token))
    return c


def seed(srv, issuer, repo: str, tag: str = "v1") -> str:
    """Push an image with a push token; returns the manifest digest."""
    with session(srv, issuer.mint([at.repo(repo, "pull", "push")])) as c:
        return make_image(srv.url, repo, tag, session=c)


# --- challenges without credentials --------------------------------------------------------------

def test_v2_without_token_is_challenged_without_scope(registry):
    r = requests.get(f"{registry.url}/v2/", timeout=10)
    assert_unauthorized(r, challenge())
    assert "scope=" not in r.headers["WWW-Authenticate"]


def test_pull_without_token_is_challenged_for_pull(registry, issuer):
    dgst = seed(registry, issuer, "chal/pull")
    for path in ("/v2/chal/pull/manifests/v1", f"/v2/chal/pull/manifests/{dgst}", "/v2/chal/pull/tags/list",
                 f"/v2/chal/pull/blobs/{sha256(b'x')}", f"/v2/chal/pull/referrers/{dgst}"):
        r = requests.get(registry.url + path, timeout=10)
        assert_unauthorized(r, challenge(["repository:chal/pull:pull"]), ["repository:chal/pull:pull"])
    h = requests.head(f"{registry.url}/v2/chal/pull/manifests/v1", timeout=10)
    assert h.status_code == 401
    assert h.headers["WWW-Authenticate"] == challenge(["repository:chal/pull:pull"])


def test_push_without_token_is_challenged_for_pull_and_push(registry):
    want = ["repository:chal/push:pull,push"]
    r = requests.post(f"{registry.url}/v2/chal/push/blobs/uploads/", timeout=10)
    assert_unauthorized(r, challenge(want), want)
    body = to_bytes(build_manifest(image_config(), []))
    r = requests.put(f"{registry.url}/v2/chal/push/manifests/v1", data=body,
                     headers={"Content-Type": OCI_MANIFEST}, timeout=10)
    assert_unauthorized(r, challenge(want), want)


def test_delete_without_token_is_challenged_for_delete(registry, issuer):
    dgst = seed(registry, issuer, "chal/delete")
    want = ["repository:chal/delete:delete"]
    r = requests.delete(f"{registry.url}/v2/chal/delete/manifests/{dgst}", timeout=10)
    assert_unauthorized(r, challenge(want), want)


def test_cross_repository_mount_without_token_names_both_repositories(registry):
    scopes = ["repository:chal/mount-to:pull,push", "repository:chal/mount-from:pull"]
    r = requests.post(f"{registry.url}/v2/chal/mount-to/blobs/uploads/",
                      params={"mount": sha256(b"m"), "from": "chal/mount-from"}, timeout=10)
    assert_unauthorized(r, (challenge(scopes), challenge(scopes[::-1])), scopes)


def test_catalog_without_token_is_challenged_for_catalog(registry):
    r = requests.get(f"{registry.url}/v2/_catalog", timeout=10)
    assert_unauthorized(r, challenge(["registry:catalog:*"]), ["registry:catalog:*"])


# --- tokens Berth accepts -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["x5c", "libtrust", "thumbprint"])
@pytest.mark.parametrize("kind", at.KINDS)
def test_token_accepted_for_each_key_and_header(registry, issuer, keys, kind, variant):
    repo = f"ok/{kind.lower()}-{variant}"
    with session(registry, issuer.mint([at.repo(repo, "pull", "push")], key=keys[kind], variant=variant)) as c:
        assert c.get(f"{registry.url}/v2/").status_code == 200
        dgst = make_image(registry.url, repo, "v1", session=c)
        r = c.get(f"{registry.url}/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == dgst


@pytest.mark.parametrize("alg", ["RS384", "RS512"])
def test_rsa_token_with_longer_hashes(registry, issuer, keys, alg):
    with session(registry, issuer.mint([at.repo("ok/rsa", "pull")], key=keys["RSA"], alg=alg)) as c:
        r = c.get(f"{registry.url}/v2/ok/rsa/tags/list")
        assert r.status_code in (200, 404), r.text  # authorised: the repository may be empty


def test_jwks_key_accepted_by_thumbprint_kid(registry, jwks_key):
    iss = at.Issuer([jwks_key], ISSUER, SERVICE)
    with session(registry, iss.mint([at.repo("ok/jwks", "pull", "push")], variant="thumbprint")) as c:
        assert c.get(f"{registry.url}/v2/").status_code == 200
        make_image(registry.url, "ok/jwks", "v1", session=c)


def test_empty_access_token_opens_only_v2(registry, issuer):
    with session(registry, issuer.mint([])) as c:
        assert c.get(f"{registry.url}/v2/").status_code == 200
        r = c.get(f"{registry.url}/v2/empty/x/tags/list")
        assert_unauthorized(r, challenge(["repository:empty/x:pull"], "insufficient_scope"), ["repository:empty/x:pull"])


def test_star_action_covers_every_action(registry, issuer):
    with session(registry, issuer.mint([at.repo("ok/star", "*")])) as c:
        dgst = make_image(registry.url, "ok/star", "v1", session=c)
        assert c.get(f"{registry.url}/v2/ok/star/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200
        assert c.delete(f"{registry.url}/v2/ok/star/manifests/{dgst}").status_code == 202


def test_default_leeway_accepts_a_token_just_expired(registry, issuer):
    tok = issuer.mint([at.repo("ok/leeway", "pull")], exp_in=-20, iat_in=-320, nbf_in=-320)
    assert requests.get(f"{registry.url}/v2/", headers=bearer(tok), timeout=10).status_code == 200


# --- tokens Berth refuses -------------------------------------------------------------------------

def forge(case: str, issuer: at.Issuer, keys) -> str:
    acc = [at.repo("bad/tok", "pull")]
    rsa = keys["RSA"]
    if case == "expired":
        return issuer.mint(acc, exp_in=-3600, iat_in=-7200, nbf_in=-7200)
    if case == "not-yet-valid":
        return issuer.mint(acc, nbf_in=3600, iat_in=0, exp_in=7200)
    if case == "wrong-issuer":
        return issuer.mint(acc, iss="someone-else")
    if case == "wrong-audience":
        return issuer.mint(acc, aud="another-registry")
    if case == "bad-signature":
        tok = issuer.mint(acc, key=rsa, variant="libtrust")
        h, p, s = tok.split(".")
        sig = bytearray(at.unb64url(s))
        sig[10] ^= 0x01
        return f"{h}.{p}.{at.b64url(bytes(sig))}"
    if case == "signed-by-another-bundle-key":
        # Signed by the P-256 key but naming the RSA key: the signature does not verify.
        return at.resigned_header(issuer.mint(acc, key=keys["P-256"]), keys["P-256"], kid=rsa.libtrust_kid)
    if case in ("unknown-key-kid", "unknown-key-x5c"):
        stranger = at.SigningKey("P-256", name="stranger")
        return at.Issuer([stranger], ISSUER, SERVICE).mint(acc, variant="libtrust" if case.endswith("kid") else "x5c")
    if case == "alg-none":
        return at.alg_none(issuer.claims(acc), {"kid": rsa.libtrust_kid})
    if case == "hs256-public-key":
        return at.hs256_with_public_key(issuer.claims(acc), rsa)
    if case == "tampered":
        return at.tampered(issuer.mint(acc, key=rsa), sub="admin", access=[at.repo("bad/tok", "*")])
    if case == "truncated":
        return at.truncated(issuer.mint(acc))
    if case == "garbage":
        return "not.a.jwt"
    if case == "jwks-key-wrong-kid":
        return None  # built in the test (needs the jwks key)
    raise ValueError(case)


REFUSED = ["expired", "not-yet-valid", "wrong-issuer", "wrong-audience", "bad-signature",
           "signed-by-another-bundle-key", "unknown-key-kid", "unknown-key-x5c", "alg-none",
           "hs256-public-key", "tampered", "truncated", "garbage"]


@pytest.mark.parametrize("case", REFUSED)
def test_invalid_token_is_refused(registry, issuer, keys, case):
    tok = forge(case, issuer, keys)
    registry.secrets.extend(token_parts(tok))
    want = ["repository:bad/tok:pull"]
    r = requests.get(f"{registry.url}/v2/bad/tok/tags/list", headers=bearer(tok), timeout=10)
    assert_unauthorized(r, challenge(want, "invalid_token"), want)
    assert_no_secret(r.text, token_parts(tok), "the error body")
    r = requests.get(f"{registry.url}/v2/", headers=bearer(tok), timeout=10)
    assert_unauthorized(r, challenge(None, "invalid_token"))


def test_jwks_key_under_a_wrong_kid_is_refused(registry, jwks_key):
    tok = at.Issuer([jwks_key], ISSUER, SERVICE).mint([at.repo("bad/tok", "pull")], headers={"kid": "no-such-key"}, variant="none")
    r = requests.get(f"{registry.url}/v2/bad/tok/tags/list", headers=bearer(tok), timeout=10)
    assert_unauthorized(r, challenge(["repository:bad/tok:pull"], "invalid_token"), ["repository:bad/tok:pull"])


def test_token_for_another_repository_is_refused(registry, issuer):
    seed(registry, issuer, "scope/mine")
    tok = issuer.mint([at.repo("scope/other", "pull", "push", "delete")])
    with session(registry, tok) as c:
        r = c.get(f"{registry.url}/v2/scope/mine/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert_unauthorized(r, challenge(["repository:scope/mine:pull"], "insufficient_scope"), ["repository:scope/mine:pull"])
        # A prefix of the name is another repository too.
        r = c.get(f"{registry.url}/v2/scope/other-not/tags/list")
        assert r.status_code == 401


def test_pull_only_token_cannot_push(registry, issuer):
    seed(registry, issuer, "scope/ro")
    want = ["repository:scope/ro:pull,push"]
    with session(registry, issuer.mint([at.repo("scope/ro", "pull")])) as c:
        assert c.get(f"{registry.url}/v2/scope/ro/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200
        r = c.post(f"{registry.url}/v2/scope/ro/blobs/uploads/")
        assert_unauthorized(r, challenge(want, "insufficient_scope"), want)
        r = c.put(f"{registry.url}/v2/scope/ro/manifests/v2", data=to_bytes(build_manifest(image_config(), [])),
                  headers={"Content-Type": OCI_MANIFEST})
        assert_unauthorized(r, challenge(want, "insufficient_scope"), want)


def test_token_without_delete_cannot_delete(registry, issuer):
    dgst = seed(registry, issuer, "scope/nodelete")
    want = ["repository:scope/nodelete:delete"]
    with session(registry, issuer.mint([at.repo("scope/nodelete", "pull", "push")])) as c:
        r = c.delete(f"{registry.url}/v2/scope/nodelete/manifests/{dgst}")
        assert_unauthorized(r, challenge(want, "insufficient_scope"), want)
        assert c.get(f"{registry.url}/v2/scope/nodelete/manifests/{dgst}", headers={"Accept": OCI_MANIFEST}).status_code == 200
    with session(registry, issuer.mint([at.repo("scope/nodelete", "delete")])) as c:
        assert c.delete(f"{registry.url}/v2/scope/nodelete/manifests/{dgst}").status_code == 202


def test_catalog_needs_the_catalog_scope(registry, issuer):
    seed(registry, issuer, "scope/listed")
    with session(registry, issuer.mint([at.repo("scope/listed", "*")])) as c:
        r = c.get(f"{registry.url}/v2/_catalog")
        assert_unauthorized(r, challenge(["registry:catalog:*"], "insufficient_scope"), ["registry:catalog:*"])
    with session(registry, issuer.mint([at.CATALOG])) as c:
        r = c.get(f"{registry.url}/v2/_catalog")
        assert r.status_code == 200, r.text
        assert "scope/listed" in r.json()["repositories"]


def test_cross_repository_mount_needs_pull_on_the_source(registry, issuer):
    layer = random_bytes(2048)
    with session(registry, issuer.mint([at.repo("mount/src", "pull", "push")])) as c:
        dgst = push_blob(registry.url, "mount/src", layer, c)
    scopes = ["repository:mount/dst:pull,push", "repository:mount/src:pull"]
    with session(registry, issuer.mint([at.repo("mount/dst", "pull", "push")])) as c:
        r = c.post(f"{registry.url}/v2/mount/dst/blobs/uploads/", params={"mount": dgst, "from": "mount/src"})
        assert_unauthorized(r, (challenge(scopes, "insufficient_scope"), challenge(scopes[::-1], "insufficient_scope")), scopes)
    with session(registry, issuer.mint([at.repo("mount/dst", "pull", "push"), at.repo("mount/src", "pull")])) as c:
        r = c.post(f"{registry.url}/v2/mount/dst/blobs/uploads/", params={"mount": dgst, "from": "mount/src"})
        assert r.status_code == 201, r.text
        assert c.get(f"{registry.url}/v2/mount/dst/blobs/{dgst}").content == layer


# --- time and algorithms (leeway 0, RS256 and ES256 only) ------------------------------------------

def test_zero_leeway_refuses_a_token_just_expired(strict, issuer):
    tok = issuer.mint([at.repo("t/x", "pull")], exp_in=-2, iat_in=-300, nbf_in=-300)
    assert_unauthorized(requests.get(f"{strict.url}/v2/", headers=bearer(tok), timeout=10), challenge(None, "invalid_token"))
    tok = issuer.mint([at.repo("t/x", "pull")], nbf_in=3, iat_in=0)
    assert_unauthorized(requests.get(f"{strict.url}/v2/", headers=bearer(tok), timeout=10), challenge(None, "invalid_token"))


def test_signing_algorithms_narrow_what_is_accepted(strict, issuer, keys):
    for kind, alg in (("RSA", "RS256"), ("P-256", "ES256")):
        r = requests.get(f"{strict.url}/v2/", headers=bearer(issuer.mint([], key=keys[kind], alg=alg)), timeout=10)
        assert r.status_code == 200, (alg, r.text)
    for kind, alg in (("RSA", "RS512"), ("P-384", "ES384"), ("Ed25519", "EdDSA")):
        r = requests.get(f"{strict.url}/v2/", headers=bearer(issuer.mint([], key=keys[kind], alg=alg)), timeout=10)
        assert_unauthorized(r, challenge(None, "invalid_token"))


def test_token_expiring_mid_upload_client_reauthenticates(strict, issuer):
    repo = "t/chunked"
    data = random_bytes(3 * 65536)
    chunks = [data[:65536], data[65536:131072], data[131072:]]
    tok = issuer.mint([at.repo(repo, "pull", "push")], exp_in=2)
    exp = at.unverified_claims(tok)["exp"]
    c = session(strict, tok)
    r = c.post(f"{strict.url}/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    loc = requests.compat.urljoin(strict.url + "/", r.headers["Location"])
    r = c.patch(loc, data=chunks[0], headers={"Content-Type": "application/octet-stream",
                                              "Content-Range": f"0-{len(chunks[0]) - 1}"})
    assert r.status_code == 202, r.text
    loc = requests.compat.urljoin(strict.url + "/", r.headers["Location"])
    while time.time() < exp + 1.2:
        time.sleep(0.1)
    start = len(chunks[0])
    crange = f"{start}-{start + len(chunks[1]) - 1}"
    r = c.patch(loc, data=chunks[1], headers={"Content-Type": "application/octet-stream", "Content-Range": crange})
    want = [f"repository:{repo}:pull,push"]
    assert_unauthorized(r, challenge(want, "invalid_token"), want)
    # The chunk was not read: the server says the connection ends, so the retry opens a new one.
    assert r.headers.get("Connection", "").lower() == "close", r.headers
    # The client fetches a new token for the scope the challenge named and carries on.
    c.headers.update(bearer(issuer.mint([at.repo(repo, "pull", "push")])))
    r = c.patch(loc, data=chunks[1], headers={"Content-Type": "application/octet-stream", "Content-Range": crange})
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{131072 - 1}"
    loc = requests.compat.urljoin(strict.url + "/", r.headers["Location"])
    r = c.put(loc, params={"digest": sha256(data)}, data=chunks[2], headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    got = c.get(f"{strict.url}/v2/{repo}/blobs/{sha256(data)}")
    assert got.status_code == 200 and got.content == data
    c.close()


# --- what is observed -------------------------------------------------------------------------------

def test_auth_outcomes_are_counted_without_user_or_repository_labels(registry, issuer):
    before = auth_counters(registry.debug_url)
    requests.get(f"{registry.url}/v2/count/x/tags/list", timeout=10)  # challenged
    requests.get(f"{registry.url}/v2/count/x/tags/list", headers=bearer("garbage.token.here"), timeout=10)  # invalid
    tok = issuer.mint([at.repo("count/x", "pull")], sub="counted-user")
    requests.get(f"{registry.url}/v2/count/x/tags/list", headers=bearer(tok), timeout=10)  # allowed (404 inside)
    requests.post(f"{registry.url}/v2/count/x/blobs/uploads/", headers=bearer(tok), timeout=10)  # denied
    d = counter_delta(auth_counters(registry.debug_url), before)
    assert d == {"challenged": 1, "invalid_token": 1, "allowed": 1, "denied": 1}, d
    text = requests.get(registry.debug_url + "/metrics", timeout=10).text
    assert "counted-user" not in text and "count/x" not in text


def test_tokens_never_appear_in_the_log(registry, issuer):
    # Make sure at least one valid and one forged token went through on this server.
    tok = issuer.mint([at.repo("log/x", "pull")])
    forged = at.tampered(tok, sub="root")
    for t in (tok, forged):
        registry.secrets.extend(token_parts(t))
        requests.get(f"{registry.url}/v2/log/x/tags/list", headers=bearer(t), timeout=10)
    log = registry.log()
    assert "401" in log or "auth" in log.lower(), "the debug log says nothing about auth at all?"
    assert_no_secret(log, registry.secrets, "the server log")


# --- without auth, and config errors ---------------------------------------------------------------

def test_without_auth_section_the_registry_stays_open(tmp_path):
    srv = start_berth(tmp_path)
    try:
        r = requests.get(f"{srv.url}/v2/", timeout=10)
        assert r.status_code == 200 and "WWW-Authenticate" not in r.headers
        dgst = make_image(srv.url, "open/repo", "v1")
        assert requests.get(f"{srv.url}/v2/open/repo/manifests/v1", headers={"Accept": OCI_MANIFEST},
                            timeout=10).headers["Docker-Content-Digest"] == dgst
        assert requests.delete(f"{srv.url}/v2/open/repo/manifests/{dgst}", timeout=10).status_code == 202
        assert requests.get(f"{srv.url}/v2/_catalog", timeout=10).status_code == 200
        assert requests.get(f"{srv.url}/auth/token?service=berth", timeout=10).status_code == 404
    finally:
        srv.stop()


def config_check(tmp_path, cfg: dict) -> subprocess.CompletedProcess:
    p = tmp_path / "c.yml"
    p.write_text(yaml.safe_dump(cfg))
    return subprocess.run([str(BERTH_BIN), "config", "check", str(p)], capture_output=True, text=True, timeout=60)


def test_config_refuses_two_auth_modes(tmp_path, keys):
    bundle = at.write_bundle(tmp_path / "b.pem", keys.values())
    (tmp_path / "htpasswd").write_text("")
    r = config_check(tmp_path, {"storage": {"inmemory": {}}, "auth": {
        "token": {"realm": REALM, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(bundle)},
        "htpasswd": {"realm": "r", "path": str(tmp_path / "htpasswd")}}})
    assert r.returncode != 0 and "auth" in r.stderr, r.stderr


def test_config_refuses_an_issuer_without_policy(tmp_path):
    r = config_check(tmp_path, {"storage": {"inmemory": {}}, "auth": {"issuer": {"service": "berth"}}})
    assert r.returncode != 0 and "policy" in r.stderr, r.stderr


def test_config_refuses_an_unreadable_bundle(tmp_path):
    r = config_check(tmp_path, {"storage": {"inmemory": {}}, "auth": {"token": {
        "realm": REALM, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(tmp_path / "missing.pem")}}})
    assert r.returncode != 0 and "missing.pem" in r.stderr, r.stderr
