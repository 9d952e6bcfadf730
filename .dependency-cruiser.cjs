/**
 * The layering of src/ as a rule the build checks (test/architecture.test.ts runs dependency-cruiser
 * with this file over src/; `npx depcruise src` does the same by hand). docs/architecture.md explains
 * the layers and why each may import what it may.
 *
 * Every import counts, type-only ones included: a type import is still a dependency on that layer's
 * shape.
 */

/** What each part of src/ may import besides itself (regular expressions over paths from the repository root). */
const LAYERS = [
  // The byte level: framing and codecs. Imports nothing of ours.
  { name: 'wire', path: '^src/wire/', may: [] },
  // The command table, scoping and reply rewrites: pure functions over documents and bytes. Of the wire
  // layer only the byte helpers and the message shape (not the framer or compression).
  { name: 'policy', path: '^src/policy/', may: ['^src/wire/(bson-bytes|bson-edit|reply-status|errors|opmsg|constants)\\.ts$'] },
  // Pooled raw connections to the upstream, topology, cursor and transaction routing.
  { name: 'upstream', path: '^src/upstream/', may: ['^src/wire/'] },
  // One ClientConnection per socket (bytes only); the request's steps (session/steps) drive it through
  // wire, policy and upstream, and meter and log it.
  {
    name: 'session',
    path: '^src/session/',
    may: ['^src/(wire|policy|upstream|apps|config)/', '^src/observability/(logger|metrics)\\.ts$'],
  },
  // The control plane, beside the request path.
  { name: 'config', path: '^src/config/', may: [] },
  { name: 'apps', path: '^src/apps/', may: ['^src/config/', '^src/policy/', '^src/observability/logger\\.ts$'] },
  { name: 'indexes', path: '^src/indexes/', may: ['^src/(config|apps|policy)/', '^src/observability/logger\\.ts$'] },
  { name: 'observability', path: '^src/observability/', may: ['^src/(config|apps|indexes)/'] },
  { name: 'cluster', path: '^src/cluster/', may: ['^src/(config|observability)/', '^src/runtime\\.ts$'] },
  { name: 'cli', path: '^src/cli/', may: ['^src/(config|apps|indexes|observability|cluster)/', '^src/runtime\\.ts$'] },
  // A leaf anyone may import.
  { name: 'version', path: '^src/version\\.ts$', may: [] },
  // The composition root (src/runtime.ts) builds and wires every part: it may import anything, and only
  // the process entries (cli, cluster) import it. It has no entry here, so no rule limits it.
];

const SHARED = ['^src/version\\.ts$'];

/**
 * Where today's code breaks a rule in files this check cannot change yet. Each entry is to be removed
 * when its code is fixed (the test fails once an entry no longer occurs, so the list cannot go stale).
 */
const KNOWN_EXCEPTIONS = [];

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Import cycles make the load order matter and the layers meaningless.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'no-unresolvable',
      severity: 'error',
      comment: 'An import that resolves to nothing.',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
    {
      name: 'no-test-helpers',
      severity: 'error',
      comment: 'src/testing holds helpers for the tests and benchmarks (built with the rest); the product never imports them.',
      from: { path: '^src/', pathNot: '^src/testing/' },
      to: { path: '^src/testing/' },
    },
    ...LAYERS.map((layer) => ({
      name: `layer-${layer.name}`,
      severity: 'error',
      comment: `${layer.name} may import only ${[...layer.may, ...SHARED].join(', ') || 'its own files'} (docs/architecture.md)`,
      from: { path: layer.path },
      to: { path: '^src/', pathNot: [layer.path, ...layer.may, ...SHARED] },
    })),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    knownViolations: KNOWN_EXCEPTIONS,
  },
};
