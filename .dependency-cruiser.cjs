/**
 * The dependency rules of docs/DESIGN.md ("Dependency rules"), checked on every `npm test`
 * (test/check-deps.sh). A rule that fails names the import that breaks it; fix the import, not the rule.
 * Tests (test/) and benchmarks (bench/) may import anything and are not checked.
 */
module.exports = {
  forbidden: [
    {
      name: 'api-imports-nothing-of-ours',
      comment: 'api/ is the contract both sides share: it may import only api/ (and npm packages).',
      severity: 'error',
      from: { path: '^api/' },
      to: { path: '^(client|shared|server|launcher|deploy|test|bench)/' },
    },
    {
      name: 'client-imports-only-api',
      comment: 'client/ (the HTTPS client of the REST API) is used by the daemon and the launcher alike: only api/.',
      severity: 'error',
      from: { path: '^client/' },
      to: { path: '^(shared|server|launcher|deploy|test|bench)/' },
    },
    {
      name: 'shared-imports-only-api',
      comment: 'shared/ holds small I/O helpers both sides run (atomic files, /proc): only api/.',
      severity: 'error',
      from: { path: '^shared/' },
      to: { path: '^(client|server|launcher|deploy|test|bench)/' },
    },
    {
      name: 'core-is-pure',
      comment: 'server/core/ is pure logic (no I/O): it may import only api/ and itself.',
      severity: 'error',
      from: { path: '^server/core/' },
      to: { path: '^(client|shared|launcher|deploy|test|bench)/|^server/(?!core/)' },
    },
    {
      name: 'core-does-no-io',
      comment: 'server/core/ does no I/O: no file system, process or network modules (node:net is allowed for its pure isIP).',
      severity: 'error',
      from: { path: '^server/core/' },
      to: { dependencyTypes: ['core'], path: '^(node:)?(fs|fs/promises|child_process|dgram|http|https|http2|tls|dns|os|cluster|worker_threads)$' },
    },
    {
      name: 'server-never-imports-launcher',
      comment: 'The daemon never depends on the operator side (launcher/, deploy/).',
      severity: 'error',
      from: { path: '^server/' },
      to: { path: '^(launcher|deploy|test|bench)/' },
    },
    {
      name: 'cluster-below-http',
      comment: 'The HTTP layer (server/http/) serves the cluster service; the cluster side never imports HTTP code.',
      severity: 'error',
      from: { path: '^server/(cluster|supervisor|engines|firewall|core)/' },
      to: { path: '^server/http/' },
    },
    {
      name: 'cluster-runtime-loads-lazily',
      comment:
        'A daemon without a stored plan does not load the cluster runtime (docs/DESIGN.md, "The lazy cluster ' +
        'side"): the HTTP layer, observability and the daemon wiring reach server/cluster/ only by types or ' +
        'import() — except the light start checks. test/api/lazy-cluster.test.ts checks the loaded modules.',
      severity: 'error',
      from: { path: '^server/(http|observability)/|^server/(daemon|cli|cluster-daemon)\\.ts$' },
      to: { path: '^server/cluster/', pathNot: '^server/cluster/(start-checks|run-as-user)\\.ts$', dependencyTypesNot: ['type-only', 'dynamic-import'] },
    },
    {
      name: 'launcher-uses-the-daemon-through-the-api',
      comment:
        'launcher/ talks to dispatchers through api/ and client/. From server/ it may import only the pure ' +
        'core (server/core/) and the engine profiles (server/engines/loader.ts, package data the offline ' +
        'Planner and `dispatch local` read).',
      severity: 'error',
      from: { path: '^launcher/' },
      to: { path: '^server/', pathNot: '^server/core/|^server/engines/(loader|types|debian)\\.ts$' },
    },
    {
      name: 'deploy-uses-the-daemon-through-the-api',
      comment: 'deploy/ installs dispatchers over SSH; like the launcher it may use only api/, client/, shared/ and the pure core.',
      severity: 'error',
      from: { path: '^deploy/' },
      to: { path: '^(server|launcher)/', pathNot: '^server/core/' },
    },
    {
      name: 'no-cycles',
      comment: 'No file may (indirectly) import itself: cycles hide the order things are built in.',
      severity: 'error',
      from: { path: '^(api|client|shared|server|launcher|deploy)/' },
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'Every import resolves to a file or an installed package.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
