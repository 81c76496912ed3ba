"""Cleanup policies (issue 10): `cleanup-policy` plugins chosen per repository glob, run by
`berth cleanup`, by `POST /admin/cleanup` and on a cadence in the server. GitLab's algorithm is
checked table-driven through the real `cleanup-gitlab` plugin; a hostile policy shows that a
wrong answer, a trap or a timeout deletes nothing in its repository."""

import json
import os
import subprocess
import time

import pytest
import requests
import yaml

from harness import BERTH_BIN, free_port, need_plugin, start_berth
from ocihelpers import build_manifest, image_config, make_image, push_blob, push_manifest, sha256, to_bytes

DAY = 86400
TAGS = "docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link"


def tag_image(url: str, repo: str, tags: list[str]) -> str:
    """One small image in `repo` under every tag in `tags`; returns its digest."""
    if not tags:
        return make_image(url, repo, None)
    dgst = make_image(url, repo, tags[0])
    body = requests.get(f"{url}/v2/{repo}/manifests/{dgst}",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10).content
    for t in tags[1:]:
        assert push_manifest(url, repo, t, body, "application/vnd.oci.image.manifest.v1+json").status_code == 201
    return dgst


def age(root, repo: str, tag: str, seconds_ago: float) -> None:
    """Make `repo:tag` look pushed `seconds_ago` (the link's modification time is the tag's
    push time on every driver)."""
    t = time.time() - seconds_ago
    os.utime(root / TAGS.format(repo=repo, tag=tag), (t, t))


def tags_of(url: str, repo: str) -> set[str]:
    r = requests.get(f"{url}/v2/{repo}/tags/list", timeout=10)
    return set(r.json().get("tags") or []) if r.status_code == 200 else set()


def cleanup_cli(config_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(BERTH_BIN), "cleanup", *args, str(config_path)],
                          capture_output=True, text=True, timeout=120)


# The GitLab table: (case, settings, {tag: days ago}, tags the policy must pick).
GITLAB_CASES = [
    ("latest-kept", {"name_regex": ".*"}, {"latest": 400, "v1": 400}, {"v1"}),
    ("no-regex-no-deletion", {"keep_n": "0"}, {"a": 400, "b": 400}, set()),
    ("keep-n-equal-times", {"name_regex": ".*", "keep_n": "2"}, {"a": 10, "b": 10, "c": 10, "d": 10}, {"a", "b"}),
    ("keep-n-newest", {"name_regex": ".*", "keep_n": "1"}, {"old": 30, "mid": 20, "new": 10}, {"old", "mid"}),
    ("keep-regex-wins", {"name_regex": ".*", "name_regex_keep": "release-.*"},
     {"release-1": 400, "dev-1": 400, "release": 400}, {"dev-1", "release"}),
    ("older-than-boundaries", {"name_regex": ".*", "older_than": "7d"},
     {"just-older": 7 + 1 / 24, "just-newer": 7 - 1 / 24, "new": 1}, {"just-older"}),
    ("keep-n-then-older-than", {"name_regex": ".*", "keep_n": "1", "older_than": "14d"},
     {"x": 30, "y": 10, "z": 2}, {"x"}),
    ("anchored-delete", {"name_regex": "v1"}, {"v1": 400, "v10": 400, "xv1": 400}, {"v1"}),
    ("anchored-keep", {"name_regex": ".*", "name_regex_keep": "1"}, {"1": 400, "10": 400, "21": 400}, {"10", "21"}),
    ("alternation-anchored", {"name_regex": "a|b"}, {"a": 400, "b": 400, "ab": 400}, {"a", "b"}),
    ("empty-repository", {"name_regex": ".*"}, {}, set()),
]


@pytest.fixture(scope="module")
def gitlab_table(tmp_path_factory):
    """One server holding one repository per case, and a config with one policy per case."""
    tmp = tmp_path_factory.mktemp("cleanup-table")
    plugin = need_plugin("cleanup-gitlab")
    debug = free_port()
    policies = [{"name": case, "plugin": "gitlab", "repositories": [f"case/{case}"], "settings": settings}
                for case, settings, _, _ in GITLAB_CASES]
    srv = start_berth(tmp / "srv", config={"plugins": {"gitlab": {"path": str(plugin)}},
                                            "cleanup": {"policies": policies},
                                            "http": {"debug": {"addr": f"127.0.0.1:{debug}"}}})
    for case, _, tags, _ in GITLAB_CASES:
        repo = f"case/{case}"
        tag_image(srv.url, repo, list(tags))
        for tag, days in tags.items():
            age(srv.root, repo, tag, days * DAY)
    yield srv, f"http://127.0.0.1:{debug}"
    srv.stop()


