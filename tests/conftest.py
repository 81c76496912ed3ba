import os

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
             "test_admission.py", "test_events.py"]


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
