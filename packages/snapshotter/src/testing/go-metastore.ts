import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Debian's packaged Go sources (golang-github-containerd-containerd-dev and its dependencies). */
export const debianGoPath = "/usr/share/gocode";
const containerdStorage = join(
  debianGoPath,
  "src/github.com/containerd/containerd/snapshots/storage",
);
const source = join(import.meta.dirname, "go-metastore", "main.go");

/** Why the Go fixture program cannot be built here, or undefined when it can. */
export function goMetastoreUnavailable(): string | undefined {
  if (!existsSync(containerdStorage))
    return `${containerdStorage} is missing (golang-github-containerd-containerd-dev)`;
  if (!["/usr/bin/go", "/usr/local/go/bin/go"].some((path) => existsSync(path))) {
    return "no go compiler (golang-go)";
  }
  return undefined;
}

let building: Promise<string> | undefined;

/**
 * Builds `go-metastore` (GOPATH mode, against Debian's containerd and bbolt sources) once per
 * source version, in a directory under the system's temporary directory, and returns the
 * binary's path. Concurrent test files share the result (built elsewhere, renamed into place).
 */
export function buildGoMetastore(): Promise<string> {
  building ??= (async () => {
    const code = await readFile(source);
    const hash = createHash("sha256").update(code).digest("hex").slice(0, 16);
    const directory = join(tmpdir(), "nix-snapshotter-go-fixtures");
    const binary = join(directory, `go-metastore-${hash}`);
    if (existsSync(binary)) return binary;
    await mkdir(directory, { recursive: true });
    const gopath = await mkdtemp(join(directory, "gopath-"));
    try {
      const packageDir = join(gopath, "src", "gometastore");
      await mkdir(packageDir, { recursive: true });
      await copyFile(source, join(packageDir, "main.go"));
      const output = join(gopath, "go-metastore");
      await run("go", ["build", "-o", output, "."], {
        cwd: packageDir,
        env: {
          ...process.env,
          GO111MODULE: "off",
          GOPATH: `${gopath}:${debianGoPath}`,
          GOCACHE: join(directory, "cache"),
          GOFLAGS: "",
          CGO_ENABLED: "0",
        },
        maxBuffer: 16 * 1024 * 1024,
      });
      await rename(output, binary);
      return binary;
    } finally {
      await rm(gopath, { recursive: true, force: true });
    }
  })();
  return building;
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
