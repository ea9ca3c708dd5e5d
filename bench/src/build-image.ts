// Benchmark: buildImage + writeImageArchive for synthetic closures of 100, 1,000 and 10,000 store
// paths, against `tar | gzip -6` of the same mountpoint tree on disk, in the same run.
// Ours and the baseline alternate run by run (which one goes first alternates too), so that a
// burst of load on a shared machine falls on both; the figures are the medians of each side.
// Run with `pnpm --filter @nix-snapshotter/bench bench:image` (after `pnpm build`).
// BENCH_IMAGE_RUNS: pairs per size (default 31 at 100 paths, 21 at 1,000, 15 at 10,000).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import {
  buildImage,
  createMemoryFileSystem,
  type MemoryNode,
  writeImageArchive,
} from "@nix-snapshotter/image-builder";
import { NIX_BASE32_ALPHABET } from "@nix-snapshotter/nix-store";
import { median } from "./harness.js";

const sizes = [
  { count: 100, runs: 31 },
  { count: 1_000, runs: 21 },
  { count: 10_000, runs: 15 },
];
const runsOverride = Number(process.env.BENCH_IMAGE_RUNS ?? "");

const baselineScript =
  'tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf - nix | gzip -n -6';

function syntheticStorePath(index: number): string {
  const digest = createHash("sha256").update(`synthetic-${index}`).digest();
  let hash = "";
  for (let position = 0; position < 32; position++)
    hash += NIX_BASE32_ALPHABET[digest[position]! % 32];
  return `/nix/store/${hash}-synthetic-package-${index}`;
}

async function measure(count: number, runs: number) {
  const storePaths = Array.from({ length: count }, (_, index) => syntheticStorePath(index));
  const nodes: Record<string, MemoryNode> = {};
  for (const path of storePaths) nodes[path] = { type: "directory" };
  const fileSystem = createMemoryFileSystem(nodes);
  const options = { closure: storePaths, fileSystem, architecture: "amd64", os: "linux" } as const;

  const directory = await mkdtemp(join(tmpdir(), "image-builder-bench-"));
  try {
    for (const path of storePaths) await mkdir(join(directory, path), { recursive: true });
    let layerBytes = 0;
    let manifestBytes = 0;
    let archiveBytes = 0;
    let baselineBytes = 0;
    const ours = async () => {
      const start = performance.now();
      const image = await buildImage(options);
      const archive = writeImageArchive(image, { names: ["bench:1"] });
      const elapsed = performance.now() - start;
      layerBytes = image.layer.size;
      manifestBytes = image.manifestDescriptor.size;
      archiveBytes = archive.byteLength;
      return elapsed;
    };
    const baseline = () => {
      const start = performance.now();
      const output = execFileSync("/bin/sh", ["-c", baselineScript, "sh", directory], {
        maxBuffer: 1 << 30,
      });
      const elapsed = performance.now() - start;
      baselineBytes = output.byteLength;
      return elapsed;
    };
    // Warm-up of both: code compiled, the tree in the page cache.
    await ours();
    baseline();
    const ourTimes: number[] = [];
    const baselineTimes: number[] = [];
    let wins = 0;
    for (let run = 0; run < runs; run++) {
      let ourTime: number;
      let baselineTime: number;
      if (run % 2 === 0) {
        ourTime = await ours();
        baselineTime = baseline();
      } else {
        baselineTime = baseline();
        ourTime = await ours();
      }
      ourTimes.push(ourTime);
      baselineTimes.push(baselineTime);
      if (ourTime < baselineTime) wins++;
    }
    return {
      count,
      runs,
      wins,
      ourMs: median(ourTimes),
      baselineMs: median(baselineTimes),
      layerBytes,
      baselineBytes,
      manifestBytes,
      archiveBytes,
    };
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

const rows = [];
for (const { count, runs } of sizes) {
  rows.push(
    await measure(
      count,
      Number.isSafeInteger(runsOverride) && runsOverride > 0 ? runsOverride : runs,
    ),
  );
}

console.log(
  "buildImage + writeImageArchive (in memory) vs tar | gzip -6 of the same mountpoint tree on disk",
);
console.log(`medians of alternating runs, Node ${process.version}, ${process.arch}`);
console.log("");
console.log(
  [
    "store paths",
    "runs",
    "ours ms",
    "tar|gzip ms",
    "time ratio",
    "ours faster",
    "layer bytes",
    "tar|gzip bytes",
    "size ratio",
    "manifest bytes",
    "archive bytes",
  ].join("\t"),
);
for (const row of rows) {
  console.log(
    [
      row.count,
      row.runs,
      row.ourMs.toFixed(1),
      row.baselineMs.toFixed(1),
      (row.ourMs / row.baselineMs).toFixed(2),
      `${row.wins}/${row.runs}`,
      row.layerBytes,
      row.baselineBytes,
      (row.layerBytes / row.baselineBytes).toFixed(2),
      row.manifestBytes,
      row.archiveBytes,
    ].join("\t"),
  );
}
console.log("");
console.log(
  "ratio < 1: ours is faster / smaller. Baseline time excludes creating the tree on disk.",
);
// `--json`: the same figures as one JSON line (read by bench/ at the root).
if (process.argv.includes("--json")) {
  const figures = rows.flatMap((row) => [
    {
      figure: `image, ${row.count} paths`,
      ours: row.ourMs,
      baseline: row.baselineMs,
      unit: "ms",
      note: `median of ${row.runs} alternating pairs; ours faster in ${row.wins} of ${row.runs}`,
    },
    {
      figure: `layer size, ${row.count} paths`,
      ours: row.layerBytes,
      baseline: row.baselineBytes,
      unit: "bytes",
    },
  ]);
  console.log(JSON.stringify({ figures }));
}
