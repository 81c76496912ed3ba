// admission-immutable-tags: tags that, once pushed, cannot be moved or deleted — a Berth
// admission-policy plugin in JavaScript.
//
// Config:
//   "protect.<repository glob>": tag patterns, comma-separated. `*` matches any run of
//       characters; the word `semver` matches a semantic version with an optional `v`
//       (v1.2.3, 1.2.3-rc.1+build.5). The glob is Berth's: `*` within a path segment, `**`
//       across segments (`prod/**`, `*`, `library/alpine`).
//   "may": subjects (verified identities) that may still move or delete protected tags,
//       comma-separated, e.g. a release bot.
//   "maygroups": groups whose members may too, comma-separated (the groups the auth policy
//       named for the identity, e.g. auth-acl's `groups`).
//
// Pushing the same manifest to a protected tag again is allowed (it moves nothing).

import { log } from 'berth:plugin/host@0.1.0';

const SEMVER = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;

let rules = []; // [{ glob, patterns: [string] }]
let may = new Set();
let mayGroups = new Set();

function list(v) {
  return v.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

// `*` matches any run of characters; everything else matches itself.
export function starMatch(pattern, name) {
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

// Berth's repository glob: `*` within one segment, `**` as a whole segment spans any number
// (a trailing `/**` needs at least one).
export function globMatch(glob, name) {
  const g = glob.split('/'), s = name.split('/');
  const go = (i, j) => {
    if (i === g.length) return j === s.length;
    if (g[i] === '**') {
      if (i + 1 < g.length && go(i + 1, j)) return true;
      for (let k = j + 1; k <= s.length; k++) if (go(i + 1, k)) return true;
      return false;
    }
    return j < s.length && starMatch(g[i], s[j]) && go(i + 1, j + 1);
  };
  return go(0, 0);
}

function protectedTag(repository, tag) {
  for (const r of rules) {
    if (!globMatch(r.glob, repository)) continue;
    for (const p of r.patterns) {
      if (p === 'semver' ? SEMVER.test(tag) : starMatch(p, tag)) return true;
    }
  }
  return false;
}

export const lifecycle = {
  init(config) {
    const next = [];
    let nextMay = new Set();
    let nextGroups = new Set();
    for (const [key, value] of config) {
      if (key.startsWith('protect.')) {
        const glob = key.slice('protect.'.length);
        const patterns = list(value);
        if (glob.length === 0 || patterns.length === 0) {
          throw { tag: 'invalid-config', val: [key, 'needs a repository glob and at least one tag pattern'] };
        }
        next.push({ glob, patterns });
      } else if (key === 'may') {
        nextMay = new Set(list(value));
      } else if (key === 'maygroups') {
        nextGroups = new Set(list(value));
      } else {
        throw { tag: 'invalid-config', val: [key, 'unknown key (use protect.<glob>, may or maygroups)'] };
      }
    }
    rules = next;
    may = nextMay;
    mayGroups = nextGroups;
    log('info', `immutable tags: ${rules.length} rule(s), ${may.size} identit(ies) and ${mayGroups.size} group(s) exempt`);
  },
};

export const admissionPolicy = {
  check(write, identity, _request) {
    if (identity && (may.has(identity.subject) || identity.groups.some((g) => mayGroups.has(g)))) {
      return { tag: 'allow' };
    }
    if (write.tag === 'manifest-put') {
      const w = write.val;
      if (w.tag != null && w.tagCurrent != null && w.tagCurrent !== w.manifest.digest
          && protectedTag(w.repository, w.tag)) {
        return { tag: 'deny', val: `tag ${w.tag} of ${w.repository} is immutable (it points at ${w.tagCurrent}); push a new tag instead` };
      }
    } else if (write.tag === 'manifest-delete') {
      const w = write.val;
      const hit = w.tags.find((t) => protectedTag(w.repository, t));
      if (hit !== undefined) {
        return { tag: 'deny', val: `tag ${hit} of ${w.repository} is immutable and cannot be deleted` };
      }
    }
    return { tag: 'allow' };
  },
};
