import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildGoProgram, goProgramsUnavailable } from "./go-program.js";

const run = promisify(execFile);
const source = join(import.meta.dirname, "go-metastore", "main.go");

/** Why the Go fixture program cannot be built here, or undefined when it can. */
export const goMetastoreUnavailable = goProgramsUnavailable;

/**
 * Builds `go-metastore` (writes bolt files and Go-style roots with containerd's own MetaStore
 * code) and returns the binary's path.
 */
export function buildGoMetastore(): Promise<string> {
  return buildGoProgram(source, "go-metastore");
}

/** Runs the fixture program; rejects with its stderr on failure. */
export async function runGoMetastore(args: readonly string[]): Promise<string> {
  const binary = await buildGoMetastore();
  const { stdout } = await run(binary, [...args], { maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

/** One snapshot as the Go MetaStore reports it (`go-metastore dump`). */
export interface GoDumpRecord {
  key: string;
  id: string;
  kind: "Active" | "View" | "Committed";
  parent: string;
  labels: Record<string, string>;
  /** Nanoseconds since the epoch, in decimal. */
  created: string;
  updated: string;
  size: number;
  inodes: number;
}

/** Every snapshot of a Go root, read by containerd's own code. */
export async function dumpGoRoot(root: string): Promise<GoDumpRecord[]> {
  const stdout = await runGoMetastore(["dump", root]);
  return stdout
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as GoDumpRecord);
}
