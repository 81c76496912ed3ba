"""admission-rules: what may be pushed, as a Berth admission-policy plugin in Python.

Config (every key optional; an absent key checks nothing):
- maxlayerbytes: the largest layer (and declared blob upload) in bytes;
- maximagebytes: the largest image: manifest + config + layers, in bytes;
- mediatypes: manifest media types allowed, comma-separated;
- artifacttypes: artifact types allowed (a manifest's artifactType, else its config's media
  type), comma-separated;
- annotations: annotation keys every manifest must carry, comma-separated
  (e.g. org.opencontainers.image.source);
- tags: tag name patterns a pushed tag must match one of, comma-separated; `*` matches any run
  of characters (e.g. `v*,latest`).

The Rust port (plugins/admission-rules) answers every write with the same verdict and message.
"""

import wit_world
from wit_world import exports
from wit_world.exports import admission_policy as ap
from wit_world.imports import types
from componentize_py_types import Err

_rules = {}


def _list(v):
    return [x.strip() for x in v.split(",") if x.strip()]


def _int(key, v):
    try:
        n = int(v.strip())
        if n < 0:
            raise ValueError
        return n
    except ValueError:
        raise Err(types.InitError_InvalidConfig((key, "must be a whole number of bytes")))


def star_match(pattern, name):
    """`*` matches any run of characters; everything else matches itself."""
    p = n = 0
    star = None
    while n < len(name):
        if p < len(pattern) and pattern[p] == "*":
            star = (p, n)
            p += 1
        elif p < len(pattern) and pattern[p] == name[n]:
            p += 1
            n += 1
        elif star is not None:
            p = star[0] + 1
            n = star[1] + 1
            star = (star[0], star[1] + 1)
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _deny(message):
    return ap.Verdict_Deny(message)


def check_put(put):
    r = _rules
    m = put.manifest
    if "mediatypes" in r and m.media_type not in r["mediatypes"]:
        return _deny(f"media type {m.media_type} is not allowed (allowed: {', '.join(r['mediatypes'])})")
    if "artifacttypes" in r and m.artifact_type is not None and m.artifact_type not in r["artifacttypes"]:
        return _deny(f"artifact type {m.artifact_type} is not allowed")
    if "tags" in r and put.tag is not None and not any(star_match(p, put.tag) for p in r["tags"]):
        return _deny(f"tag {put.tag} does not match any allowed pattern ({', '.join(r['tags'])})")
    if "annotations" in r:
        have = {k for k, _ in m.annotations}
        for key in r["annotations"]:
            if key not in have:
                return _deny(f"missing required annotation {key}")
    if "maxlayerbytes" in r:
        for layer in m.layers:
            if layer.size > r["maxlayerbytes"]:
                return _deny(f"layer {layer.digest} is {layer.size} bytes; the limit is {r['maxlayerbytes']}")
    if "maximagebytes" in r and m.config is not None:
        total = m.size + m.config.size + sum(layer.size for layer in m.layers)
        if total > r["maximagebytes"]:
            return _deny(f"image is {total} bytes; the limit is {r['maximagebytes']}")
    return ap.Verdict_Allow()


class Lifecycle(exports.Lifecycle):
    def init(self, config):
        global _rules
        rules = {}
        for key, value in config:
            if key in ("maxlayerbytes", "maximagebytes"):
                rules[key] = _int(key, value)
            elif key in ("mediatypes", "artifacttypes", "annotations", "tags"):
                rules[key] = _list(value)
            else:
                raise Err(types.InitError_InvalidConfig((key, "unknown key")))
        _rules = rules


class AdmissionPolicy(exports.AdmissionPolicy):
    def check(self, write, identity, request):
        if isinstance(write, ap.Write_ManifestPut):
            return check_put(write.value)
        if isinstance(write, ap.Write_UploadStart):
            limit = _rules.get("maxlayerbytes")
            if limit is not None and write.value.size > limit:
                return _deny(f"blob of {write.value.size} bytes exceeds the layer limit of {limit}")
        return ap.Verdict_Allow()
