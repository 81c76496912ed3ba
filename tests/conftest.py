import os

import pytest

from harness import start_berth, start_distribution

# BERTH_TEST_PEER=distribution runs the `berth` fixture against distribution 2.8.2 instead,
# to sanity-check the pure-spec tests (distribution lacks referrers, conditional writes, ...).
PEER = os.environ.get("BERTH_TEST_PEER", "berth")


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
