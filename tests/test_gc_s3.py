"""Garbage collection beside pushes and mounts on S3 (moto): the race of `test_gc.py`, in a file
of its own because it is the suite's longest test (every request is a round trip to moto), so
that the workers (`--dist loadfile`) can run it beside the rest of `test_gc.py`."""

from __future__ import annotations

from harness import object_store_config
from test_gc import race


def test_gc_beside_pushes_and_mounts_loses_nothing_on_s3(tmp_path):
    # A bucket of its own (as every root gets); fewer and smaller than on the filesystem: every
    # request is an HTTP round trip to moto.
    race(tmp_path, {**object_store_config("s3", tmp_path / "data"), "redirect": {"disable": True}}, clients=3,
         images=5, gc_runs=3)
