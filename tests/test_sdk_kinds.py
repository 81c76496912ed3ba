"""The JavaScript and Python SDKs' `auth-policy` and `cleanup-policy` templates (issue 12), as an
author uses them: copied, built with the SDK's one command, loaded by the registry and answering.
(The `admission-policy` templates are in test_admission.py.)"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time

import pytest
import requests

from harness import BERTH_BIN, ROOT, start_berth
from ocihelpers import make_image

COMPONENTS = ROOT / "plugins" / "target" / "components"
TAGS = "docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"


def build(lang: str, kind: str):
    """The template copied where it survives between runs (copy2 keeps times, so an unchanged
    one is not rebuilt), built with the SDK's command; returns the component."""
    src = ROOT / ("sdk-js" if lang == "js" else "sdk-py") / "templates" / kind
    mine = COMPONENTS / "templates" / f"{lang}-{kind}"
    shutil.rmtree(mine, ignore_errors=True)
    shutil.copytree(src, mine, copy_function=shutil.copy2)
    out = COMPONENTS / f"template_{lang}_{kind}.wasm"
    if lang == "js":
        cmd = ["node", str(ROOT / "sdk-js" / "build.mjs"), kind, str(mine / "plugin.js"), str(out)]
    else:
        cmd = ["python3", str(ROOT / "sdk-py" / "build.py"), kind, str(mine), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    check = subprocess.run([str(BERTH_BIN), "plugin", "check", str(out)], capture_output=True, text=True, timeout=600)
    assert f"{kind}-plugin (berth:plugin@0.1.0" in check.stdout, check.stdout + check.stderr
    return out


def claims(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.mark.parametrize("lang", ["js", "py"])
def test_cleanup_template_keeps_the_newest(tmp_path, lang):
    plugin = build(lang, "cleanup-policy")
    cfg = {"plugins": {"mine": {"path": str(plugin), "config": {"keep": "1"}}},
           "cleanup": {"policies": [{"name": "tmpl", "plugin": "mine", "repositories": ["app/*"]}]}}
    srv = start_berth(tmp_path, config=cfg)
    try:
        for i, tag in enumerate(["old", "mid", "new"]):
            make_image(srv.url, "app/web", tag)
            t = time.time() - (10 - i) * 86400
            os.utime(srv.root / TAGS.format(repo="app/web", tag=tag), (t, t))
        r = subprocess.run([str(BERTH_BIN), "cleanup", str(srv.config_path)],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "app/web:old\tdeleted" in r.stdout and "app/web:mid\tdeleted" in r.stdout, r.stdout
        assert "keep-n=1" in r.stdout, r.stdout
        tags = requests.get(f"{srv.url}/v2/app/web/tags/list", timeout=10).json()["tags"]
        assert tags == ["new"]
    finally:
        srv.stop()


@pytest.mark.parametrize("lang", ["js", "py"])
def test_auth_template_decides_what_berths_issuer_grants(tmp_path, lang):
    plugin = build(lang, "auth-policy")
    cfg = {"plugins": {"mine": {"path": str(plugin), "config": {"users": "alice=secret", "pull-anonymous": "true"}}},
           "auth": {"issuer": {"policy": "mine"}}}
    srv = start_berth(tmp_path, config=cfg)
    try:
        def token(user=None, password=None):
            headers = {}
            if user:
                headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            r = requests.get(f"{srv.url}/auth/token", params={"service": "berth", "scope": "repository:app/web:pull,push"},
                             headers=headers, timeout=60)
            return r

        r = token("alice", "secret")
        assert r.status_code == 200, r.text
        assert claims(r.json()["token"])["access"] == [{"type": "repository", "name": "app/web", "actions": ["pull", "push"]}]
        anon = token()
        assert anon.status_code == 200, anon.text
        assert claims(anon.json()["token"])["access"] == [{"type": "repository", "name": "app/web", "actions": ["pull"]}]
        wrong = token("alice", "guess")
        assert wrong.status_code == 401, wrong.text
        # The token alice got pushes to the registry.
        tok = r.json()["token"]
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {tok}"
        make_image(srv.url, "app/web", "v1", session=s)
    finally:
        srv.stop()
