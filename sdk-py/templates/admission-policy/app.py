"""An admission policy for Berth: may this write land?

Build:  python3 sdk-py/build.py admission-policy <this dir> my-policy.wasm
Config: `deny-tags`: tag names this policy refuses to let anyone push, comma-separated.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import admission_policy as ap
from wit_world.imports import host, types

_denied = set()


class Lifecycle(exports.Lifecycle):
    def init(self, config):
        global _denied
        for key, value in config:
            if key != "deny-tags":
                raise Err(types.InitError_InvalidConfig((key, "unknown key")))
            _denied = {t.strip() for t in value.split(",") if t.strip()}
        host.log(host.Level.INFO, f"template admission policy: denying {sorted(_denied)}")


class AdmissionPolicy(exports.AdmissionPolicy):
    def check(self, write, identity, request):
        # write is one of ap.Write_ManifestPut, ap.Write_ManifestDelete, ap.Write_UploadStart;
        # identity is None for an anonymous caller (or no auth configured).
        if isinstance(write, ap.Write_ManifestPut) and write.value.tag in _denied:
            who = identity.subject if identity else "anonymous"
            return ap.Verdict_Deny(f"tag {write.value.tag} is reserved (asked by {who})")
        return ap.Verdict_Allow()
