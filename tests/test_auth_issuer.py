"""Berth's own token server (`auth.issuer`, `GET|POST /auth/token`), with each first-party policy
plugin deciding (auth-acl, auth-htpasswd) and with hostile ones: tokens as docker's token spec
and distribution's clients expect them, refresh tokens, the issuer's certificate trusted by another
Berth, skopeo login/copy/inspect through it, a token expiring in the middle of a chunked upload,
failed-login backoff, and no password or token in logs or error bodies.

The plugins are built by tests/run.sh; a missing one fails the test under BERTH_REQUIRE_PLUGINS.
"""

from __future__ import annotations

import base64
import datetime
import json
import time

import pytest
import requests
from cryptography import x509

import authtokens as at
from authhelpers import (acl_plugin, assert_no_secret, assert_unauthorized, auth_counters, basic, bearer,
                         bearer_challenge, counter_delta, get_token, hostile_auth_plugin, htpasswd_plugin,
                         post_token, request_from, skopeo, small_layout, token_for, token_parts, write_htpasswd)
from harness import free_port, start_berth
from ocihelpers import OCI_MANIFEST, Client, make_image, random_bytes, sha256

USERS = {"alice": "alice-Secr3t-pw", "bob": "bob-Secr3t-pw", "root": "root-Secr3t-pw"}
ACL_RULES = "\n".join([
    "user:alice alice/** pull,push,delete",
    "group:team-a team/** pull,push",
    "user:root catalog *",
    "root ** *",
    "authenticated public/** pull",
    "anonymous public/** pull",
]) + "\n"
ACL_GROUPS = "team-a=alice,bob; admins=root"


def issuer_config(tmp, policy: str, plugins: dict, dport: int | None = None, **issuer) -> dict:
    cfg: dict = {"log": {"level": "debug"}, "plugins": plugins,
                 "auth": {"issuer": {"policy": policy, **issuer}}}
    if dport:
        cfg["http"] = {"debug": {"addr": f"127.0.0.1:{dport}"}}
    return cfg


def auth_dir(tmp, cost: int = 4):
    d = tmp / "auth"
    write_htpasswd(d / "htpasswd", USERS, cost=cost, prefixes={"bob": "$2b$"})
    return d


def start_issuer(tmp, policy: str = "acl", dport: int | None = None, **issuer):
    d = auth_dir(tmp)
    if policy == "acl":
        plugins, name = acl_plugin(d, ACL_RULES, ACL_GROUPS), "auth-acl"
    else:
        plugins, name = htpasswd_plugin(d), "auth-htpasswd"
    srv = start_berth(tmp, config=issuer_config(tmp, name, plugins, dport, **issuer))
    srv.realm = f"{srv.url}/auth/token"
    srv.debug_url = f"http://127.0.0.1:{dport}" if dport else None
    srv.secrets = list(USERS.values())
    return srv


@pytest.fixture(scope="module")
def signing_key():
    return at.SigningKey("P-256", name="berth issuer under test")


