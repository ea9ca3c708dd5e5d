// Benchmark: buildImage for synthetic closures of 100, 1,000 and 10,000 store paths, against
// `tar | gzip` of the same mountpoint tree created in a temporary directory, in the same run.
// Run with `pnpm --filter @nix-snapshotter/bench bench:image` (after `pnpm build`).
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

const sizes = [100, 1_000, 10_000];
const runs = 5;

function syntheticStorePath(index: number): string {
  const digest = createHash("sha256").update(`synthetic-${index}`).digest();
  let hash = "";
  for (let position = 0; position < 32; position++)
    hash += NIX_BASE32_ALPHABET[digest[position]! % 32];
  return `/nix/store/${hash}-synthetic-package-${index}`;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function measure(count: number) {
  const storePaths = Array.from({ length: count }, (_, index) => syntheticStorePath(index));
  const nodes: Record<string, MemoryNode> = {};
  for (const path of storePaths) nodes[path] = { type: "directory" };
  const fileSystem = createMemoryFileSystem(nodes);
  const options = { closure: storePaths, fileSystem, architecture: "amd64", os: "linux" } as const;

  await buildImage(options); // warm-up
  const ourTimes: number[] = [];
  let layerBytes = 0;
  let manifestBytes = 0;
  let archiveBytes = 0;
  for (let run = 0; run < runs; run++) {
    const start = performance.now();
    const image = await buildImage(options);
    const archive = writeImageArchive(image, { names: ["bench:1"] });
    ourTimes.push(performance.now() - start);
    layerBytes = image.layer.size;
    manifestBytes = image.manifestDescriptor.size;
    archiveBytes = archive.byteLength;
  }

  const directory = await mkdtemp(join(tmpdir(), "image-builder-bench-"));
  try {
    for (const path of storePaths) await mkdir(join(directory, path), { recursive: true });
    const baselineTimes: number[] = [];
    let baselineBytes = 0;
    const script =
      'tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$1" -cf - nix | gzip -n -6';
    for (let run = 0; run < runs; run++) {
      const start = performance.now();
      const output = execFileSync("/bin/sh", ["-c", script, "sh", directory], {
        maxBuffer: 1 << 30,
      });
      baselineTimes.push(performance.now() - start);
      baselineBytes = output.byteLength;
    }
    return {
      count,
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
for (const count of sizes) rows.push(await measure(count));

console.log(
  `buildImage + writeImageArchive (in memory) vs tar | gzip -6 of the same mountpoint tree on disk`,
);
console.log(`median of ${runs} runs each, Node ${process.version}, ${process.arch}`);
console.log("");
console.log(
  [
    "store paths",
    "ours ms",
    "tar|gzip ms",
    "time ratio",
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
      row.ourMs.toFixed(1),
      row.baselineMs.toFixed(1),
      (row.ourMs / row.baselineMs).toFixed(2),
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
    { figure: `image, ${row.count} paths`, ours: row.ourMs, baseline: row.baselineMs, unit: "ms" },
    {
      figure: `layer size, ${row.count} paths`,
      ours: row.layerBytes,
      baseline: row.baselineBytes,
      unit: "bytes",
    },
  ]);
  console.log(JSON.stringify({ figures }));
}
