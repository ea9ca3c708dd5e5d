/** Pieces shared by the benchmarks of this folder: the daemon process, images, timing. */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TEST_GC_ROOTS_PARENT } from "@nix-snapshotter/nix-store/testing";
import { hostPathEntries, testImageArchive } from "@nix-snapshotter/oci/testing";
import type { NixMountMode } from "@nix-snapshotter/snapshotter";

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

const delay = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error("median of nothing");
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export interface Daemon {
  address: string;
  dir: string;
  child: ChildProcess;
  log(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Runs the built daemon (apps/nix-snapshotter/dist/main.js) with a private config, root, socket
 * and GC roots directory, and waits until its socket accepts connections.
 */
export async function startDaemon(
  mountMode: NixMountMode,
  options: { env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {},
): Promise<Daemon> {
  const entry = join(repositoryRoot, "apps", "nix-snapshotter", "dist", "main.js");
  if (!existsSync(entry)) throw new Error(`${entry} missing: run pnpm build`);
  const dir = await mkdtemp(join(tmpdir(), `bench-daemon-${mountMode}-`));
  const address = join(dir, "nix-snapshotter.sock");
  const gcRootsDir = join(
    TEST_GC_ROOTS_PARENT,
    `bench-${mountMode}-${process.pid}-${randomBytes(4).toString("hex")}`,
  );
  const configPath = join(dir, "config.toml");
  await writeFile(
    configPath,
    [
      `address = ${JSON.stringify(address)}`,
      `root = ${JSON.stringify(join(dir, "root"))}`,
      `mount_mode = ${JSON.stringify(mountMode)}`,
      `gc_roots_dir = ${JSON.stringify(gcRootsDir)}`,
      "[image_service]",
      "enable = false",
      "",
    ].join("\n"),
  );
  const logPath = join(dir, "daemon.log");
  const logFd = openSync(logPath, "a");
  const child = spawn(
    process.execPath,
    [...(options.nodeArgs ?? []), entry, "-c", configPath, "-l", "warn"],
    {
      env: { ...process.env, NIX_SNAPSHOTTER_LOG_FORMAT: "json", ...options.env },
      stdio: ["ignore", logFd, logFd],
    },
  );
  closeSync(logFd);
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  const log = () => readFile(logPath, "utf8").catch(() => "");
  const stop = async () => {
    if (!exited) child.kill("SIGTERM");
    await Promise.race([exit, delay(20_000)]);
    if (!exited) child.kill("SIGKILL");
    await exit;
    await rm(gcRootsDir, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) {
      const text = await log();
      await stop();
      throw new Error(`daemon exited before it was ready:\n${text}`);
    }
    const ready = await new Promise<boolean>((resolve) => {
      const socket = connect(address);
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ready) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`daemon did not listen on ${address}`);
    }
    await delay(50);
  }
  return { address, dir, child, log, stop };
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
