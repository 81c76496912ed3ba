// An auth policy for Berth: who is the caller, and which requested scopes do they get?
//
// Build:  node sdk-js/build.mjs auth-policy <this file> my-auth.wasm
// Config: `users`: `name=password` pairs, comma-separated (an example only: keep real
// passwords hashed, in a granted file); `pull-anonymous`: `true` lets anyone pull.
// The host narrows whatever is granted to what was requested.
let users = new Map();
let pullAnonymous = false;

export const lifecycle = {
  init(config) {
    for (const [key, value] of config) {
      if (key === 'users') {
        users = new Map(value.split(',').filter((p) => p.includes('=')).map((p) => {
          const i = p.indexOf('=');
          return [p.slice(0, i), p.slice(i + 1)];
        }));
      } else if (key === 'pull-anonymous') {
        pullAnonymous = value === 'true';
      } else {
        throw { tag: 'invalid-config', val: [key, 'unknown key'] };
      }
    }
  },
};

export const authPolicy = {
  authorize(credentials, requested, _request) {
    if (credentials.tag === 'basic') {
      const { username, password } = credentials.val;
      if (users.get(username) === password) {
        return { identity: { subject: username, groups: [] }, granted: requested, cacheTtlSeconds: 60 };
      }
      return { identity: undefined, granted: [], cacheTtlSeconds: 0 };
    }
    const granted = pullAnonymous
      ? requested.filter((s) => s.kind === 'repository' && s.actions.includes('pull'))
          .map((s) => ({ kind: s.kind, name: s.name, actions: ['pull'] }))
      : [];
    return { identity: undefined, granted, cacheTtlSeconds: 60 };
  },
};
