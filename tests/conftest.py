import os
import time

import pytest

from harness import start_berth, start_distribution

# BERTH_TEST_PEER=distribution runs the `berth` fixture against distribution 2.8.2 instead,
# to sanity-check the pure-spec tests (distribution lacks referrers, conditional writes, ...).
PEER = os.environ.get("BERTH_TEST_PEER", "berth")

# Files that take longest (a minute or more of one worker on a busy two-core machine: moto
# listing thousands of keys, first compiles of the JavaScript and Python interpreters, the
# plugin template built from source). The suite runs them first (tests/run.sh passes
# `--no-loadscope-reorder` so that pytest-xdist keeps this order) so that the other worker works
# through the short files beside them instead of idling while one long file finishes last.
RUN_FIRST = ["test_gc_s3.py", "test_listing_pages.py", "test_sdk_template.py", "test_sdk_kinds.py",
             "test_admission.py", "test_gc.py", "test_events.py"]


def pytest_collection_modifyitems(session, config, items):
    """Long files first (`RUN_FIRST`), then the rest by their number of tests, most first (what
    xdist's own reordering does); tests keep their order within a file."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.path.name] = counts.get(item.path.name, 0) + 1

    def rank(item):
        name = item.path.name
        first = RUN_FIRST.index(name) if name in RUN_FIRST else len(RUN_FIRST)
        return (first, -counts[name], name)

    items.sort(key=rank)  # stable: a file's tests stay in order


@pytest.fixture
def berth(tmp_path):
    """A berth on filesystem storage in a fresh directory, stopped after the test."""
    if PEER == "distribution":
        server = start_distribution(tmp_path, tmp_path / "data")
    else:
        server = start_berth(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def berth_factory(tmp_path):
    """Start more berths (custom config, shared roots); all are stopped after the test."""
    started = []

    def make(**kwargs):
        kwargs.setdefault("workdir", tmp_path / f"srv{len(started)}")
        server = start_berth(**kwargs)
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def client():
    """A requests.Session with a default timeout on every request."""
    from ocihelpers import Client

    with Client() as c:
        yield c


# Where the workers' time went, file by file: when each file's last test finished (seconds
# from the start) and on which worker, printed at the end of a run with several workers, so
# that a CI log shows which files make the tail that `RUN_FIRST` is there to shorten.
_files: dict[str, list] = {}
_started = None


def pytest_sessionstart(session):
    global _started
    _started = time.monotonic()


# BERTH_TAIL_FILE: a file created once every file but one has finished, i.e. once a worker has
# nothing left to do; tests/run.sh starts the other suites then instead of letting that worker's
# core idle through the suite's last file.
_tests_left: dict[str, int] = {}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    if not _tests_left:
        for nodeid in ids:
            name = nodeid.split("::", 1)[0]
            _tests_left[name] = _tests_left.get(name, 0) + 1


def pytest_runtest_logreport(report):
    node = getattr(report, "node", None)
    if node is None or _started is None:
        return
    name = report.nodeid.split("::", 1)[0]
    entry = _files.setdefault(name, [node.gateway.id, 0.0, 0.0])
    entry[1] += report.duration
    entry[2] = time.monotonic() - _started
    if report.when == "teardown" and name in _tests_left:
        _tests_left[name] -= 1
        tail = os.environ.get("BERTH_TAIL_FILE")
        if tail and sum(1 for n in _tests_left.values() if n > 0) <= 1 and not os.path.exists(tail):
            open(tail, "w").close()


def pytest_terminal_summary(terminalreporter):
    if not _files:
        return
    last = sorted(_files.items(), key=lambda kv: kv[1][2])[-10:]
    terminalreporter.section("the last files to finish")
    for name, (worker, spent, done) in last:
        terminalreporter.write_line(f"{done:7.1f}s  {worker}  {spent:6.1f}s in its tests  {name}")
