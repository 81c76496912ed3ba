"""distribution-style Basic auth (`auth.htpasswd`): a bcrypt htpasswd file generated here (`$2y$`
as `htpasswd -B` writes it, `$2b$` as other tools do), the `Basic realm` challenge, skopeo with
`--creds` and `login`, failed-login backoff, counters, and no password in logs or error bodies.
Without a policy every user whose password matches gets everything (as distribution); with
auth-acl the plugin decides.
"""

from __future__ import annotations

import json

import pytest
import requests

from authhelpers import (acl_plugin, assert_no_secret, assert_unauthorized, auth_counters, basic, basic_challenge,
                         counter_delta, request_from, skopeo, small_layout, write_htpasswd)
from harness import free_port, start_berth
from ocihelpers import OCI_MANIFEST, Client, make_image

REALM = "berth-basic"
USERS = {"alice": "alice-Basic-pw-1", "bob": "bob-Basic-pw-2"}


def htpasswd_config(tmp, dport: int | None = None, cost: int = 4, **extra) -> dict:
    path = write_htpasswd(tmp / "auth" / "htpasswd", USERS, cost=cost, prefixes={"bob": "$2b$"})
    cfg: dict = {"log": {"level": "debug"}, "auth": {"htpasswd": {"realm": REALM, "path": str(path), **extra}}}
    if dport:
        cfg["http"] = {"debug": {"addr": f"127.0.0.1:{dport}"}}
    return cfg


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("htpasswd")
    dport = free_port()
    srv = start_berth(tmp, config=htpasswd_config(tmp, dport, cost=5))
    srv.debug_url = f"http://127.0.0.1:{dport}"
    srv.secrets = list(USERS.values())
    yield srv
    srv.stop()


def as_user(user: str) -> Client:
    c = Client()
    c.auth = (user, USERS[user])
    return c


def test_no_credentials_get_the_basic_challenge(registry):
    for method, path in (("GET", "/v2/"), ("GET", "/v2/a/b/tags/list"), ("POST", "/v2/a/b/blobs/uploads/"),
                         ("GET", "/v2/_catalog")):
        r = requests.request(method, registry.url + path, timeout=10)
        assert_unauthorized(r, basic_challenge(REALM))


def test_wrong_password_gets_the_basic_challenge(registry):
    wrong = "not-the-Basic-pw"
    registry.secrets.append(wrong)
    r = requests.get(f"{registry.url}/v2/", auth=("alice", wrong), timeout=10)
    assert_unauthorized(r, basic_challenge(REALM))
    assert_no_secret(r.text, [wrong], "the error body")
    r = requests.get(f"{registry.url}/v2/", auth=("nobody", wrong), timeout=10)
    assert_unauthorized(r, basic_challenge(REALM))
    # A bearer token means nothing in htpasswd mode.
    r = requests.get(f"{registry.url}/v2/", headers={"Authorization": "Bearer abc.def.ghi"}, timeout=10)
    assert_unauthorized(r, basic_challenge(REALM))
    assert requests.get(f"{registry.url}/v2/", auth=("alice", USERS["alice"]), timeout=10).status_code == 200


