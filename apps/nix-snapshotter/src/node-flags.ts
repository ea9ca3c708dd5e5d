/**
 * Node flags the daemon runs with wherever we launch it: the Nix package's wrapper
 * (`nix/package.nix`), the demo (`scripts/demo`), the manual install's wrapper
 * (`docs/install-manual.md`) and the test harness (`testing/daemon-process.ts`).
 * `node-flags.test.ts` fails when one of them drifts from this list.
 *
 * `--max-semi-space-size=4` (MiB): V8's young generation otherwise grows to 16 MiB semi-spaces
 * under a burst of calls, and the old generation it promotes into is never handed back. With
 * 4 MiB, the daemon's RSS after 10,000 snapshot cycles at concurrency 16 and a quiet minute was
 * 172 MiB (1.89x its 91 MiB at start) against 456 MiB (4.62x) without it, at the same cycle rate
 * (`bench/src/memory-return.ts`; figures in docs/snapshotter.md "Memory given back"). It cannot be
 * set from inside the process: V8 sizes the heap before our code runs.
 */
export const daemonNodeFlags: readonly string[] = ["--max-semi-space-size=4"];