def test_gitlab_semantics_table_through_the_real_plugin(gitlab_table):
    srv, debug = gitlab_table
    r = requests.post(f"{debug}/admin/cleanup?dry-run=true", timeout=60)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is True and report["failed_repositories"] == 0, report
    picked = {o["repository"].removeprefix("case/"): {t["tag"] for t in o["tags"]} for o in report["outcomes"]}
    for case, _, tags, want in GITLAB_CASES:
        assert picked.get(case, set()) == want, (case, picked.get(case))
        assert tags_of(srv.url, f"case/{case}") == set(tags), f"{case}: a dry run deleted something"
    reasons = [t["reason"] for o in report["outcomes"] for t in o["tags"] if o["repository"] == "case/keep-n-newest"]
    assert reasons and all("keep_n=1" in r and "name_regex=.*" in r for r in reasons), reasons


def test_cli_deletes_what_the_policy_picks_and_the_running_server_sees_it(tmp_path):
    plugin = need_plugin("cleanup-gitlab")
    cfg = {"plugins": {"gitlab": {"path": str(plugin)}},
           "cleanup": {"policies": [{"name": "ci", "plugin": "gitlab", "repositories": ["ci/*"],
                                     "settings": {"name_regex": "build-.*", "keep_n": 1}}]}}
    srv = start_berth(tmp_path / "srv", config=cfg)
    try:
        for repo in ("ci/app", "ci/lib", "other/app"):
            tag_image(srv.url, repo, ["build-1", "build-2", "build-3", "stable"])
            for i, tag in enumerate(["build-1", "build-2", "build-3"]):
                age(srv.root, repo, tag, (10 - i) * DAY)
        # The server has the tag cached; the CLI deletes beside it.
        assert requests.get(f"{srv.url}/v2/ci/app/manifests/build-1", timeout=10).status_code == 200

        dry = cleanup_cli(srv.config_path, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "ci/app:build-1\twould delete" in dry.stdout and "ci/lib:build-2\twould delete" in dry.stdout, dry.stdout
        assert "would delete 4 tags in 2 repositories" in dry.stdout, dry.stdout
        assert tags_of(srv.url, "ci/app") == {"build-1", "build-2", "build-3", "stable"}

        only = cleanup_cli(srv.config_path, "--repo", "ci/lib")
        assert only.returncode == 0, only.stderr
        assert "deleted 2 tags in 1 repositories" in only.stdout, only.stdout
        assert tags_of(srv.url, "ci/lib") == {"build-3", "stable"}
        assert tags_of(srv.url, "ci/app") == {"build-1", "build-2", "build-3", "stable"}

        run = cleanup_cli(srv.config_path)
        assert run.returncode == 0, run.stderr
        assert "ci/app:build-1\tdeleted" in run.stdout and "ci/app:build-2\tdeleted" in run.stdout, run.stdout
        assert tags_of(srv.url, "ci/app") == {"build-3", "stable"}
        assert tags_of(srv.url, "other/app") == {"build-1", "build-2", "build-3", "stable"}, "outside the glob"
        # The running server stops serving the deleted tag within its cache's second.
        deadline = time.monotonic() + 5
        while requests.get(f"{srv.url}/v2/ci/app/manifests/build-1", timeout=10).status_code != 404:
            assert time.monotonic() < deadline, "the server kept serving a tag deleted beside it"
            time.sleep(0.1)
        # The kept tags still pull.
        assert requests.get(f"{srv.url}/v2/ci/app/manifests/stable", timeout=10).status_code == 200
    finally:
        srv.stop()


def test_hostile_policies_delete_nothing_in_their_repository(tmp_path):
    plugin = need_plugin("hostile-cleanup")
    modes = ["unknown-tag", "panic", "loop", "error", "twice"]
    policies = [{"name": m, "plugin": "hostile", "repositories": [f"h/{m}"], "settings": {"mode": m}} for m in modes]
    debug = free_port()
    srv = start_berth(tmp_path / "srv", config={
        "plugins": {"hostile": {"path": str(plugin), "deadlinems": 500}},
        "cleanup": {"policies": policies},
        "http": {"debug": {"addr": f"127.0.0.1:{debug}"}}})
    try:
        for m in modes:
            tag_image(srv.url, f"h/{m}", ["a", "b"])
        r = requests.post(f"http://127.0.0.1:{debug}/admin/cleanup", timeout=60)
        assert r.status_code == 200, r.text
        report = r.json()
        by_repo = {o["repository"]: o for o in report["outcomes"]}
        for m in ["unknown-tag", "panic", "loop", "error"]:
            assert tags_of(srv.url, f"h/{m}") == {"a", "b"}, f"{m}: something was deleted"
            assert by_repo[f"h/{m}"]["error"], by_repo[f"h/{m}"]
        assert "no-such-tag" in by_repo["h/unknown-tag"]["error"]
        assert "refusing as asked" in by_repo["h/error"]["error"]
        # Named twice, deleted once.
        assert tags_of(srv.url, "h/twice") == set()
        assert sorted(t["tag"] for t in by_repo["h/twice"]["tags"]) == ["a", "b"]
        assert report["failed_repositories"] == 4 and report["deleted"] == 2, report
        # The server kept serving through the trap and the timeout.
        assert requests.get(f"{srv.url}/v2/", timeout=10).status_code == 200
        metrics = requests.get(f"http://127.0.0.1:{debug}/metrics", timeout=10).text
        assert 'berth_cleanup_tags_total{policy="twice",result="deleted"} 2' in metrics, metrics
        assert 'berth_cleanup_tags_total{policy="loop",result="repository_failed"} 1' in metrics
        v = requests.get(f"http://127.0.0.1:{debug}/debug/vars", timeout=10).json()
        assert v["cleanup"]["deleted"] == 2 and v["cleanup"]["failed_repositories"] == 4, v["cleanup"]
    finally:
        srv.stop()


def test_admin_cleanup_parameters(tmp_path):
    plugin = need_plugin("cleanup-gitlab")
    debug = free_port()
    srv = start_berth(tmp_path / "srv", config={
        "plugins": {"gitlab": {"path": str(plugin)}},
        "cleanup": {"policies": [
            {"name": "on", "plugin": "gitlab", "settings": {"name_regex": "x.*"}},
            {"name": "off", "plugin": "gitlab", "enabled": False, "settings": {"name_regex": "y.*"}}]},
        "http": {"debug": {"addr": f"127.0.0.1:{debug}"}}})
    admin = f"http://127.0.0.1:{debug}/admin/cleanup"
    try:
        tag_image(srv.url, "a/b", ["x1", "y1", "z1"])
        assert requests.get(admin, timeout=10).status_code == 405
        assert requests.post(admin + "?policy=nope", timeout=10).status_code == 400
        assert requests.post(admin + "?bogus=1", timeout=10).status_code == 400
        # The public port has no admin operations.
        assert requests.post(f"{srv.url}/admin/cleanup", timeout=10).status_code == 404
        # A disabled policy runs only when named.
        r = requests.post(admin + "?dry-run=true", timeout=30).json()
        assert [t["tag"] for o in r["outcomes"] for t in o["tags"]] == ["x1"]
        r = requests.post(admin + "?policy=off&repo=a/*", timeout=30).json()
        assert r["deleted"] == 1 and tags_of(srv.url, "a/b") == {"x1", "z1"}
        r = requests.post(admin + "?repo=other/*", timeout=30).json()
        assert r["repositories"] == 0 and tags_of(srv.url, "a/b") == {"x1", "z1"}
    finally:
        srv.stop()


def test_policies_run_on_their_cadence_and_remember_the_last_run(tmp_path):
    plugin = need_plugin("cleanup-gitlab")
    cfg = {"plugins": {"gitlab": {"path": str(plugin)}},
           "cleanup": {"policies": [{"name": "often", "plugin": "gitlab", "cadence": "2s",
                                     "settings": {"name_regex": "tmp-.*"}}]}}
    srv = start_berth(tmp_path / "srv", config=cfg)
    try:
        tag_image(srv.url, "app", ["tmp-1", "tmp-2", "keep"])
        deadline = time.monotonic() + 20
        while tags_of(srv.url, "app") != {"keep"}:
            assert time.monotonic() < deadline, f"the cadence never ran: {tags_of(srv.url, 'app')}\n{srv.log()[-3000:]}"
            time.sleep(0.2)
        last = srv.root / "berth/cleanup/often/lastrun"
        assert last.is_file() and abs(int(last.read_text()) / 1000 - time.time()) < 30
        assert "cleanup run done" in srv.log()
    finally:
        srv.stop()


def test_read_only_registry_refuses_deletion_but_dry_runs(tmp_path):
    plugin = need_plugin("cleanup-gitlab")
    srv = start_berth(tmp_path / "srv")
    tag_image(srv.url, "app", ["old"])
    srv.stop()
    cfg = yaml.safe_load(srv.config_path.read_text())
    cfg.update({"plugins": {"gitlab": {"path": str(plugin)}},
                "cleanup": {"policies": [{"name": "p", "plugin": "gitlab", "settings": {"name_regex": ".*"}}]}})
    cfg["storage"]["maintenance"] = {"readonly": {"enabled": True}}
    path = tmp_path / "ro.yml"
    path.write_text(yaml.safe_dump(cfg))
    r = cleanup_cli(path)
    assert r.returncode == 2 and "read-only" in r.stderr, (r.stdout, r.stderr)
    r = cleanup_cli(path, "-d")
    assert r.returncode == 0 and "app:old\twould delete" in r.stdout, (r.stdout, r.stderr)
    assert (srv.root / TAGS.format(repo="app", tag="old")).is_file()


def test_config_check_names_a_policy_plugin_of_the_wrong_kind(tmp_path):
    cfg = {"storage": {"filesystem": {"rootdirectory": str(tmp_path / "d")}},
           "plugins": {"fs": {"path": str(need_plugin("storage-fs"))}},
           "cleanup": {"policies": [{"name": "p", "plugin": "fs"}]}}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([str(BERTH_BIN), "config", "check", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "cleanup-policy-plugin" in r.stderr, (r.stdout, r.stderr)
    cfg["cleanup"]["policies"][0]["plugin"] = "missing"
    path.write_text(yaml.safe_dump(cfg))
    r = cleanup_cli(path, "-d")
    assert r.returncode == 2 and "missing" in r.stderr, r.stderr
