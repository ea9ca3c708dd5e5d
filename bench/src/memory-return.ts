/**
 * Does the daemon give memory back? Runs the built daemon, drives `BENCH_MEMORY_CYCLES` (default
 * 10,000) snapshot cycles (Prepare + Mounts + Commit + View + Stat + Remove + Remove) at
 * concurrency `BENCH_MEMORY_CONCURRENCY` (16) straight at its socket, then leaves it alone for
 * `BENCH_MEMORY_QUIET_SECONDS` (60), sampling its resident set size from /proc. One run per
 * variant (environment and Node flags of the daemon process), each on a fresh daemon:
 *
 *     node bench/dist/memory-return.js            # every variant
 *     BENCH_MEMORY_VARIANTS=default,tuned node bench/dist/memory-return.js
 *
 * Prints one line per sample and a table: RSS when ready, at the end of the run, its peak, and
 * after the quiet period, with the ratio after-quiet / ready (issue 14 asks for at most 2).
 */
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { createRemoteSnapshotter, type Snapshotter } from "@nix-snapshotter/snapshotter";
import { startDaemonProcess } from "nix-snapshotter/testing";

interface Variant {
  name: string;
  what: string;
  env?: NodeJS.ProcessEnv;
  nodeArgs?: string[];
}

const variants: Variant[] = [
  {
    name: "untuned",
    what: "no setting (glibc's default arenas: 8 per core)",
    env: { MALLOC_ARENA_MAX: "" },
  },
  { name: "arenas-2", what: "MALLOC_ARENA_MAX=2", env: { MALLOC_ARENA_MAX: "2" } },
  {
    name: "semi-space-4",
    what: "--max-semi-space-size=4 (MiB)",
    env: { MALLOC_ARENA_MAX: undefined },
    nodeArgs: ["--max-semi-space-size=4"],
    // What the daemon ships with (apps/nix-snapshotter/src/node-flags.ts).
  },
  {
    name: "old-space-128",
    what: "--max-old-space-size=128 (MiB)",
    env: { MALLOC_ARENA_MAX: undefined },
    nodeArgs: ["--max-old-space-size=128"],
  },
  {
    name: "optimize-for-size",
    what: "--optimize-for-size",
    env: { MALLOC_ARENA_MAX: undefined },
    nodeArgs: ["--optimize-for-size"],
  },
];

const MiB = 1024 * 1024;
const numberFrom = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback);
  if (!Number.isSafeInteger(value) || value <= 0)
    throw new Error(`${name}: not a positive integer`);
  return value;
};
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** VmRSS and VmHWM (peak) of a process, in bytes. */
async function memory(pid: number): Promise<{ rss: number; peak: number; anon: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: field("VmRSS"), peak: field("VmHWM"), anon: field("RssAnon") };
}

async function cycle(snapshotter: Snapshotter, id: string): Promise<void> {
  const key = `active-${id}`;
  const name = `committed-${id}`;
  const view = `view-${id}`;
  await snapshotter.prepare(key, "", { labels: { "containerd.io/snapshot/bench": id } });
  const mounts = await snapshotter.mounts(key);
  if (mounts.length === 0) throw new Error("Mounts returned nothing");
  await snapshotter.commit(name, key);
  await snapshotter.view(view, name);
  if ((await snapshotter.stat(name)).name !== name)
    throw new Error("Stat named the wrong snapshot");
  await snapshotter.remove(view);
  await snapshotter.remove(name);
}

async function run(variant: Variant, cycles: number, concurrency: number, quietSeconds: number) {
  const daemon = await startDaemonProcess({
    mountMode: "hardlink",
    logLevel: "warn",
    ...(variant.env ? { env: variant.env } : {}),
    // No flag unless the variant names one (the harness would add the daemon's shipped flags).
    nodeArgs: variant.nodeArgs ?? [],
  });
  const pid = daemon.child.pid!;
  const sessionManager = new Http2SessionManager("http://localhost", undefined, {
    createConnection: () => connect(daemon.address),
  });
  const snapshotter = createRemoteSnapshotter(
    createGrpcTransport({ baseUrl: "http://localhost", sessionManager }),
  );
  try {
    await delay(2000);
    const ready = await memory(pid);
    console.log(`${variant.name}: ready, RSS ${(ready.rss / MiB).toFixed(1)} MiB`);
    let next = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async (_, worker) => {
        for (let id = next++; id < cycles; id = next++) await cycle(snapshotter, `${worker}-${id}`);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const end = await memory(pid);
    console.log(
      `${variant.name}: ${cycles} cycles in ${seconds.toFixed(1)} s (${(cycles / seconds).toFixed(0)}/s), RSS ${(end.rss / MiB).toFixed(1)} MiB, peak ${(end.peak / MiB).toFixed(1)} MiB`,
    );
    sessionManager.abort();
    let quiet = end;
    for (let second = 10; second <= quietSeconds; second += 10) {
      await delay(10_000);
      quiet = await memory(pid);
      console.log(`${variant.name}: quiet ${second} s, RSS ${(quiet.rss / MiB).toFixed(1)} MiB`);
    }
    return { variant, ready, end, quiet, rate: cycles / seconds };
  } finally {
    sessionManager.abort();
    await daemon.cleanup();
  }
}

async function main() {
  const cycles = numberFrom("BENCH_MEMORY_CYCLES", 10_000);
  const concurrency = numberFrom("BENCH_MEMORY_CONCURRENCY", 16);
  const quietSeconds = numberFrom("BENCH_MEMORY_QUIET_SECONDS", 60);
  const wanted = process.env.BENCH_MEMORY_VARIANTS?.split(",");
  const selected = variants.filter(
    (variant) => wanted === undefined || wanted.includes(variant.name),
  );
  if (selected.length === 0)
    throw new Error(`no variant among ${variants.map((variant) => variant.name)}`);
  const results = [];
  for (const variant of selected)
    results.push(await run(variant, cycles, concurrency, quietSeconds));
  const mib = (bytes: number) => (bytes / MiB).toFixed(1);
  console.log(
    `\n${cycles} cycles at concurrency ${concurrency}, then ${quietSeconds} s quiet; RSS in MiB\n`,
  );
  console.log(
    "| variant | ready | end of run | peak | after quiet | after quiet / ready | cycles/s |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const { variant, ready, end, quiet, rate } of results) {
    console.log(
      `| ${variant.what} | ${mib(ready.rss)} | ${mib(end.rss)} | ${mib(end.peak)} | ${mib(quiet.rss)} | ${(quiet.rss / ready.rss).toFixed(2)} | ${rate.toFixed(0)} |`,
    );
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
