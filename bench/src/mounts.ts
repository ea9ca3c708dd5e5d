/**
 * Mounts latency of the snapshotter for a container on top of a nix layer of N store paths
 * (N = 100 and 10,000), in bind and hardlink modes, next to the same call on a plain overlay
 * chain (mount mode none) measured in the same run. No mounts are made: this measures the
 * snapshotter's own work per Mounts call (database, flattening, option building).
 *
 *     pnpm --filter @nix-snapshotter/bench bench:mounts
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  createSnapshotter,
  type MountMode,
  nixLayerLabel,
  nixStorePathLabelPrefix,
  type Snapshotter,
} from "@nix-snapshotter/snapshotter";
import { FakeNixStore } from "@nix-snapshotter/snapshotter/testing";

const iterations = 200;

async function setup(
  directory: string,
  mountMode: MountMode,
  paths: readonly string[],
  nix: FakeNixStore,
): Promise<Snapshotter> {
  const snapshotter = await createSnapshotter({
    root: join(directory, `root-${mountMode}-${paths.length}`),
    mountMode,
    nixStore: nix,
  });
  const labels: Record<string, string> = { [nixLayerLabel]: "true" };
  paths.forEach((path, index) => {
    labels[`${nixStorePathLabelPrefix}${index}`] = path;
  });
  await snapshotter.prepare("base-key", "");
  await snapshotter.commit("base", "base-key");
  await snapshotter.prepare("nix-key", "base", { labels: mountMode === "none" ? {} : labels });
  await snapshotter.commit("nix", "nix-key");
  await snapshotter.prepare("container", "nix");
  return snapshotter;
}

async function measure(
  snapshotter: Snapshotter,
): Promise<{ p50: number; mean: number; mounts: number }> {
  const samples: number[] = [];
  let mounts = 0;
  for (let index = 0; index < iterations; index++) {
    const start = performance.now();
    mounts = (await snapshotter.mounts("container")).length;
    samples.push(performance.now() - start);
  }
  samples.sort((a, b) => a - b);
  const mean = samples.reduce((sum, value) => sum + value, 0) / samples.length;
  return { p50: samples[Math.floor(samples.length / 2)]!, mean, mounts };
}

async function main(): Promise<void> {
  const directory = await mkdtemp(join(tmpdir(), "snapshotter-bench-"));
  try {
    const nix = new FakeNixStore({ storeDir: join(directory, "store") });
    await mkdir(nix.storeDir);
    console.log(`Mounts of a container on a nix layer, ${iterations} calls each (ms)`);
    console.log("paths  mode      mounts  p50      mean     baseline p50 (plain overlay)  ratio");
    // `--json`: the same figures as one JSON line at the end (read by bench/ at the root).
    const figures: { figure: string; ours: number; baseline: number; unit: "ms" }[] = [];
    for (const count of [100, 10_000]) {
      const paths: string[] = [];
      for (let index = 0; index < count; index++) {
        const path = nix.path(`bench-${index}`, `bench-seed-${count}-${index}`);
        await mkdir(path);
        nix.valid.add(path);
        paths.push(path);
      }
      const baseline = await setup(directory, "none", paths, nix);
      const base = await measure(baseline);
      await baseline.close();
      for (const mode of ["bind", "hardlink"] as const) {
        const snapshotter = await setup(directory, mode, paths, nix);
        const result = await measure(snapshotter);
        await snapshotter.close();
        figures.push({
          figure: `Mounts p50, ${count} paths, ${mode}`,
          ours: result.p50,
          baseline: base.p50,
          unit: "ms",
        });
        console.log(
          `${String(count).padEnd(6)} ${mode.padEnd(9)} ${String(result.mounts).padEnd(7)} ${result.p50.toFixed(3).padEnd(8)} ${result.mean.toFixed(3).padEnd(8)} ${base.p50.toFixed(3).padEnd(29)} ${(result.p50 / base.p50).toFixed(2)}x`,
        );
      }
    }
    if (process.argv.includes("--json")) console.log(JSON.stringify({ figures }));
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

await main();