@pytest.fixture(scope="module")
def acl_issuer(tmp_path_factory, signing_key):
    """Issuer with auth-acl and a key and certificate given in the config."""
    tmp = tmp_path_factory.mktemp("issuer-acl")
    signing_key.save(tmp / "issuer.key", tmp / "issuer.crt")
    srv = start_issuer(tmp, "acl", free_port(), key=str(tmp / "issuer.key"), certificate=str(tmp / "issuer.crt"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def htpasswd_issuer(tmp_path_factory):
    """Issuer with auth-htpasswd and a generated key (kept under the storage root)."""
    srv = start_issuer(tmp_path_factory.mktemp("issuer-htpasswd"), "htpasswd")
    yield srv
    srv.stop()


def challenge(srv, scopes=None, error=None) -> str:
    return bearer_challenge(srv.realm, "berth", scopes, error)


def claims_of(srv, token: str, key: at.SigningKey | None = None) -> dict:
    srv.secrets.extend(token_parts(token))
    pub = key.public if key else x509.load_der_x509_certificate(base64.b64decode(at.header(token)["x5c"][0])).public_key()
    return at.decode(token, pub, audience="berth")


def authed(srv, token: str) -> Client:
    c = Client()
    c.headers.update(bearer(token))
    srv.secrets.extend(token_parts(token))
    return c


# --- the token endpoint ------------------------------------------------------------------------------

def test_challenge_points_at_the_issuer(acl_issuer):
    r = requests.get(f"{acl_issuer.url}/v2/", timeout=10)
    assert_unauthorized(r, f'Bearer realm="{acl_issuer.url}/auth/token",service="berth"')
    r = requests.get(f"{acl_issuer.url}/v2/alice/app/tags/list", timeout=10)
    assert_unauthorized(r, challenge(acl_issuer, ["repository:alice/app:pull"]), ["repository:alice/app:pull"])


def test_token_for_alice_is_signed_and_narrowed(acl_issuer, signing_key):
    r = get_token(acl_issuer, ["repository:alice/app:pull,push", "repository:bob/app:pull,push", "registry:catalog:*"],
                  "alice", USERS["alice"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    issued = datetime.datetime.fromisoformat(body["issued_at"].replace("Z", "+00:00"))
    assert abs(issued.timestamp() - time.time()) < 30
    assert "refresh_token" not in body
    h = at.header(body["token"])
    assert h["alg"] == "ES256" and h["typ"] == "JWT"
    assert h["kid"] == signing_key.libtrust_kid
    assert h["x5c"] == [signing_key.cert_der_b64()]
    c = claims_of(acl_issuer, body["token"], signing_key)
    assert c["iss"] == "berth" and c["sub"] == "alice" and c["aud"] == "berth"
    assert c["exp"] - c["iat"] == 300 and c["nbf"] <= time.time() + 1 and c["jti"]
    assert "berth_refresh" not in c
    # bob's repository and the catalog are left out (docker's token spec), nothing is added.
    assert c["access"] == [{"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}]
    assert get_token(acl_issuer, ["repository:alice/app:pull"], "alice", USERS["alice"]).json()["token"] != body["token"]


def test_each_token_has_its_own_jti(acl_issuer):
    jtis = {at.unverified_claims(token_for(acl_issuer, [], "alice", USERS["alice"]))["jti"] for _ in range(3)}
    assert len(jtis) == 3


def test_anonymous_token_gets_only_what_anonymous_may(acl_issuer, signing_key):
    r = get_token(acl_issuer, ["repository:public/base:pull,push", "repository:alice/app:pull"], offline_token="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body  # no identity, no refresh token
    c = claims_of(acl_issuer, body["token"], signing_key)
    assert c["sub"] == ""
    assert c["access"] == [{"type": "repository", "name": "public/base", "actions": ["pull"]}]


def test_groups_and_catalog_come_from_the_acl(acl_issuer, signing_key):
    c = claims_of(acl_issuer, token_for(acl_issuer, ["repository:team/svc:pull,push,delete"], "bob", USERS["bob"]), signing_key)
    assert c["access"] == [{"type": "repository", "name": "team/svc", "actions": ["pull", "push"]}]
    c = claims_of(acl_issuer, token_for(acl_issuer, ["registry:catalog:*"], "root", USERS["root"]), signing_key)
    assert c["access"] == [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    c = claims_of(acl_issuer, token_for(acl_issuer, ["registry:catalog:*"], "alice", USERS["alice"]), signing_key)
    assert c["access"] == []


def test_issued_tokens_work_on_the_registry(acl_issuer):
    with authed(acl_issuer, token_for(acl_issuer, ["repository:alice/app:pull,push"], "alice", USERS["alice"])) as c:
        dgst = make_image(acl_issuer.url, "alice/app", "v1", session=c)
        r = c.get(f"{acl_issuer.url}/v2/alice/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == dgst
        # A scope left out of the token is refused by the registry.
        r = c.post(f"{acl_issuer.url}/v2/bob/app/blobs/uploads/")
        want = ["repository:bob/app:pull,push"]
        assert_unauthorized(r, challenge(acl_issuer, want, "insufficient_scope"), want)
        r = c.delete(f"{acl_issuer.url}/v2/alice/app/manifests/{dgst}")
        want = ["repository:alice/app:delete"]
        assert_unauthorized(r, challenge(acl_issuer, want, "insufficient_scope"), want)
    with authed(acl_issuer, token_for(acl_issuer, ["registry:catalog:*"], "root", USERS["root"])) as c:
        r = c.get(f"{acl_issuer.url}/v2/_catalog")
        assert r.status_code == 200 and "alice/app" in r.json()["repositories"]


def test_anonymous_pull_of_a_public_repository(acl_issuer):
    with authed(acl_issuer, token_for(acl_issuer, ["repository:public/base:pull,push"], "root", USERS["root"])) as c:
        make_image(acl_issuer.url, "public/base", "v1", session=c)
    with authed(acl_issuer, token_for(acl_issuer, ["repository:public/base:pull"])) as c:
        assert c.get(f"{acl_issuer.url}/v2/public/base/manifests/v1", headers={"Accept": OCI_MANIFEST}).status_code == 200
        r = c.post(f"{acl_issuer.url}/v2/public/base/blobs/uploads/")
        assert r.status_code == 401


def test_offline_token_get_returns_a_refresh_token(acl_issuer, signing_key):
    r = get_token(acl_issuer, ["repository:alice/app:pull"], "alice", USERS["alice"], offline_token="true", client_id="docker")
    assert r.status_code == 200, r.text
    refresh = r.json()["refresh_token"]
    c = claims_of(acl_issuer, refresh, signing_key)
    assert c["berth_refresh"] is True and c["sub"] == "alice" and c["aud"] == "berth"
    assert c["exp"] - c["iat"] == 30 * 24 * 3600


def test_password_grant_post(acl_issuer, signing_key):
    form = {"grant_type": "password", "username": "alice", "password": USERS["alice"], "service": "berth",
            "scope": "repository:alice/app:pull,push repository:bob/app:pull", "client_id": "skopeo"}
    r = post_token(acl_issuer, form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == 300 and "refresh_token" not in body and body["issued_at"]
    c = claims_of(acl_issuer, body["access_token"], signing_key)
    assert c["sub"] == "alice"
    assert c["access"] == [{"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}]
    assert body["scope"].split() == ["repository:alice/app:pull,push"]
    r = post_token(acl_issuer, {**form, "access_type": "offline"})
    assert r.status_code == 200 and claims_of(acl_issuer, r.json()["refresh_token"], signing_key)["berth_refresh"] is True


def test_refresh_token_grant_post(acl_issuer, signing_key):
    r = post_token(acl_issuer, {"grant_type": "password", "username": "alice", "password": USERS["alice"],
                                "service": "berth", "client_id": "t", "access_type": "offline", "scope": ""})
    refresh = r.json()["refresh_token"]
    r = post_token(acl_issuer, {"grant_type": "refresh_token", "refresh_token": refresh, "service": "berth",
                                "client_id": "t", "scope": "repository:alice/other:pull,push,delete repository:bob/x:push"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refresh_token"] == refresh
    c = claims_of(acl_issuer, body["access_token"], signing_key)
    assert c["sub"] == "alice" and "berth_refresh" not in c
    assert c["access"] == [{"type": "repository", "name": "alice/other", "actions": ["pull", "push", "delete"]}]


def test_refresh_token_is_not_an_access_token(acl_issuer):
    refresh = get_token(acl_issuer, ["repository:alice/app:pull"], "alice", USERS["alice"], offline_token="true").json()["refresh_token"]
    acl_issuer.secrets.extend(token_parts(refresh))
    r = requests.get(f"{acl_issuer.url}/v2/alice/app/tags/list", headers=bearer(refresh), timeout=10)
    assert_unauthorized(r, challenge(acl_issuer, ["repository:alice/app:pull"], "invalid_token"), ["repository:alice/app:pull"])


def test_a_forged_refresh_token_is_refused(acl_issuer):
    refresh = get_token(acl_issuer, [], "alice", USERS["alice"], offline_token="true").json()["refresh_token"]
    forged = at.tampered(refresh, sub="root")
    r = post_token(acl_issuer, {"grant_type": "refresh_token", "refresh_token": forged, "service": "berth",
                                "scope": "registry:catalog:*"})
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # Login succeeds again afterwards (a failed refresh must not lock alice out).
    assert get_token(acl_issuer, [], "alice", USERS["alice"]).status_code == 200


def test_wrong_service_is_a_bad_request(acl_issuer):
    assert get_token(acl_issuer, ["repository:alice/app:pull"], "alice", USERS["alice"], service="other").status_code == 400
    r = post_token(acl_issuer, {"grant_type": "password", "username": "alice", "password": USERS["alice"],
                                "service": "other", "scope": ""})
    assert r.status_code == 400


def test_wrong_password_is_refused(acl_issuer):
    wrong = "not-alices-password-42"
    acl_issuer.secrets.append(wrong)
    r = get_token(acl_issuer, ["repository:alice/app:pull"], "alice", wrong)
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert_no_secret(r.text, [wrong, USERS["alice"]], "the error body")
    status, _, body = request_from("127.0.0.4", f"{acl_issuer.url}/auth/token?service=berth",
                                   headers={"Authorization": basic("nobody", wrong)})
    assert status == 401 and wrong.encode() not in body
    # The right password still works (and resets the count).
    assert get_token(acl_issuer, [], "alice", USERS["alice"]).status_code == 200


def test_wrong_password_in_the_password_grant_is_refused(acl_issuer):
    wrong = "also-not-alices-password"
    acl_issuer.secrets.append(wrong)
    r = post_token(acl_issuer, {"grant_type": "password", "username": "alice", "password": wrong, "service": "berth", "scope": ""})
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert_no_secret(r.text, [wrong], "the error body")
    assert get_token(acl_issuer, [], "alice", USERS["alice"]).status_code == 200


def test_issued_tokens_and_outcomes_are_counted(acl_issuer):
    before = auth_counters(acl_issuer.debug_url)
    token_for(acl_issuer, ["repository:alice/app:pull"], "alice", USERS["alice"])
    token_for(acl_issuer, ["repository:public/base:pull"])
    acl_issuer.secrets.append("wrong-password-counted")
    status, _, _ = request_from("127.0.0.5", f"{acl_issuer.url}/auth/token?service=berth",
                                headers={"Authorization": basic("bob", "wrong-password-counted")})
    assert status == 401
    requests.get(f"{acl_issuer.url}/v2/", timeout=10)
    d = counter_delta(auth_counters(acl_issuer.debug_url), before)
    assert d.get("issued") == 2, d
    assert d.get("failed_login") == 1 and d.get("challenged") == 1, d


# --- skopeo, with each first-party policy ---------------------------------------------------------------

@pytest.mark.parametrize("policy", ["acl", "htpasswd"])
def test_skopeo_login_push_pull_inspect(request, tmp_path, policy):
    srv = request.getfixturevalue(f"{policy}_issuer")
    src, image = small_layout(tmp_path, f"skopeo-{policy}")
    repo = f"alice/skopeo-{policy}"
    authfile = tmp_path / "auth.json"
    skopeo(srv, "login", "--tls-verify=false", "--authfile", str(authfile), "-u", "alice", "--password-stdin",
           srv.host, stdin=USERS["alice"])
    assert srv.host in json.loads(authfile.read_text())["auths"]
    skopeo(srv, "copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-authfile", str(authfile),
           f"oci:{src.path}:v1", f"docker://{srv.host}/{repo}:v1")
    info = json.loads(skopeo(srv, "inspect", "--tls-verify=false", "--creds", f"alice:{USERS['alice']}",
                             f"docker://{srv.host}/{repo}:v1").stdout)
    assert info["Digest"] == image.digest
    back = tmp_path / "back"
    skopeo(srv, "copy", "--src-tls-verify=false", "--src-creds", f"bob:{USERS['bob']}" if policy == "htpasswd" else f"alice:{USERS['alice']}",
           f"docker://{srv.host}/{repo}:v1", f"dir:{back}")
    assert json.loads((back / "manifest.json").read_bytes()) == json.loads(image.manifest)
    tags = json.loads(skopeo(srv, "list-tags", "--tls-verify=false", "--creds", f"alice:{USERS['alice']}",
                             f"docker://{srv.host}/{repo}").stdout)
    assert tags["Tags"] == ["v1"]
    # bob may not push into alice's repositories
    r = skopeo(srv, "copy", "--dest-tls-verify=false", "--dest-creds", f"bob:{USERS['bob']}",
               f"oci:{src.path}:v1", f"docker://{srv.host}/{repo}:bob", check=False)
    assert r.returncode != 0
    assert_no_secret(r.stderr + r.stdout, USERS.values(), "skopeo's output")


@pytest.mark.parametrize("policy", ["acl", "htpasswd"])
def test_skopeo_without_credentials_is_refused(request, tmp_path, policy):
    srv = request.getfixturevalue(f"{policy}_issuer")
    src, _ = small_layout(tmp_path, f"anon-{policy}")
    repo = f"alice/anon-{policy}"
    r = skopeo(srv, "copy", "--dest-tls-verify=false", f"oci:{src.path}:v1", f"docker://{srv.host}/{repo}:v1", check=False)
    assert r.returncode != 0
    assert any(w in r.stderr.lower() for w in ("unauthorized", "authentication required", "denied")), r.stderr
    want = [f"repository:{repo}:pull,push"]
    assert_unauthorized(requests.post(f"{srv.url}/v2/{repo}/blobs/uploads/", timeout=10), challenge(srv, want), want)
    r = skopeo(srv, "inspect", "--tls-verify=false", f"docker://{srv.host}/{repo}:v1", check=False)
    assert r.returncode != 0


# --- the issuer's certificate --------------------------------------------------------------------------

def test_generated_certificate_is_another_berths_rootcertbundle(htpasswd_issuer, tmp_path):
    crt = htpasswd_issuer.root / "berth-auth" / "issuer.crt"
    assert crt.is_file(), list((htpasswd_issuer.root).iterdir())
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    token = token_for(htpasswd_issuer, ["repository:alice/mirror:pull,push"], "alice", USERS["alice"])
    h = at.header(token)
    assert h["alg"] == "ES256" and h["kid"] == at.libtrust_key_id(cert.public_key())
    at.decode(token, cert.public_key(), audience="berth")
    second = start_berth(tmp_path / "second", config={"auth": {"token": {
        "realm": htpasswd_issuer.realm, "service": "berth", "issuer": "berth", "rootcertbundle": str(crt)}}})
    try:
        r = requests.get(f"{second.url}/v2/", timeout=10)
        assert_unauthorized(r, bearer_challenge(htpasswd_issuer.realm, "berth"))
        with authed(htpasswd_issuer, token) as c:
            dgst = make_image(second.url, "alice/mirror", "v1", session=c)
            assert c.get(f"{second.url}/v2/alice/mirror/manifests/v1", headers={"Accept": OCI_MANIFEST}).headers["Docker-Content-Digest"] == dgst
            assert c.get(f"{second.url}/v2/alice/other/tags/list").status_code == 401
        refresh = get_token(htpasswd_issuer, [], "alice", USERS["alice"], offline_token="true").json()["refresh_token"]
        assert requests.get(f"{second.url}/v2/", headers=bearer(refresh), timeout=10).status_code == 401
    finally:
        second.stop()


def test_generated_key_is_kept_across_restarts(tmp_path):
    first = start_issuer(tmp_path, "acl")
    try:
        crt = (first.root / "berth-auth" / "issuer.crt").read_bytes()
        kid = at.header(token_for(first, [], "alice", USERS["alice"]))["kid"]
    finally:
        first.stop()
    second = start_issuer(tmp_path, "acl")
    try:
        assert (second.root / "berth-auth" / "issuer.crt").read_bytes() == crt
        assert at.header(token_for(second, [], "alice", USERS["alice"]))["kid"] == kid
    finally:
        second.stop()


# --- expiry in the middle of an upload -------------------------------------------------------------------

def test_token_expiring_mid_upload_client_reauthenticates(tmp_path):
    srv = start_issuer(tmp_path, "acl", expiration="2s", leeway="0s")
    try:
        repo, scope = "alice/chunked", "repository:alice/chunked:pull,push"
        r = get_token(srv, [scope], "alice", USERS["alice"])
        assert r.json()["expires_in"] == 2
        tok = r.json()["token"]
        exp = at.unverified_claims(tok)["exp"]
        data = random_bytes(3 * 65536)
        c = authed(srv, tok)
        r = c.post(f"{srv.url}/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        loc = requests.compat.urljoin(srv.url + "/", r.headers["Location"])
        r = c.patch(loc, data=data[:65536], headers={"Content-Type": "application/octet-stream", "Content-Range": "0-65535"})
        assert r.status_code == 202, r.text
        loc = requests.compat.urljoin(srv.url + "/", r.headers["Location"])
        while time.time() < exp + 1.2:
            time.sleep(0.1)
        part = {"Content-Type": "application/octet-stream", "Content-Range": "65536-131071"}
        r = c.patch(loc, data=data[65536:131072], headers=part)
        assert_unauthorized(r, challenge(srv, [scope], "invalid_token"), [scope])
        # Re-authenticate at the realm the challenge names, for the scope it names.
        params = dict(x.split("=", 1) for x in r.headers["WWW-Authenticate"][len("Bearer "):].replace('"', "").split(",")[:2])
        assert params["realm"] == srv.realm
        c.headers.update(bearer(token_for(srv, [scope], "alice", USERS["alice"])))
        r = c.patch(loc, data=data[65536:131072], headers=part)
        assert r.status_code == 202, r.text
        loc = requests.compat.urljoin(srv.url + "/", r.headers["Location"])
        r = c.put(loc, params={"digest": sha256(data)}, data=data[131072:], headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        got = c.get(f"{srv.url}/v2/{repo}/blobs/{sha256(data)}")
        assert got.status_code == 200 and got.content == data
        c.close()
    finally:
        srv.stop()


# --- failed logins ----------------------------------------------------------------------------------------

def test_failed_logins_from_one_address_are_throttled(tmp_path):
    dport = free_port()
    srv = start_issuer(tmp_path, "acl", dport)
    try:
        url = f"{srv.url}/auth/token?service=berth"
        before = auth_counters(srv.debug_url)
        for i in range(5):  # five different users, one address
            status, _, _ = request_from("127.0.0.2", url, headers={"Authorization": basic(f"user{i}", "wrong")})
            assert status == 401
        status, headers, body = request_from("127.0.0.2", url, headers={"Authorization": basic("alice", USERS["alice"])})
        assert status == 429, body
        assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert 1 <= int(headers["retry-after"]) <= 60
        assert USERS["alice"].encode() not in body
        # Another address is not affected.
        status, _, _ = request_from("127.0.0.3", url, headers={"Authorization": basic("alice", USERS["alice"])})
        assert status == 200
        # After the backoff, the right password gets through and resets the count.
        time.sleep(int(headers["retry-after"]) + 0.2)
        status, _, _ = request_from("127.0.0.2", url, headers={"Authorization": basic("alice", USERS["alice"])})
        assert status == 200
        status, _, _ = request_from("127.0.0.2", url, headers={"Authorization": basic("bob", "wrong")})
        assert status == 401
        status, _, _ = request_from("127.0.0.2", url, headers={"Authorization": basic("bob", USERS["bob"])})
        assert status == 200
        d = counter_delta(auth_counters(srv.debug_url), before)
        assert d.get("throttled", 0) >= 1 and d.get("failed_login", 0) >= 6, d
    finally:
        srv.stop()


def test_failed_logins_for_one_user_are_throttled(tmp_path):
    srv = start_issuer(tmp_path, "acl")
    try:
        url = f"{srv.url}/auth/token?service=berth"
        for i in range(5):  # one user, five addresses
            status, _, _ = request_from(f"127.0.1.{i + 1}", url, headers={"Authorization": basic("alice", f"wrong{i}")})
            assert status == 401
        status, headers, body = request_from("127.0.1.9", url, headers={"Authorization": basic("alice", USERS["alice"])})
        assert status == 429, body
        assert int(headers["retry-after"]) >= 1
        # bob, from an address alice's attempts used, is not affected.
        status, _, _ = request_from("127.0.1.1", url, headers={"Authorization": basic("bob", USERS["bob"])})
        assert status == 200
    finally:
        srv.stop()


# --- hostile policy plugins ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["panic", "loop", "oom", "error", "overgrant", "none"])
def test_hostile_policy_grants_nothing_more_and_the_host_serves_on(tmp_path, mode):
    srv = start_berth(tmp_path, config=issuer_config(tmp_path, "hostile-auth", hostile_auth_plugin(mode)))
    srv.realm = f"{srv.url}/auth/token"
    try:
        asked = ["repository:victim/app:pull"]
        for _ in range(2):
            t0 = time.monotonic()
            r = get_token(srv, asked, "alice", USERS["alice"])
            assert time.monotonic() - t0 < 6, "the plugin's deadline did not hold"
            if mode in ("overgrant", "none"):
                assert r.status_code < 500, r.text
            assert_no_secret(r.text, [USERS["alice"]], "the token endpoint's answer")
            if r.status_code == 200:
                access = at.unverified_claims(r.json()["token"])["access"]
                if mode == "overgrant":
                    # The plugin grants everything; the token carries exactly what was asked.
                    assert access == [{"type": "repository", "name": "victim/app", "actions": ["pull"]}]
                    tok = r.json()["token"]
                    for method, path in (("POST", "/v2/victim/app/blobs/uploads/"), ("GET", "/v2/_catalog"),
                                         ("GET", "/v2/other/app/tags/list")):
                        assert requests.request(method, srv.url + path, headers=bearer(tok), timeout=10).status_code == 401
                else:
                    assert access == [], (mode, access)
            elif mode == "none":
                assert r.status_code == 401  # identity none + Basic = failed login
            else:
                # A failed policy denies (fail closed), without saying why to the client.
                assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
                assert "hostile" not in r.text
            # The host serves on.
            assert requests.get(f"{srv.url}/v2/", timeout=10).status_code == 401
        if mode == "overgrant":
            # More scopes than asked: still only what was asked.
            r = get_token(srv, ["repository:victim/app:pull", "repository:victim/lib:push"], "alice", USERS["alice"])
            access = at.unverified_claims(r.json()["token"])["access"]
            assert sorted(json.dumps(a, sort_keys=True) for a in access) == sorted(json.dumps(a, sort_keys=True) for a in (
                {"type": "repository", "name": "victim/app", "actions": ["pull"]},
                {"type": "repository", "name": "victim/lib", "actions": ["push"]}))
        assert srv.proc.poll() is None
        if mode in ("panic", "loop", "oom", "error"):
            assert "hostile-auth" in srv.log()
        assert_no_secret(srv.log(), [USERS["alice"]], "the server log")
    finally:
        srv.stop()


# --- nothing secret in the logs -----------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["acl", "htpasswd"])
def test_passwords_and_tokens_never_appear_in_the_log(request, policy):
    srv = request.getfixturevalue(f"{policy}_issuer")
    tok = token_for(srv, ["repository:alice/app:pull"], "alice", USERS["alice"])
    srv.secrets.extend(token_parts(tok))
    requests.get(f"{srv.url}/v2/alice/app/tags/list", headers=bearer(tok), timeout=10)
    srv.secrets.append("a-wrong-password-for-the-log")
    status, _, _ = request_from("127.0.0.6", f"{srv.url}/auth/token?service=berth",
                                headers={"Authorization": basic("root", "a-wrong-password-for-the-log")})
    assert status == 401
    assert get_token(srv, [], "alice", USERS["alice"]).status_code == 200
    assert_no_secret(srv.log(), srv.secrets, "the server log")
