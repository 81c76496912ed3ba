"""A cleanup (retention) policy for Berth: which tags of a repository to delete.

Build:  python3 sdk-py/build.py cleanup-policy <this dir> my-cleanup.wasm
Config: `keep`: how many of the newest tags to keep (default 10).
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import cleanup_policy as cp
from wit_world.imports import types

_keep = 10


class Lifecycle(exports.Lifecycle):
    def init(self, config):
        global _keep
        for key, value in config:
            if key != "keep" or not value.isdigit():
                raise Err(types.InitError_InvalidConfig((key, "only keep=<number> is known")))
            _keep = int(value)


class CleanupPolicy(exports.CleanupPolicy):
    def plan(self, snapshot):
        newest_first = sorted(snapshot.tags, key=lambda t: t.created_millis, reverse=True)
        return [cp.Deletion(t.name, f"keep-n={_keep}") for t in newest_first[_keep:]]
