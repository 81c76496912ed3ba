// admission-rules in JavaScript: the port of plugins/admission-rules-py/app.py (and of the
// Rust plugins/admission-rules), the same config and the same verdict and message for every
// write, so the three languages are compared on one policy. See the Python module for the keys.

let rules = {};

function list(v) {
  return v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

// `*` matches any run of characters; everything else matches itself.
function starMatch(pattern, name) {
  let p = 0, n = 0, star = -1, mark = 0;
  while (n < name.length) {
    if (p < pattern.length && pattern[p] === '*') { star = p++; mark = n; }
    else if (p < pattern.length && pattern[p] === name[n]) { p++; n++; }
    else if (star >= 0) { p = star + 1; n = ++mark; }
    else return false;
  }
  while (p < pattern.length && pattern[p] === '*') p++;
  return p === pattern.length;
}

const deny = (val) => ({ tag: 'deny', val });

function checkPut(put) {
  const r = rules, m = put.manifest;
  if (r.mediatypes && !r.mediatypes.includes(m.mediaType)) {
    return deny(`media type ${m.mediaType} is not allowed (allowed: ${r.mediatypes.join(', ')})`);
  }
  if (r.artifacttypes && m.artifactType != null && !r.artifacttypes.includes(m.artifactType)) {
    return deny(`artifact type ${m.artifactType} is not allowed`);
  }
  if (r.tags && put.tag != null && !r.tags.some((p) => starMatch(p, put.tag))) {
    return deny(`tag ${put.tag} does not match any allowed pattern (${r.tags.join(', ')})`);
  }
  if (r.annotations) {
    for (const key of r.annotations) {
      if (!m.annotations.some(([k]) => k === key)) return deny(`missing required annotation ${key}`);
    }
  }
  // u64 sizes arrive as BigInt.
  if (r.maxlayerbytes !== undefined) {
    const big = m.layers.find((l) => l.size > r.maxlayerbytes);
    if (big) return deny(`layer ${big.digest} is ${big.size} bytes; the limit is ${r.maxlayerbytes}`);
  }
  if (r.maximagebytes !== undefined && m.config != null) {
    const total = m.layers.reduce((sum, l) => sum + l.size, m.size + m.config.size);
    if (total > r.maximagebytes) return deny(`image is ${total} bytes; the limit is ${r.maximagebytes}`);
  }
  return { tag: 'allow' };
}

export const lifecycle = {
  init(config) {
    const next = {};
    for (const [key, value] of config) {
      if (key === 'maxlayerbytes' || key === 'maximagebytes') {
        if (!/^\s*\d+\s*$/.test(value)) throw { tag: 'invalid-config', val: [key, 'must be a whole number of bytes'] };
        next[key] = BigInt(value.trim());
      } else if (['mediatypes', 'artifacttypes', 'annotations', 'tags'].includes(key)) {
        next[key] = list(value);
      } else {
        throw { tag: 'invalid-config', val: [key, 'unknown key'] };
      }
    }
    rules = next;
  },
};

export const admissionPolicy = {
  check(write, _identity, _request) {
    if (write.tag === 'manifest-put') return checkPut(write.val);
    if (write.tag === 'upload-start' && rules.maxlayerbytes !== undefined && write.val.size > rules.maxlayerbytes) {
      return deny(`blob of ${write.val.size} bytes exceeds the layer limit of ${rules.maxlayerbytes}`);
    }
    return { tag: 'allow' };
  },
};
