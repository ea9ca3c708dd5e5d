import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Debian's packaged Go sources (golang-github-containerd-containerd-dev and its dependencies). */
export const debianGoPath = "/usr/share/gocode";
const containerdSource = join(debianGoPath, "src/github.com/containerd/containerd");

/** Why Go test programs cannot be built here, or undefined when they can. */
export function goProgramsUnavailable(): string | undefined {
  if (!existsSync(join(containerdSource, "snapshots/storage"))) {
    return `${containerdSource} is missing (golang-github-containerd-containerd-dev)`;
  }
  if (!["/usr/bin/go", "/usr/local/go/bin/go"].some((path) => existsSync(path))) {
    return "no go compiler (golang-go)";
  }
  return undefined;
}

const builds = new Map<string, Promise<string>>();

/**
 * Builds a one-file Go program (`source`, a main.go) in GOPATH mode against Debian's packaged
 * containerd sources, once per source version, under the system's temporary directory; returns
 * the binary's path. Concurrent test files share it (built aside, then renamed into place).
 */
export function buildGoProgram(
  source: string,
  name = basename(join(source, "..")),
): Promise<string> {
  let building = builds.get(source);
  if (building === undefined) {
    building = (async () => {
      const code = await readFile(source);
      const hash = createHash("sha256").update(code).digest("hex").slice(0, 16);
      const directory = join(tmpdir(), "nix-snapshotter-go-fixtures");
      const binary = join(directory, `${name}-${hash}`);
      if (existsSync(binary)) return binary;
      await mkdir(directory, { recursive: true });
      const gopath = await mkdtemp(join(directory, "gopath-"));
      try {
        const packageDir = join(gopath, "src", name.replaceAll("-", ""));
        await mkdir(packageDir, { recursive: true });
        await copyFile(source, join(packageDir, "main.go"));
        const output = join(gopath, name);
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
    builds.set(source, building);
  }
  return building;
}
