"""Admission policies (`admission.chains`): plugins in Rust, JavaScript and Python asked before a
write lands. Allowed pushes land; a denied one is `403 DENIED` with the plugin's message and
leaves nothing behind (no tag moved, no manifest stored). The JavaScript immutable-tags plugin
against racing pushes to one protected tag: exactly one wins. The Rust, JavaScript and Python
admission-rules answer one policy table the same. Hostile Python plugins (trap, endless loop,
memory bomb) deny and the registry serves on. The JavaScript and Python SDK templates, copied
and built with their one command, are swapped in by a reload and answer.

The JavaScript and Python components are built once per run by plugins/build-components.sh
(an up-to-date component is not rebuilt), and `berth plugin check` on each (the first test)
compiles them into the component cache, so the servers here start without paying a compile.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

import authtokens as at
import ocilayout as ol
from authhelpers import acl_plugin, skopeo, token_for, write_htpasswd
from harness import BERTH_BIN, PLUGIN_DIR, ROOT, free_port, start_berth
from ocihelpers import (OCI_MANIFEST, build_manifest, error_codes, get_manifest, image_config, push_blob,
                        push_manifest, sha256, to_bytes)

COMPONENTS = ROOT / "plugins" / "target" / "components"
JS_PY = {
    "admission-immutable-tags": "berth_admission_immutable_tags.wasm",
    "admission-rules-js": "berth_admission_rules_js.wasm",
    "admission-rules-py": "berth_admission_rules_py.wasm",
    "admission-hostile-py": "berth_admission_hostile_py.wasm",
}


def toolchains_missing() -> str | None:
    if shutil.which("node") is None or not (ROOT / "sdk-js" / "node_modules" / "@bytecodealliance").is_dir():
        return "componentize-js is not installed (tests/setup.sh)"
    if shutil.which("componentize-py") is None:
        return "componentize-py is not installed (tests/setup.sh)"
    return None


def need_toolchains() -> None:
    missing = toolchains_missing()
    if missing:
        if os.environ.get("BERTH_REQUIRE_PLUGINS"):
            pytest.fail(f"{missing}, and BERTH_REQUIRE_PLUGINS is set")
        pytest.skip(missing)


@pytest.fixture(scope="module")
def components() -> dict[str, Path]:
    """Every admission component, built (JS and Python by their SDK's command, once per run)."""
    need_toolchains()
    b = subprocess.run(["bash", str(ROOT / "plugins" / "build-components.sh")], capture_output=True, text=True,
                       timeout=1800)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    paths = {name: COMPONENTS / f for name, f in JS_PY.items()}
    rust = PLUGIN_DIR / "berth_admission_rules.wasm"
    if not rust.is_file():
        if os.environ.get("BERTH_REQUIRE_PLUGINS"):
            pytest.fail(f"{rust} is not built, and BERTH_REQUIRE_PLUGINS is set")
        pytest.skip(f"{rust} is not built (cd plugins && cargo build --target wasm32-wasip2 --release)")
    paths["admission-rules"] = rust
    for name, p in paths.items():
        assert p.is_file(), f"{name}: {p} was not built"
    return paths


def plugin_check(path: Path) -> str:
    r = subprocess.run([str(BERTH_BIN), "plugin", "check", str(path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_plugin_check_names_the_world_and_version_of_js_and_python_components(components):
    for name, path in components.items():
        out = plugin_check(path)
        assert "admission-policy-plugin (berth:plugin@0.1.0" in out, f"{name}: {out}"
        assert "links: ok" in out, f"{name}: {out}"


def admission_config(plugins: dict[str, dict], chains: list[tuple[str, list[str]]], **extra) -> dict:
    cfg = {"plugins": plugins,
           "admission": {"chains": [{"repository": g, "plugins": p} for g, p in chains], **extra}}
    return cfg


def put(url: str, repo: str, ref: str, manifest, auth=None) -> requests.Response:
    return requests.put(f"{url}/v2/{repo}/manifests/{ref}", data=to_bytes(manifest),
                        headers={"Content-Type": OCI_MANIFEST}, auth=auth, timeout=30)


def image(url: str, repo: str, seed: str, layers: list[bytes] | None = None, auth=None, **manifest_args) -> dict:
    """Pushes the blobs of a small image and returns its manifest (not pushed)."""
    s = requests.Session()
    s.auth = auth
    config = image_config(seed)
    layers = layers if layers is not None else [seed.encode() * 16]
    push_blob(url, repo, config, s)
    for layer in layers:
        push_blob(url, repo, layer, s)
    return build_manifest(config, layers, **manifest_args)


def assert_denied(r: requests.Response, *words: str) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert error_codes(r) == ["DENIED"], r.text
    message = r.json()["errors"][0]["message"]
    for w in words:
        assert w in message, message


def tag_target(url: str, repo: str, tag: str, auth=None) -> str | None:
    r = requests.head(f"{url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, auth=auth, timeout=10)
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


def stored(url: str, repo: str, digest: str, auth=None) -> bool:
    return tag_target(url, repo, digest, auth) == digest


USERS = {"alice": "alice-pw-1", "release-bot": "bot-pw-2"}
ALICE = ("alice", USERS["alice"])
BOT = ("release-bot", USERS["release-bot"])


@pytest.fixture(scope="module")
def immutable(components, tmp_path_factory):
    """A registry with Basic auth where `prod/**` tags `v*` and semver versions are immutable,
    except to release-bot."""
    tmp = tmp_path_factory.mktemp("immutable")
    htpasswd = write_htpasswd(tmp / "htpasswd", USERS)
    cfg = admission_config(
        {"immutable": {"path": str(components["admission-immutable-tags"]),
                       "config": {"protect.prod/**": "v*, semver", "may": "release-bot"}}},
        [("prod/**", ["immutable"])])
    cfg["auth"] = {"htpasswd": {"realm": "admission", "path": str(htpasswd)}}
    srv = start_berth(tmp, config=cfg)
    yield srv
    srv.stop()


def test_immutable_tags_with_skopeo_and_http(immutable, tmp_path):
    srv = immutable
    creds = f"--dest-creds=alice:{USERS['alice']}"
    first_layout = ol.OciLayout(tmp_path / "first")
    first = ol.make_image("imm-first")
    first_layout.add_image(first, tag="v1.0.0")
    second_layout = ol.OciLayout(tmp_path / "second")
    second = ol.make_image("imm-second")
    second_layout.add_image(second, tag="v1.0.0")
    dest = f"docker://{srv.host}/prod/app:v1.0.0"
    # The first push of a protected tag lands.
    skopeo(srv, "copy", "--preserve-digests", "--dest-tls-verify=false", creds,
           f"oci:{first_layout.path}:v1.0.0", dest)
    assert tag_target(srv.url, "prod/app", "v1.0.0", ALICE) == first.digest
    # Moving it is refused, and nothing of the second manifest is stored.
    p = skopeo(srv, "copy", "--preserve-digests", "--dest-tls-verify=false", creds,
               f"oci:{second_layout.path}:v1.0.0", dest, check=False)
    assert p.returncode != 0 and "immutable" in p.stderr, p.stderr
    assert tag_target(srv.url, "prod/app", "v1.0.0", ALICE) == first.digest
    assert not stored(srv.url, "prod/app", second.digest, ALICE)

    # Plain HTTP: the same manifest again moves nothing and is allowed; another is denied.
    r = put(srv.url, "prod/app", "v1.0.0", first.manifest, ALICE)
    assert r.status_code == 201, r.text
    other = image(srv.url, "prod/app", "http-other", auth=ALICE)
    r = put(srv.url, "prod/app", "v1.0.0", other, ALICE)
    assert_denied(r, "v1.0.0", "immutable", first.digest)
    assert not stored(srv.url, "prod/app", sha256(to_bytes(other)), ALICE)
    # Deleting the tag, or the manifest it points at, is denied too.
    r = requests.delete(f"{srv.url}/v2/prod/app/manifests/v1.0.0", auth=ALICE, timeout=10)
    assert_denied(r, "v1.0.0", "cannot be deleted")
    r = requests.delete(f"{srv.url}/v2/prod/app/manifests/{first.digest}", auth=ALICE, timeout=10)
    assert_denied(r, "v1.0.0")
    assert tag_target(srv.url, "prod/app", "v1.0.0", ALICE) == first.digest
    # Unprotected tags move and go freely; unprotected repositories are not asked about.
    for tag in ("dev", "latest"):
        assert put(srv.url, "prod/app", tag, first.manifest, ALICE).status_code == 201
        assert put(srv.url, "prod/app", tag, other, ALICE).status_code == 201
    assert requests.delete(f"{srv.url}/v2/prod/app/manifests/dev", auth=ALICE, timeout=10).status_code == 202
    scratch = [image(srv.url, "scratch/app", f"scratch-{i}", auth=ALICE) for i in range(2)]
    for m in scratch:
        assert put(srv.url, "scratch/app", "v1.0.0", m, ALICE).status_code == 201
    assert tag_target(srv.url, "scratch/app", "v1.0.0", ALICE) == sha256(to_bytes(scratch[1]))
    # The identity named in `may` moves a protected tag.
    bot_other = image(srv.url, "prod/app", "http-other", auth=BOT)
    assert put(srv.url, "prod/app", "v1.0.0", bot_other, BOT).status_code == 201
    assert tag_target(srv.url, "prod/app", "v1.0.0", BOT) == sha256(to_bytes(other))


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token}"
        return r


def immutable_for_group(components) -> dict:
    """The immutable-tags plugin protecting `v*` on prod/**, except to members of `releasers`."""
    return {"path": str(components["admission-immutable-tags"]),
            "config": {"protect.prod/**": "v*", "maygroups": "releasers"}}


def assert_group_decides(url: str, repo: str, outsider, member) -> None:
    """A protected tag pushed by `outsider` is theirs to keep but not to move; `member`, in the
    exempt group, moves it and deletes it."""
    first = image(url, repo, f"{repo}-first", auth=outsider)
    second = image(url, repo, f"{repo}-second", auth=outsider)
    assert put(url, repo, "v1", first, outsider).status_code == 201
    assert_denied(put(url, repo, "v1", second, outsider), "immutable")
    assert tag_target(url, repo, "v1", outsider) == sha256(to_bytes(first))
    r = put(url, repo, "v1", second, member)
    assert r.status_code == 201, r.text
    assert tag_target(url, repo, "v1", member) == sha256(to_bytes(second))
    assert_denied(requests.delete(f"{url}/v2/{repo}/manifests/v1", auth=outsider, timeout=10), "cannot be deleted")
    r = requests.delete(f"{url}/v2/{repo}/manifests/v1", auth=member, timeout=10)
    assert r.status_code == 202, r.text
    assert tag_target(url, repo, "v1", member) is None


GROUP_USERS = {"alice": "alice-pw-1", "carol": "carol-pw-3"}


@pytest.fixture(scope="module")
def group_issuer(components, tmp_path_factory):
    """Berth's own token server deciding with auth-acl (carol is in `releasers`), and immutable
    tags on prod/** that `releasers` may still move."""
    tmp = tmp_path_factory.mktemp("group-issuer")
    d = tmp / "auth"
    write_htpasswd(d / "htpasswd", GROUP_USERS)
    plugins = acl_plugin(d, "authenticated prod/** pull,push,delete\n", "releasers=carol")
    plugins["immutable"] = immutable_for_group(components)
    cfg = admission_config(plugins, [("prod/**", ["immutable"])])
    cfg["auth"] = {"issuer": {"policy": "auth-acl"}}
    srv = start_berth(tmp, config=cfg)
    yield srv
    srv.stop()


def test_groups_the_auth_policy_names_reach_admission_through_issued_tokens(group_issuer):
    srv = group_issuer
    scope = ["repository:prod/app:pull,push,delete"]
    alice = token_for(srv, scope, "alice", GROUP_USERS["alice"])
    carol = token_for(srv, scope, "carol", GROUP_USERS["carol"])
    # The issuer writes the policy's groups into the token (none: no claim).
    assert "groups" not in at.unverified_claims(alice)
    assert at.unverified_claims(carol)["groups"] == ["releasers"]
    assert_group_decides(srv.url, "prod/app", Bearer(alice), Bearer(carol))
    # alice's token with the group written in, the signature kept: refused before admission.
    first = image(srv.url, "prod/app", "forged-first", auth=Bearer(alice))
    assert put(srv.url, "prod/app", "v2", first, Bearer(alice)).status_code == 201
    second = image(srv.url, "prod/app", "forged-second", auth=Bearer(alice))
    forged = at.tampered(alice, groups=["releasers"])
    assert put(srv.url, "prod/app", "v2", second, Bearer(forged)).status_code == 401
    # ... and so is one signed by a key the registry does not trust.
    stranger = at.Issuer([at.SigningKey("P-256", name="not the issuer")], "berth", "berth")
    own = stranger.mint([at.repo("prod/app", "pull", "push")], sub="alice", groups=["releasers"])
    assert put(srv.url, "prod/app", "v2", second, Bearer(own)).status_code == 401
    assert tag_target(srv.url, "prod/app", "v2", Bearer(alice)) == sha256(to_bytes(first))


def test_groups_claim_of_an_external_issuer_s_token_reaches_admission(components, tmp_path):
    """No policy: a trusted issuer's token is the whole answer, its `groups` claim included."""
    key = at.SigningKey("P-256", name="external issuer")
    issuer = at.Issuer([key], "test-issuer", "berth")
    bundle = at.write_bundle(tmp_path / "bundle.pem", [key])
    cfg = admission_config({"immutable": immutable_for_group(components)}, [("prod/**", ["immutable"])])
    cfg["auth"] = {"token": {"realm": "https://issuer.example.test/auth", "service": "berth",
                             "issuer": "test-issuer", "rootcertbundle": str(bundle)}}
    srv = start_berth(tmp_path, config=cfg)
    try:
        access = [at.repo("prod/ext", "pull", "push", "delete")]
        outsider = Bearer(issuer.mint(access, sub="dave"))
        member = Bearer(issuer.mint(access, sub="erin", groups=["builders", "releasers"]))
        assert_group_decides(srv.url, "prod/ext", outsider, member)
    finally:
        srv.stop()


def test_racing_pushes_to_a_protected_tag_exactly_one_wins(immutable):
    srv = immutable
    rounds = 6
    manifests = {(i, side): image(srv.url, "prod/race", f"race-{i}-{side}", auth=ALICE)
                 for i in range(rounds) for side in "ab"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for i in range(rounds):
            tag = f"v2.{i}.0"
            futures = {side: pool.submit(put, srv.url, "prod/race", tag, manifests[(i, side)], ALICE) for side in "ab"}
            status = {side: f.result().status_code for side, f in futures.items()}
            assert sorted(status.values()) == [201, 403], status
            winner = next(s for s, code in status.items() if code == 201)
            loser = "b" if winner == "a" else "a"
            assert tag_target(srv.url, "prod/race", tag, ALICE) == sha256(to_bytes(manifests[(i, winner)]))
            assert not stored(srv.url, "prod/race", sha256(to_bytes(manifests[(i, loser)])), ALICE)


RULES = {"maxlayerbytes": "1000", "maximagebytes": "2500", "mediatypes": OCI_MANIFEST,
         "artifacttypes": "application/vnd.oci.image.config.v1+json, application/vnd.example.sbom",
         "annotations": "org.opencontainers.image.source", "tags": "v*, latest"}
SOURCE = {"org.opencontainers.image.source": "https://example.test/app"}


@pytest.fixture(scope="module")
def rules(components, tmp_path_factory):
    """One registry, the same rules in three languages: rs/** (Rust), js/** (JS), py/** (Python);
    sk/** the Python one with only the annotation and tag rules."""
    tmp = tmp_path_factory.mktemp("rules")
    plugins = {f"rules-{lang}": {"path": str(components[name]), "config": RULES}
               for lang, name in (("rs", "admission-rules"), ("js", "admission-rules-js"),
                                  ("py", "admission-rules-py"))}
    chains = [(f"{lang}/**", [f"rules-{lang}"]) for lang in ("rs", "js", "py")]
    # For skopeo's real images (bigger than the table's limits): annotations and tags only.
    plugins["rules-sk"] = {"path": str(components["admission-rules-py"]),
                           "config": {"annotations": RULES["annotations"], "tags": "v*"}}
    chains.append(("sk/**", ["rules-sk"]))
    srv = start_berth(tmp, config=admission_config(plugins, chains))
    yield srv
    srv.stop()


def rules_table(url: str, repo: str) -> list[tuple[str, str, dict]]:
    """(case, tag, manifest) rows; blobs pushed to `repo`."""
    small = [b"a" * 300, b"b" * 400]
    return [
        ("allowed", "v1", image(url, repo, "ok", small, annotations=SOURCE)),
        ("latest allowed", "latest", image(url, repo, "ok2", small, annotations=SOURCE)),
        ("tag pattern", "nightly", image(url, repo, "t", small, annotations=SOURCE)),
        ("missing annotation", "v2", image(url, repo, "ann", small)),
        ("layer too big", "v3", image(url, repo, "big", [b"c" * 1001], annotations=SOURCE)),
        ("image too big", "v4", image(url, repo, "img", [b"d" * 900, b"e" * 900, b"f" * 900], annotations=SOURCE)),
        ("artifact type", "v5", image(url, repo, "at", small, annotations=SOURCE,
                                      artifact_type="application/vnd.example.unknown")),
        ("artifact allowed", "v6", image(url, repo, "at2", small, annotations=SOURCE,
                                         artifact_type="application/vnd.example.sbom")),
    ]


def test_rust_js_and_python_rules_give_the_same_answers(rules):
    srv = rules
    answers = {}
    for lang in ("rs", "js", "py"):
        repo = f"{lang}/app"
        rows = []
        for case, tag, manifest in rules_table(srv.url, repo):
            r = put(srv.url, repo, tag, manifest)
            message = r.json()["errors"][0]["message"].split(": ", 1)[1] if r.status_code == 403 else ""
            rows.append((case, r.status_code, message))
            if r.status_code == 403:
                assert error_codes(r) == ["DENIED"]
                assert tag_target(srv.url, repo, tag) is None, case
                assert not stored(srv.url, repo, sha256(to_bytes(manifest))), case
            else:
                assert tag_target(srv.url, repo, tag) == sha256(to_bytes(manifest)), case
        # A declared upload over the layer limit is refused before a byte is read.
        big = b"z" * 1001
        r = requests.post(f"{srv.url}/v2/{repo}/blobs/uploads/?digest={sha256(big)}", data=big,
                          headers={"Content-Type": "application/octet-stream"}, timeout=10)
        rows.append(("upload", r.status_code, r.json()["errors"][0]["message"].split(": ", 1)[1]
                     if r.status_code == 403 else ""))
        answers[lang] = rows
    assert answers["rs"] == answers["js"] == answers["py"], json.dumps(answers, indent=1)
    got = {case: (status, message) for case, status, message in answers["rs"]}
    assert got["allowed"][0] == got["latest allowed"][0] == got["artifact allowed"][0] == 201
    assert got["tag pattern"] == (403, "tag nightly does not match any allowed pattern (v*, latest)")
    assert got["missing annotation"] == (403, "missing required annotation org.opencontainers.image.source")
    assert got["layer too big"][0] == 403 and "is 1001 bytes; the limit is 1000" in got["layer too big"][1]
    assert got["image too big"][0] == 403 and got["image too big"][1].startswith("image is ")
    assert got["artifact type"] == (403, "artifact type application/vnd.example.unknown is not allowed")
    assert got["upload"] == (403, "blob of 1001 bytes exceeds the layer limit of 1000")


def test_python_rules_with_skopeo(rules, tmp_path):
    srv = rules
    layout = ol.OciLayout(tmp_path / "src")
    ok = ol.make_image("py-ok", n_layers=1, annotations=SOURCE)
    bare = ol.make_image("py-bare", n_layers=1)
    layout.add_image(ok, tag="v1")
    layout.add_image(bare, tag="v2")
    copy = ("copy", "--preserve-digests", "--dest-tls-verify=false")
    skopeo(srv, *copy, f"oci:{layout.path}:v1", f"docker://{srv.host}/sk/app:v1")
    assert tag_target(srv.url, "sk/app", "v1") == ok.digest
    p = skopeo(srv, *copy, f"oci:{layout.path}:v2", f"docker://{srv.host}/sk/app:v2", check=False)
    assert p.returncode != 0 and "missing required annotation org.opencontainers.image.source" in p.stderr, p.stderr
    assert tag_target(srv.url, "sk/app", "v2") is None
    assert not stored(srv.url, "sk/app", bare.digest)


def test_hostile_python_plugins_deny_and_the_registry_serves_on(components, tmp_path):
    hostile = str(components["admission-hostile-py"])
    plugins = {
        "trap": {"path": hostile, "config": {"mode": "trap"}},
        "loop": {"path": hostile, "config": {"mode": "loop"}, "deadlinems": 1000},
        "bomb": {"path": hostile, "config": {"mode": "memory"}, "memorymib": 96},
        "lenient": {"path": hostile, "config": {"mode": "trap"}},
    }
    chains = [("trap/**", ["trap"]), ("loop/**", ["loop"]), ("bomb/**", ["bomb"]), ("lenient/**", ["lenient"])]
    srv = start_berth(tmp_path, config=admission_config(plugins, chains, failopen=["lenient"]))
    try:
        for ns, reason in (("trap", "trap"), ("loop", "deadline"), ("bomb", "memory")):
            repo = f"{ns}/app"
            m = image(srv.url, repo, ns)
            assert_denied(put(srv.url, repo, "hostile", m), ns, "failed", reason)
            assert tag_target(srv.url, repo, "hostile") is None
            assert not stored(srv.url, repo, sha256(to_bytes(m)))
            # A fresh instance serves the next write.
            assert put(srv.url, repo, "fine", m).status_code == 201
        # Fail open, configured: the trap lets the write through.
        m = image(srv.url, "lenient/app", "lenient")
        assert put(srv.url, "lenient/app", "hostile", m).status_code == 201
        assert requests.get(f"{srv.url}/v2/", timeout=5).status_code == 200
        assert srv.proc.poll() is None
    finally:
        srv.stop()


TEMPLATES = {
    "js": (ROOT / "sdk-js" / "templates" / "admission-policy", "plugin.js",
           lambda src, out: ["node", str(ROOT / "sdk-js" / "build.mjs"), "admission-policy", str(src / "plugin.js"), str(out)]),
    "py": (ROOT / "sdk-py" / "templates" / "admission-policy", "app.py",
           lambda src, out: ["python3", str(ROOT / "sdk-py" / "build.py"), "admission-policy", str(src), str(out)]),
}


@pytest.mark.parametrize("lang", ["js", "py"])
def test_sdk_template_copied_built_reloaded_and_answering(components, tmp_path, lang):
    template, _, command = TEMPLATES[lang]
    # Copied where it survives between runs (copy2 keeps times), so an unchanged template is
    # not rebuilt: the build command leaves an up-to-date component alone.
    mine = COMPONENTS / "templates" / lang
    shutil.rmtree(mine, ignore_errors=True)
    shutil.copytree(template, mine, copy_function=shutil.copy2)
    built = COMPONENTS / f"template_{lang}.wasm"
    b = subprocess.run(command(mine, built), capture_output=True, text=True, timeout=1800)
    assert b.returncode == 0, b.stdout + b.stderr
    assert "admission-policy-plugin (berth:plugin@0.1.0" in plugin_check(built)
    # The registry starts on the Rust rules; a reload swaps the template in.
    serving = tmp_path / "policy.wasm"
    shutil.copy(components["admission-rules"], serving)
    dport = free_port()
    cfg = admission_config({"policy": {"path": str(serving), "config": {"tags": "*"}}}, [("**", ["policy"])])
    cfg["http"] = {"debug": {"addr": f"127.0.0.1:{dport}"}}
    srv = start_berth(tmp_path, config=cfg)
    try:
        m = image(srv.url, "app", "tmpl")
        assert put(srv.url, "app", "reserved", m).status_code == 201
        shutil.copy(built, serving)
        doc = yaml.safe_load(srv.config_path.read_text())
        doc["plugins"]["policy"]["config"] = {"deny-tags": "reserved, forbidden"}
        srv.config_path.write_text(yaml.safe_dump(doc))
        r = requests.post(f"http://127.0.0.1:{dport}/admin/reload", timeout=600)
        assert r.status_code == 200, r.text
        assert_denied(put(srv.url, "app", "forbidden", m), "tag forbidden is reserved", "anonymous")
        assert put(srv.url, "app", "v1", m).status_code == 201
    finally:
        srv.stop()
