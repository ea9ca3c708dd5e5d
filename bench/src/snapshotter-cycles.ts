/**
 * `node bench/dist/snapshotter-cycles.js`: the snapshotter library alone, in this process (no
 * gRPC, no daemon): cycles of Prepare + Mounts + Commit + View + Stat + Remove(view) +
 * Remove(committed) on plain snapshots, as the `proxy` benchmark drives them over the socket, at
 * concurrency 1 and 8. Prints, per run, cycles/s, the process's CPU time per cycle
 * (`process.cpuUsage`: user + system of every thread, the checkpointing thread and libuv's pool
 * included) and the main thread's busy time per cycle (event loop utilisation), with the load
 * average at the start and end of the run. Not part of `pnpm bench`.
 *
 * Environment: BENCH_SNAPSHOTTER_CYCLES (cycles per run, default 1000), BENCH_SNAPSHOTTER_ROUNDS
 * (default 2), BENCH_SNAPSHOTTER_MODE (mount mode, default `hardlink` as in the `proxy`
 * benchmark's daemon), BENCH_SNAPSHOTTER_MODULES (comma-separated paths of other builds of the
 * library's `dist/index.js`, each measured in alternation with this one: a before/after
 * comparison in one process), BENCH_SNAPSHOTTER_ROOT (directory for the temporary roots, default
 * the OS's temporary directory). `--json` prints one JSON line at the end. Profile with
 * `node --cpu-prof --cpu-prof-dir=<dir> bench/dist/snapshotter-cycles.js`.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import * as library from "@nix-snapshotter/snapshotter";

type Library = Pick<typeof library, "createSnapshotter">;
type Snapshotter = Awaited<ReturnType<Library["createSnapshotter"]>>;

interface Result {
  build: string;
  concurrency: number;
  cycles: number;
  cyclesPerSecond: number;
  /** User + system CPU of the whole process per cycle, ms. */
  cpuMsPerCycle: number;
  /** Main thread busy (event loop utilisation's active time) per cycle, ms. */
  busyMsPerCycle: number;
  loadStart: number;
  loadEnd: number;
}

async function cycle(snapshotter: Snapshotter, id: string): Promise<void> {
  const key = `active-${id}`;
  const name = `committed-${id}`;
  const view = `view-${id}`;
  await snapshotter.prepare(key, "");
  const mounts = await snapshotter.mounts(key);
  if (mounts.length === 0) throw new Error("Mounts returned nothing");
  await snapshotter.commit(name, key);
  await snapshotter.view(view, name);
  const info = await snapshotter.stat(name);
  if (info.name !== name) throw new Error("Stat named the wrong snapshot");
  await snapshotter.remove(view);
  await snapshotter.remove(name);
}

async function run(
  build: string,
  lib: Library,
  mountMode: string,
  concurrency: number,
  total: number,
  parent: string,
): Promise<Result> {
  const root = await mkdtemp(join(parent, "snapshotter-cycles-"));
  const snapshotter = await lib.createSnapshotter({
    root,
    mountMode: mountMode as NonNullable<library.SnapshotterOptions["mountMode"]>,
  });
  try {
    // Warm-up: statements prepared, the WAL's handle opened, code optimised.
    for (let index = 0; index < 20; index++) await cycle(snapshotter, `warm-${index}`);
    let next = 0;
    const loadStart = loadavg()[0]!;
    const cpuStart = process.cpuUsage();
    const eluStart = performance.eventLoopUtilization();
    const start = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < total) {
          const index = next++;
          await cycle(snapshotter, `c${concurrency}-${index}`);
        }
      }),
    );
    // Work a build defers past its answers (directory deletions after Remove) counts too:
    // Cleanup waits for it (and lists an empty snapshots directory).
    await snapshotter.cleanup();
    const elapsed = performance.now() - start;
    const elu = performance.eventLoopUtilization(eluStart);
    const cpu = process.cpuUsage(cpuStart);
    return {
      build,
      concurrency,
      cycles: total,
      cyclesPerSecond: (total * 1000) / elapsed,
      cpuMsPerCycle: (cpu.user + cpu.system) / 1000 / total,
      busyMsPerCycle: elu.active / total,
      loadStart,
      loadEnd: loadavg()[0]!,
    };
  } finally {
    await snapshotter.close();
    await rm(root, { recursive: true, force: true });
  }
}

function format(result: Result): string {
  return `${result.build}, concurrency ${result.concurrency}: ${result.cyclesPerSecond.toFixed(0)} cycles/s, CPU ${result.cpuMsPerCycle.toFixed(3)} ms/cycle, main thread busy ${result.busyMsPerCycle.toFixed(3)} ms/cycle (load ${result.loadStart.toFixed(1)} -> ${result.loadEnd.toFixed(1)})`;
}

async function main(): Promise<void> {
  const total = Number(process.env.BENCH_SNAPSHOTTER_CYCLES ?? 1000);
  const rounds = Number(process.env.BENCH_SNAPSHOTTER_ROUNDS ?? 2);
  const mountMode = process.env.BENCH_SNAPSHOTTER_MODE ?? "hardlink";
  const parent = process.env.BENCH_SNAPSHOTTER_ROOT ?? tmpdir();
  if (!Number.isInteger(total) || total < 1 || !Number.isInteger(rounds) || rounds < 1) {
    throw new Error(
      "BENCH_SNAPSHOTTER_CYCLES and BENCH_SNAPSHOTTER_ROUNDS must be positive integers",
    );
  }
  const builds: Array<[string, Library]> = [["this build", library]];
  for (const path of (process.env.BENCH_SNAPSHOTTER_MODULES ?? "").split(",").filter(Boolean)) {
    builds.push([path, (await import(pathToFileURL(resolve(path)).href)) as Library]);
  }
  const results: Result[] = [];
  for (const concurrency of [1, 8]) {
    for (let round = 0; round < rounds; round++) {
      // Alternate the order of the builds: the machine's load drifts.
      const order = round % 2 === 0 ? builds : [...builds].reverse();
      for (const [name, lib] of order) {
        const result = await run(name, lib, mountMode, concurrency, total, parent);
        results.push(result);
        process.stderr.write(`snapshotter cycles, round ${round + 1}: ${format(result)}\n`);
      }
    }
  }
  if (process.argv.includes("--json")) process.stdout.write(`${JSON.stringify({ results })}\n`);
  else for (const result of results) process.stdout.write(`${format(result)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
