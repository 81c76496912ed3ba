"""An auth policy for Berth: who is the caller, and which requested scopes do they get?

Build:  python3 sdk-py/build.py auth-policy <this dir> my-auth.wasm
Config: `users`: `name=password` pairs, comma-separated (an example only: keep real passwords
hashed, in a granted file); `pull-anonymous`: `true` lets anyone pull.
The host narrows whatever is granted to what was requested.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import auth_policy as ap
from wit_world.imports import types

_users = {}
_pull_anonymous = False


class Lifecycle(exports.Lifecycle):
    def init(self, config):
        global _users, _pull_anonymous
        for key, value in config:
            if key == "users":
                _users = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            elif key == "pull-anonymous":
                _pull_anonymous = value == "true"
            else:
                raise Err(types.InitError_InvalidConfig((key, "unknown key")))


class AuthPolicy(exports.AuthPolicy):
    def authorize(self, credentials, requested, request):
        if isinstance(credentials, ap.Credentials_Basic):
            c = credentials.value
            if _users.get(c.username) == c.password:
                # A known user gets everything they asked for.
                return ap.Decision(ap.Identity(c.username, []), list(requested), 60)
            return ap.Decision(None, [], 0)
        granted = []
        if _pull_anonymous:
            granted = [ap.Scope(s.kind, s.name, ["pull"]) for s in requested
                       if s.kind == "repository" and "pull" in s.actions]
        return ap.Decision(None, granted, 60)
