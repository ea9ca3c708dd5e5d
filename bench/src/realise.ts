/**
 * Benchmark: GC roots + realise of N already-valid paths with @nix-snapshotter/nix-store (one batch) against
 * the per-path sequential `nix-store --realise --add-root` loop of the Go implementation, and the
 * same for substituting 200 paths from a local HTTP binary cache with 20 ms latency per request.
 * Both sides run in the same process, on the same paths, one after the other.
 *
 * Run (as root, after `pnpm build`): `pnpm --filter @nix-snapshotter/bench bench:realise`.
 * NIX_STORE_BENCH_SIZES=100,1000 limits the sizes; NIX_STORE_BENCH_SUBSTITUTE=0 skips the cache part.
 */
import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { cpus, loadavg, release } from "node:os";
import { basename, join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { createNixStore } from "@nix-snapshotter/nix-store";
import {
  createNixFixtures,
  nixE2eSkipReason,
  serveBinaryCache,
  startBinaryCache,
} from "@nix-snapshotter/nix-store/testing";

const exec = promisify(execFile);

async function baselineLoop(
  paths: readonly string[],
  linkDir: string,
  options: readonly string[],
): Promise<number> {
  await mkdir(linkDir, { recursive: true });
  const start = performance.now();
  for (const path of paths) {
    await exec("nix-store", [
      "--realise",
      "--add-root",
      join(linkDir, basename(path)),
      path,
      ...options,
    ]);
  }
  return performance.now() - start;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const oursRounds = 5;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const skip = nixE2eSkipReason(["nix-store", "nix"]);
  if (skip !== undefined) {
    console.error(`bench needs root and Nix: ${skip}`);
    process.exitCode = 1;
    return;
  }
  const sizes = (process.env.NIX_STORE_BENCH_SIZES ?? "100,1000,5000")
    .split(",")
    .map((value) => Number(value.trim()))
    .filter((value) => Number.isSafeInteger(value) && value > 0);
  const fixtures = await createNixFixtures({ label: "nix-store-bench" });
  const ourRoots = join(fixtures.rootsDir, "ours");
  const store = createNixStore({ gcRootsDir: ourRoots, nixOptions: { substituters: "" } });
  const version = await store.version();
  console.log(`machine: ${cpus()[0]?.model ?? "?"}, ${cpus().length} cores, Linux ${release()}`);
  console.log(
    `node ${process.version}, ${version.text}, load average ${loadavg()
      .map((value) => value.toFixed(1))
      .join(" ")}`,
  );
  console.log(`this package: median of ${oursRounds} rounds for valid paths; the loop: one pass`);
  console.log("");
  const rows: string[][] = [["case", "this package", "per-path loop", "ratio"]];
  // `--json`: the same figures as one JSON line at the end (read by bench/ at the root).
  const figures: { figure: string; ours: number; baseline: number; unit: "ms" }[] = [];
  try {
    for (const count of sizes) {
      const synthetic = await fixtures.syntheticClosure({
        count,
        name: `bench-valid-${count}`,
        closureInfo: false,
      });
      // Ours is short and the machine is shared: take the median of several rounds (roots removed
      // in between, so every round creates them again). The loop averages over N processes itself.
      const rounds: number[] = [];
      for (let round = 0; round < oursRounds; round += 1) {
        await store.removeRoots(`valid-${count}`);
        const start = performance.now();
        const result = await store.realise(synthetic.paths, {
          roots: { owner: `valid-${count}` },
        });
        rounds.push(performance.now() - start);
        if (result.paths.length !== count) throw new Error("realise returned the wrong paths");
      }
      const ours = median(rounds);
      const baseline = await baselineLoop(
        synthetic.paths,
        join(fixtures.rootsDir, `baseline-${count}`),
        ["--option", "substituters", ""],
      );
      figures.push({ figure: `roots + realise, ${count} valid paths`, ours, baseline, unit: "ms" });
      rows.push([
        `roots + realise, ${count} valid paths`,
        seconds(ours),
        seconds(baseline),
        `${(baseline / ours).toFixed(1)}x`,
      ]);
      console.log(rows.at(-1)!.join("  |  "));
      await store.removeRoots(`valid-${count}`);
      await rm(join(fixtures.rootsDir, `baseline-${count}`), { recursive: true, force: true });
      await synthetic.release();
      await fixtures.deletePaths(await store.queryValidPaths(synthetic.paths));
    }

    if (process.env.NIX_STORE_BENCH_SUBSTITUTE !== "0") {
      const count = 200;
      const latencyMs = 20;
      const synthetic = await fixtures.syntheticClosure({
        count,
        name: "bench-substitute",
        closureInfo: false,
      });
      const cache = await startBinaryCache({ paths: synthetic.paths, latencyMs });
      try {
        const cached = createNixStore({ gcRootsDir: ourRoots, nixOptions: cache.nixOptions });
        await cached.version();
        const evict = async () => {
          await synthetic.release();
          await cached.removeRoots("substitute");
          await rm(join(fixtures.rootsDir, "baseline-substitute"), {
            recursive: true,
            force: true,
          });
          await fixtures.deletePaths(await cached.queryValidPaths(synthetic.paths));
          if ((await cached.queryValidPaths(synthetic.paths)).length > 0) {
            throw new Error("could not evict the benchmark paths");
          }
        };
        await evict();
        const start = performance.now();
        const result = await cached.realise(synthetic.paths, { roots: { owner: "substitute" } });
        const ours = performance.now() - start;
        if (result.substituted.length !== count) {
          throw new Error(`expected ${count} substitutions, saw ${result.substituted.length}`);
        }
        const requestsOurs = cache.requests();
        await evict();
        // The same directory on a second port: Nix keys its narinfo disk cache by URL, so the loop
        // starts as cold as this package did.
        const second = await serveBinaryCache(cache.dir, latencyMs);
        let baseline: number;
        try {
          // Dependencies first, so that every process substitutes exactly one path.
          baseline = await baselineLoop(
            synthetic.paths,
            join(fixtures.rootsDir, "baseline-substitute"),
            Object.entries(second.nixOptions).flatMap(([name, value]) => ["--option", name, value]),
          );
        } finally {
          await second.close();
        }
        const requestsLoop = second.requests();
        if ((await cached.queryValidPaths(synthetic.paths)).length !== count) {
          throw new Error("the per-path loop did not substitute every path");
        }
        figures.push({
          figure: `substitute ${count} paths, ${latencyMs} ms per request`,
          ours,
          baseline,
          unit: "ms",
        });
        rows.push([
          `substitute ${count} paths, ${latencyMs} ms per request`,
          seconds(ours),
          seconds(baseline),
          `${(baseline / ours).toFixed(1)}x`,
        ]);
        console.log(rows.at(-1)!.join("  |  "));
        console.log(`  HTTP requests: this package ${requestsOurs}, per-path loop ${requestsLoop}`);
        await evict();
      } finally {
        await cache.close();
      }
    }
  } finally {
    await fixtures.cleanup();
  }
  console.log("");
  console.log(
    `load average at the end ${loadavg()
      .map((value) => value.toFixed(1))
      .join(" ")}`,
  );
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  for (const [index, row] of rows.entries()) {
    console.log(`| ${row.map((cell, column) => cell.padEnd(widths[column]!)).join(" | ")} |`);
    if (index === 0) console.log(`| ${widths.map((width) => "-".repeat(width)).join(" | ")} |`);
  }
  if (process.argv.includes("--json")) console.log(JSON.stringify({ figures }));
}

await main();
