// An admission policy for Berth: may this write land?
//
// Build:  node sdk-js/build.mjs admission-policy <this file> my-policy.wasm
// Config: `deny-tags`: tag names this policy refuses to let anyone push, comma-separated.
//
// `write` is a variant: { tag: 'manifest-put' | 'manifest-delete' | 'upload-start', val }.
// Record fields are camelCase (tagCurrent, mediaType, artifactType); an absent option is
// undefined. Answer { tag: 'allow' } or { tag: 'deny', val: 'message for the client' }.
import { log } from 'berth:plugin/host@0.1.0';

let denied = new Set();

export const lifecycle = {
  init(config) {
    for (const [key, value] of config) {
      if (key !== 'deny-tags') throw { tag: 'invalid-config', val: [key, 'unknown key'] };
      denied = new Set(value.split(',').map((t) => t.trim()).filter(Boolean));
    }
    log('info', `template admission policy: denying ${[...denied].join(', ')}`);
  },
};

export const admissionPolicy = {
  check(write, identity, _request) {
    if (write.tag === 'manifest-put' && denied.has(write.val.tag)) {
      const who = identity ? identity.subject : 'anonymous';
      return { tag: 'deny', val: `tag ${write.val.tag} is reserved (asked by ${who})` };
    }
    return { tag: 'allow' };
  },
};
