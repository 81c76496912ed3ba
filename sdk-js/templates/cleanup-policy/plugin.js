// A cleanup (retention) policy for Berth: which tags of a repository to delete.
//
// Build:  node sdk-js/build.mjs cleanup-policy <this file> my-cleanup.wasm
// Config: `keep`: how many of the newest tags to keep (default 10).
let keep = 10;

export const lifecycle = {
  init(config) {
    for (const [key, value] of config) {
      if (key !== 'keep' || !/^\d+$/.test(value)) {
        throw { tag: 'invalid-config', val: [key, 'only keep=<number> is known'] };
      }
      keep = Number(value);
    }
  },
};

export const cleanupPolicy = {
  plan(snapshot) {
    // u64 fields (createdMillis, size) arrive as BigInt.
    const newestFirst = [...snapshot.tags].sort((a, b) => (a.createdMillis < b.createdMillis ? 1 : -1));
    return newestFirst.slice(keep).map((t) => ({ tag: t.name, reason: `keep-n=${keep}` }));
  },
};
