"""What the auth tests share: expected challenges and error bodies, htpasswd files, the
auth-policy plugins' config fragments, Berth's token endpoint, the debug server's auth counters,
requests from another loopback address, and skopeo."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlencode, urlparse

import bcrypt
import pytest
import requests

from harness import need_plugin

TIMEOUT = 30


# --- challenges and error bodies ----------------------------------------------------------------

def bearer_challenge(realm: str, service: str, scopes: list[str] | None = None, error: str | None = None) -> str:
    """`Bearer realm="…",service="…"[,scope="a b"][,error="…"]`, exactly as the spec words it."""
    s = f'Bearer realm="{realm}",service="{service}"'
    if scopes:
        s += f',scope="{" ".join(scopes)}"'
    if error:
        s += f',error="{error}"'
    return s


def basic_challenge(realm: str) -> str:
    return f'Basic realm="{realm}"'


def challenge_params(header: str) -> tuple[str, dict]:
    scheme, _, rest = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def details(resp: requests.Response) -> set[tuple]:
    """(Type, Name, Action) of each `detail` entry of the first error."""
    err = resp.json()["errors"][0]
    d = err.get("detail") or []
    return {(x.get("Type"), x.get("Name"), x.get("Action")) for x in d if isinstance(x, dict)}


def required(scopes: list[str]) -> set[tuple]:
    """The detail entries a list of scope strings asks for."""
    out = set()
    for s in scopes:
        kind, rest = s.split(":", 1)
        name, actions = rest.rsplit(":", 1)
        for a in actions.split(","):
            out.add((kind, name, a))
    return out


def assert_unauthorized(resp: requests.Response, challenge: str | tuple[str, ...], scopes: list[str] | None = None) -> None:
    """401, the exact challenge (or one of several, when the order of scopes is free), and a
    distribution error body: code UNAUTHORIZED, a detail entry per required action."""
    assert resp.status_code == 401, (resp.status_code, resp.headers, resp.text[:500])
    got = resp.headers.get("WWW-Authenticate")
    want = (challenge,) if isinstance(challenge, str) else challenge
    assert got in want, f"WWW-Authenticate {got!r}, want {want!r}"
    body = resp.json()
    assert body["errors"][0]["code"] == "UNAUTHORIZED", body
    assert isinstance(body["errors"][0].get("message"), str)
    if scopes:
        assert details(resp) == required(scopes), body
    assert resp.headers.get("Content-Type", "").startswith("application/json")


# --- htpasswd ------------------------------------------------------------------------------------

def htpasswd_line(user: str, password: str, cost: int = 4, prefix: str = "$2y$") -> str:
    """A bcrypt htpasswd entry, as `htpasswd -B` writes it ($2y$) or as other tools do ($2b$/$2a$)."""
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    return f"{user}:{prefix}{h[4:]}"


def write_htpasswd(path: Path, users: dict[str, str], cost: int = 4, prefixes: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [htpasswd_line(u, p, cost, (prefixes or {}).get(u, "$2y$")) for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- auth-policy plugins -------------------------------------------------------------------------

def _grant(dir_: Path) -> dict:
    return {"dirs": [{"host": str(dir_), "guest": "/auth", "mode": "ro"}]}


def acl_plugin(auth_dir: Path, rules: str, groups: str = "", **extra) -> dict:
    """`plugins:` entry for auth-acl; `auth_dir` holds `htpasswd` and is granted read-only as /auth."""
    entry = {"path": str(need_plugin("auth-acl")), "grants": _grant(auth_dir),
             "config": {"rules": rules, "groups": groups, "users": "/auth/htpasswd"}}
    entry.update(extra)
    return {"auth-acl": entry}


def htpasswd_plugin(auth_dir: Path, own: str = "pull,push,delete", others: str = "pull", anonymous: str = "",
                    admins: str = "root", cachettl: str = "0", **extra) -> dict:
    """`plugins:` entry for auth-htpasswd: a user gets `own` on `<user>/**`, `others` elsewhere,
    admins everything; `anonymous` is what a caller without credentials gets."""
    entry = {"path": str(need_plugin("auth-htpasswd")), "grants": _grant(auth_dir),
             "config": {"path": "/auth/htpasswd", "own": own, "others": others, "anonymous": anonymous,
                        "admins": admins, "cachettl": cachettl}}
    entry.update(extra)
    return {"auth-htpasswd": entry}


def hostile_auth_plugin(mode: str, **extra) -> dict:
    entry = {"path": str(need_plugin("hostile-auth")), "config": {"mode": mode},
             "deadlinems": 1000, "memorymib": 32, "instances": 1}
    entry.update(extra)
    return {"hostile-auth": entry}


# --- Berth's token endpoint ------------------------------------------------------------------------

def token_url(server) -> str:
    return f"{server.url}/auth/token"


def get_token(server, scopes: list[str] = (), user: str | None = None, password: str | None = None,
              service: str = "berth", **params) -> requests.Response:
    q = [("service", service)] + [("scope", s) for s in scopes] + list(params.items())
    headers = {"Authorization": basic(user, password)} if user is not None else {}
    return requests.get(token_url(server) + "?" + urlencode(q), headers=headers, timeout=TIMEOUT)


def token_for(server, scopes: list[str] = (), user: str | None = None, password: str | None = None) -> str:
    r = get_token(server, scopes, user, password)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["token"]


def post_token(server, form: dict) -> requests.Response:
    return requests.post(token_url(server), data=form, timeout=TIMEOUT)


# --- the debug server's counters -----------------------------------------------------------------

def auth_counters(debug_url: str) -> dict:
    """{outcome: value} of berth_auth_outcomes_total, plus 'issued': berth_auth_tokens_issued_total.
    Fails if any auth sample carries a label other than `outcome`."""
    from prometheus_client.parser import text_string_to_metric_families

    r = requests.get(debug_url + "/metrics", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    out: dict = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if s.name == "berth_auth_outcomes_total":
                assert set(s.labels) == {"outcome"}, s
                out[s.labels["outcome"]] = out.get(s.labels["outcome"], 0) + s.value
            elif s.name == "berth_auth_tokens_issued_total":
                assert not s.labels, s
                out["issued"] = s.value
    return out


def counter_delta(after: dict, before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# --- requests from another loopback address ------------------------------------------------------

def request_from(source_ip: str, url: str, method: str = "GET", headers: dict | None = None):
    """One request whose client address is `source_ip` (any 127.x.y.z works on Linux loopback).
    Returns (status, headers, body)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT, source_address=(source_ip, 0))
    try:
        path = u.path + ("?" + u.query if u.query else "")
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


# --- skopeo --------------------------------------------------------------------------------------

def skopeo(server, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    exe = shutil.which("skopeo")
    if exe is None:
        pytest.fail("skopeo is not installed (apt-get install skopeo); these tests must not be skipped")
    cmd = [exe, "--insecure-policy", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                    f"stderr:\n{proc.stderr}\nserver log (tail):\n{server.log()[-4000:]}")
    return proc


def small_layout(tmp_path: Path, name: str, tag: str = "v1"):
    """An OCI layout with one small image; returns (layout, image)."""
    import ocilayout as ol

    src = ol.OciLayout(tmp_path / f"layout-{name}")
    image = ol.make_image(name)
    src.add_image(image, tag=tag)
    return src, image


def assert_no_secret(text: str, secrets, where: str) -> None:
    for s in secrets:
        if not s:
            continue  # an empty part (alg none's signature) is in every text
        assert s not in text, f"a secret ({s[:6]}…, {len(s)} chars) appears in {where}"


def token_parts(token: str) -> list[str]:
    """The token and its signature: neither may appear in a log (the payload alone is not secret)."""
    return [token, token.rsplit(".", 1)[-1]]


def jdump(x) -> str:
    return json.dumps(x, sort_keys=True)
