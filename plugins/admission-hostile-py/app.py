"""A hostile admission-policy plugin in Python, for the sandbox tests: config `mode` picks how
`check` misbehaves on a manifest push to a tag named `hostile` (every other write is allowed,
so the same instance can be seen to serve on):

- trap: raises (the guest traps);
- loop: never returns (the host's deadline interrupts it);
- memory: allocates without bound (the host's memory cap stops it).
"""

from wit_world import exports
from wit_world.exports import admission_policy as ap

_mode = "trap"


class Lifecycle(exports.Lifecycle):
    def init(self, config):
        global _mode
        _mode = dict(config).get("mode", "trap")


class AdmissionPolicy(exports.AdmissionPolicy):
    def check(self, write, identity, request):
        if isinstance(write, ap.Write_ManifestPut) and write.value.tag == "hostile":
            if _mode == "trap":
                raise RuntimeError("hostile plugin trapping on purpose")
            if _mode == "loop":
                n = 0
                while True:
                    n += 1
            if _mode == "memory":
                hoard = []
                while True:
                    hoard.append(bytearray(1 << 20))
        return ap.Verdict_Allow()
