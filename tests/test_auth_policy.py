"""An auth-policy plugin deciding for tokens from an external issuer (`auth.token.policy`): the
host verifies the token, the plugin decides from its claims (the `access` claim no longer does),
a hostile plugin denies without taking the registry down, and a reloaded policy decides at once
(cached decisions belong to the version that made them).
"""

from __future__ import annotations

import requests
import yaml

import authtokens as at
from authhelpers import acl_plugin, assert_unauthorized, bearer, bearer_challenge, hostile_auth_plugin, write_htpasswd
from harness import free_port, start_berth
from ocihelpers import Client, make_image

SERVICE = "berth-test"
ISSUER = "test-issuer"
REALM = "https://gitlab.example.test/jwt/auth"


def token_policy_config(d, key, policy: str, plugins: dict) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    bundle = at.write_bundle(d / "bundle.pem", [key])
    dport = free_port()
    return {"http": {"debug": {"addr": f"127.0.0.1:{dport}"}}, "plugins": plugins,
            "auth": {"token": {"realm": REALM, "service": SERVICE, "issuer": ISSUER,
                               "rootcertbundle": str(bundle), "policy": policy}}}


def client(token: str) -> Client:
    c = Client()
    c.headers.update(bearer(token))
    return c


def test_the_policy_decides_from_the_verified_claims(tmp_path):
    key = at.SigningKey("P-256")
    issuer = at.Issuer([key], ISSUER, SERVICE)
    auth = tmp_path / "auth"
    write_htpasswd(auth / "htpasswd", {"nobody": "x"})
    plugins = acl_plugin(auth, "user:alice team/** pull,push\nauthenticated public/** pull\n")
    plugins["auth-acl"]["config"]["cachettl"] = "60"
    cfg = token_policy_config(tmp_path, key, "auth-acl", plugins)
    srv = start_berth(tmp_path, config=cfg)
    try:
        # The token's access claim is empty: the plugin grants alice push on team/**.
        alice = issuer.mint([], sub="alice")
        with client(alice) as c:
            make_image(srv.url, "team/app", "v1", session=c)
        # The claim grants everything, but the plugin does not: refused.
        generous = issuer.mint([at.repo("other/app", "*")], sub="alice")
        r = requests.get(f"{srv.url}/v2/other/app/tags/list", headers=bearer(generous), timeout=10)
        assert_unauthorized(r, bearer_challenge(REALM, SERVICE, ["repository:other/app:pull"], "insufficient_scope"),
                            ["repository:other/app:pull"])
        # Bob only reads public/**.
        bob = issuer.mint([], sub="bob")
        r = requests.post(f"{srv.url}/v2/team/app/blobs/uploads/", headers=bearer(bob), timeout=10)
        assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
        assert requests.get(f"{srv.url}/v2/public/x/tags/list", headers=bearer(bob), timeout=10).status_code == 404
        # The plugin still never sees an unverified token: a forged one is refused before it.
        forged = at.Issuer([at.SigningKey("P-256", name="stranger")], ISSUER, SERVICE).mint([], sub="alice")
        r = requests.get(f"{srv.url}/v2/team/app/tags/list", headers=bearer(forged), timeout=10)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]

        # Reload with other rules (same file, another config): the cached decision is not reused.
        cfg2 = yaml.safe_load(srv.config_path.read_text())
        cfg2["plugins"]["auth-acl"]["config"]["rules"] = "user:alice team/** pull\n"
        srv.config_path.write_text(yaml.safe_dump(cfg2))
        debug = "http://" + cfg["http"]["debug"]["addr"]
        r = requests.post(debug + "/admin/reload", timeout=30)
        assert r.status_code == 200 and "auth plugin auth-acl" in r.json()["serving"], r.text
        r = requests.post(f"{srv.url}/v2/team/app/blobs/uploads/", headers=bearer(alice), timeout=10)
        assert r.status_code == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"], r.text
        assert requests.get(f"{srv.url}/v2/team/app/tags/list", headers=bearer(alice), timeout=10).status_code == 200
    finally:
        srv.stop()


def test_a_hostile_policy_denies_and_the_registry_serves_on(tmp_path):
    key = at.SigningKey("P-256")
    issuer = at.Issuer([key], ISSUER, SERVICE)
    for mode in ("panic", "loop", "oom", "error"):
        d = tmp_path / mode
        srv = start_berth(d, config=token_policy_config(d, key, "hostile-auth", hostile_auth_plugin(mode)))
        try:
            tok = issuer.mint([at.repo("team/app", "pull", "push")], sub="alice")
            for _ in range(2):
                r = requests.get(f"{srv.url}/v2/team/app/tags/list", headers=bearer(tok), timeout=10)
                assert r.status_code == 403, (mode, r.status_code, r.text)
                assert r.json()["errors"][0]["code"] == "DENIED", r.text
                assert "hostile" not in r.text, "the plugin's failure stays in the log"
            # /v2/ needs no decision: a valid token still opens it, and the process is alive.
            assert requests.get(f"{srv.url}/v2/", headers=bearer(tok), timeout=10).status_code == 200
            assert srv.proc.poll() is None
            assert "auth policy failed; denying" in srv.log()
        finally:
            srv.stop()