@pytest.mark.parametrize("user", ["alice", "bob"], ids=["2y-hash", "2b-hash"])
def test_valid_user_gets_every_scope(registry, user):
    with as_user(user) as c:
        assert c.get(f"{registry.url}/v2/").status_code == 200
        repo = f"{user}/app"
        dgst = make_image(registry.url, repo, "v1", session=c)
        assert c.get(f"{registry.url}/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST}).headers["Docker-Content-Digest"] == dgst
        assert repo in c.get(f"{registry.url}/v2/_catalog").json()["repositories"]
        assert c.delete(f"{registry.url}/v2/{repo}/manifests/{dgst}").status_code == 202


def test_skopeo_with_creds_push_pull_inspect(registry, tmp_path):
    src, image = small_layout(tmp_path, "htpasswd-creds")
    creds = f"alice:{USERS['alice']}"
    skopeo(registry, "copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", creds,
           f"oci:{src.path}:v1", f"docker://{registry.host}/basic/creds:v1")
    info = json.loads(skopeo(registry, "inspect", "--tls-verify=false", "--creds", creds,
                             f"docker://{registry.host}/basic/creds:v1").stdout)
    assert info["Digest"] == image.digest
    back = tmp_path / "back"
    skopeo(registry, "copy", "--src-tls-verify=false", "--src-creds", f"bob:{USERS['bob']}",
           f"docker://{registry.host}/basic/creds:v1", f"dir:{back}")
    assert json.loads((back / "manifest.json").read_bytes()) == json.loads(image.manifest)
    r = skopeo(registry, "inspect", "--tls-verify=false", f"docker://{registry.host}/basic/creds:v1", check=False)
    assert r.returncode != 0
    assert any(w in r.stderr.lower() for w in ("unauthorized", "authentication required")), r.stderr


def test_skopeo_login_then_copy(registry, tmp_path):
    src, image = small_layout(tmp_path, "htpasswd-login")
    authfile = tmp_path / "auth.json"
    skopeo(registry, "login", "--tls-verify=false", "--authfile", str(authfile), "-u", "bob", "--password-stdin",
           registry.host, stdin=USERS["bob"])
    skopeo(registry, "copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-authfile", str(authfile),
           f"oci:{src.path}:v1", f"docker://{registry.host}/basic/login:v1")
    out = json.loads(skopeo(registry, "list-tags", "--tls-verify=false", "--authfile", str(authfile),
                            f"docker://{registry.host}/basic/login").stdout)
    assert out["Tags"] == ["v1"]
    bad = skopeo(registry, "login", "--tls-verify=false", "--authfile", str(tmp_path / "bad.json"), "-u", "bob",
                 "--password-stdin", registry.host, stdin="wrong-login-pw", check=False)
    registry.secrets.append("wrong-login-pw")
    assert bad.returncode != 0
    assert requests.get(f"{registry.url}/v2/", auth=("bob", USERS["bob"]), timeout=10).status_code == 200


def test_outcomes_are_counted(registry):
    before = auth_counters(registry.debug_url)
    requests.get(f"{registry.url}/v2/", timeout=10)
    status, _, _ = request_from("127.0.0.7", f"{registry.url}/v2/", headers={"Authorization": basic("alice", "wrong-count")})
    registry.secrets.append("wrong-count")
    assert status == 401
    requests.get(f"{registry.url}/v2/", auth=("alice", USERS["alice"]), timeout=10)
    d = counter_delta(auth_counters(registry.debug_url), before)
    assert d == {"challenged": 1, "failed_login": 1, "allowed": 1}, d
    assert "alice" not in requests.get(registry.debug_url + "/metrics", timeout=10).text


def test_passwords_never_appear_in_the_log(registry):
    requests.get(f"{registry.url}/v2/", auth=("alice", USERS["alice"]), timeout=10)
    assert_no_secret(registry.log(), registry.secrets, "the server log")


def test_failed_logins_are_throttled(tmp_path):
    srv = start_berth(tmp_path, config=htpasswd_config(tmp_path))
    try:
        for i in range(5):
            status, _, _ = request_from("127.0.2.1", f"{srv.url}/v2/", headers={"Authorization": basic("alice", f"bad{i}")})
            assert status == 401
        status, headers, body = request_from("127.0.2.1", f"{srv.url}/v2/", headers={"Authorization": basic("alice", USERS["alice"])})
        assert status == 429, body
        assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert 1 <= int(headers["retry-after"]) <= 60
        # The user is throttled from any address; another user is not.
        status, _, _ = request_from("127.0.2.2", f"{srv.url}/v2/", headers={"Authorization": basic("alice", USERS["alice"])})
        assert status == 429
        status, _, _ = request_from("127.0.2.3", f"{srv.url}/v2/", headers={"Authorization": basic("bob", USERS["bob"])})
        assert status == 200
    finally:
        srv.stop()


def test_with_acl_policy_the_plugin_decides(tmp_path):
    cfg = htpasswd_config(tmp_path, policy="auth-acl")
    cfg["plugins"] = acl_plugin(tmp_path / "auth", "user:alice alice/** *\nauthenticated shared/** pull\n")
    srv = start_berth(tmp_path, config=cfg)
    try:
        with as_user("alice") as c:
            make_image(srv.url, "alice/app", "v1", session=c)
            make_image(srv.url, "alice/other", "v1", session=c)
        with as_user("bob") as c:
            assert c.get(f"{srv.url}/v2/").status_code == 200
            # Signed in, but the policy does not allow it: logging in again would not help, so
            # the answer is 403 DENIED rather than a challenge.
            for r in (c.post(f"{srv.url}/v2/alice/app/blobs/uploads/"), c.get(f"{srv.url}/v2/alice/app/tags/list")):
                assert r.status_code == 403, (r.status_code, r.text)
                assert r.json()["errors"][0]["code"] == "DENIED"
            assert c.get(f"{srv.url}/v2/shared/x/tags/list").status_code == 404  # allowed, and empty
        r = requests.get(f"{srv.url}/v2/alice/app/tags/list", auth=("alice", "wrong-acl-pw"), timeout=10)
        assert_unauthorized(r, basic_challenge(REALM))
        assert_no_secret(srv.log(), list(USERS.values()) + ["wrong-acl-pw"], "the server log")
    finally:
        srv.stop()
