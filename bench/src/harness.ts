/**
 * Pieces shared by the benchmarks of this folder: images, timing. The daemon process is the app's
 * own test harness, `startDaemonProcess` of `nix-snapshotter/testing`.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { hostPathEntries, testImageArchive } from "@nix-snapshotter/oci/testing";

/** One figure of the report: our number and the baseline measured in the same run. */
export interface Figure {
  /** Which benchmark it belongs to (a section of docs/benchmarks.md). */
  section: string;
  figure: string;
  ours: number;
  baseline: number;
  unit: "ms" | "bytes" | "cycles/s";
  /** What "ours" and "baseline" are, when the section's heading does not say it. */
  note?: string;
}

/** A figure that could not be measured in this run, with the reason. */
export interface Missing {
  section: string;
  figure: string;
  reason: string;
}

export const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error("median of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * The baseline image: the same closure as an ordinary layered image (one gzip layer holding
 * every store path's files), as an OCI archive named `name`.
 */
export async function layeredArchive(
  name: string,
  paths: readonly string[],
  entrypoint: readonly string[],
): Promise<{ archive: Buffer; layerBytes: number }> {
  const { archive, manifest } = testImageArchive({
    names: [name],
    layers: [await hostPathEntries(paths)],
    config: { Entrypoint: [...entrypoint] },
  });
  const layer = manifest.layers[0];
  if (!layer) throw new Error("the layered image has no layer");
  return { archive, layerBytes: layer.size };
}

/** A fresh temporary directory, removed by the returned function. */
export async function workDirectory(
  prefix: string,
): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  await mkdir(path, { recursive: true });
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/**
 * A closure-info store path for `storePaths` (a directory with a `store-paths` file listing them,
 * added with `nix-store --add`), held by the fixtures' GC root `root`: what `buildImage`'s
 * closure form names. It has no references, so the caller's roots must keep the paths alive.
 * `directory` is a scratch directory for the file.
 */
export async function addClosureInfo(
  fixtures: { root(name: string, paths: readonly string[]): Promise<unknown> },
  directory: string,
  root: string,
  storePaths: readonly string[],
): Promise<string> {
  const infoDirectory = join(directory, root);
  await mkdir(infoDirectory);
  await writeFile(join(infoDirectory, "store-paths"), `${[...storePaths].join("\n")}\n`);
  const { stdout } = await promisify(execFile)("nix-store", ["--add", infoDirectory]);
  const closureInfo = stdout.trim();
  await fixtures.root(root, [closureInfo]);
  return closureInfo;
}

/** A loopback TCP port free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address !== null
          ? resolve(address.port)
          : reject(new Error("no port")),
      );
    });
  });
}
