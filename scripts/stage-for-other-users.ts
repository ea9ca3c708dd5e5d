import { constants, existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  stat,
  symlink,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import type { OtherUsersStage } from "../apps/nix-snapshotter/src/testing/other-users.js";

// vitest global setup of the e2e project. Some end-to-end tests run our programs as other users:
// Nix build users run the workspace's nix2container inside builds, the rootless suite's user runs
// scripts/rootless/start.sh and the daemon. The checkout may sit where they cannot go (a clone
// under root's home, a `mktemp -d`), so as root this copies what they run into a fresh
// directory under the temporary directory, readable and traversable by everyone:
//   <stage>/bin/node                  the Node running the tests
//   <stage>/repo/apps/<app>/...       the built apps (package.json, dist) and, laid out as in the
//   <stage>/repo/packages/...         checkout, the workspace packages and node_modules/.pnpm
//   <stage>/repo/node_modules/.pnpm/  entries their production dependencies resolve to
//   <stage>/repo/scripts/rootless/    start.sh and nsenter.sh
// Tests read the paths with inject("otherUsers") (apps/nix-snapshotter/src/testing/other-users.ts).
// The stage is removed when the run ends; one left by a run killed with -9 is removed by the next
// run once its process is gone (the directory name carries the pid).

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const prefix = "nix-snapshotter-stage-";
const apps = ["apps/nix-snapshotter", "apps/nix2container"];
const scripts = ["scripts/rootless/start.sh", "scripts/rootless/nsenter.sh"];

/** Whether a process with this pid exists (in this pid namespace). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes stages whose run is gone (killed before its teardown). */
async function removeStaleStages(parent: string): Promise<void> {
  for (const name of await readdir(parent)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(/^(\d+)-/.exec(name.slice(prefix.length))?.[1]);
    if (!Number.isSafeInteger(pid) || pid <= 0 || alive(pid)) continue;
    await rm(join(parent, name), { recursive: true, force: true });
  }
}

/** Every ancestor of `path` must let others search it, or the stage is no better than the checkout. */
async function assertTraversable(path: string): Promise<void> {
  for (let dir = path; ; dir = dirname(dir)) {
    const { mode } = await stat(dir);
    if ((mode & 0o001) === 0) {
      throw new Error(
        `stage-for-other-users: other users cannot enter ${dir} (mode ${(mode & 0o7777).toString(8)}): ` +
          "set TMPDIR to a directory they can reach",
      );
    }
    if (dirname(dir) === dir) return;
  }
}

/** Copies a file with modes others can read (and execute, if its owner can). */
async function copyReadable(source: string, target: string): Promise<void> {
  const { mode } = await stat(source);
  await mkdir(dirname(target), { recursive: true, mode: 0o755 });
  await copyFile(source, target, constants.COPYFILE_FICLONE);
  await chmod(target, mode & 0o100 ? 0o755 : 0o644);
}

/** Copies a directory tree (symbolic links as links), skipping names in `skip` at its top. */
async function copyTree(source: string, target: string, skip: ReadonlySet<string>): Promise<void> {
  await mkdir(target, { recursive: true, mode: 0o755 });
  await chmod(target, 0o755);
  for (const entry of await readdir(source, { withFileTypes: true })) {
    if (skip.has(entry.name)) continue;
    const from = join(source, entry.name);
    const to = join(target, entry.name);
    if (entry.isSymbolicLink()) await symlink(await readlink(from), to);
    else if (entry.isDirectory()) await copyTree(from, to, new Set());
    else if (entry.isFile()) await copyReadable(from, to);
  }
}

interface Manifest {
  files?: string[];
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/**
 * Copies the package at `real` (inside the checkout) into the stage at the same relative place,
 * then, as Node would resolve them from there, the links to its production dependencies and
 * those packages in turn.
 */
async function stagePackage(real: string, stageRepo: string, seen: Set<string>): Promise<void> {
  if (seen.has(real)) return;
  seen.add(real);
  const rel = relative(repo, real);
  if (rel.startsWith("..") || rel === "") {
    throw new Error(`stage-for-other-users: ${real} is outside the checkout ${repo}`);
  }
  const manifest = JSON.parse(await readFile(join(real, "package.json"), "utf8")) as Manifest;
  const target = join(stageRepo, rel);
  if (rel.split(sep).includes("node_modules")) {
    // A package from the registry: its published files, without nested node_modules.
    await copyTree(real, target, new Set(["node_modules"]));
  } else {
    // A workspace package: package.json and what it publishes.
    await copyReadable(join(real, "package.json"), join(target, "package.json"));
    for (const entry of manifest.files ?? []) {
      const from = join(real, entry);
      if (!existsSync(from)) continue;
      if ((await stat(from)).isDirectory()) await copyTree(from, join(target, entry), new Set());
      else await copyReadable(from, join(target, entry));
    }
  }
  const names = new Set([
    ...Object.keys(manifest.dependencies ?? {}),
    ...Object.keys(manifest.optionalDependencies ?? {}),
    ...Object.keys(manifest.peerDependencies ?? {}),
  ]);
  for (const name of names) {
    // Node's lookup: node_modules/<name> in this directory, then in each parent.
    let link: string | undefined;
    for (let dir = real; dir.startsWith(repo); dir = dirname(dir)) {
      const candidate = join(dir, "node_modules", name);
      if (existsSync(candidate)) {
        link = candidate;
        break;
      }
      if (dir === repo) break;
    }
    // A missing optional or peer dependency: Node would not find it either.
    if (link === undefined) continue;
    const resolved = await realpath(link);
    if ((await lstat(link)).isSymbolicLink()) {
      const linkTarget = join(stageRepo, relative(repo, link));
      if (!existsSync(linkTarget)) {
        await mkdir(dirname(linkTarget), { recursive: true, mode: 0o755 });
        await symlink(
          relative(dirname(linkTarget), join(stageRepo, relative(repo, resolved))),
          linkTarget,
        );
      }
    }
    await stagePackage(resolved, stageRepo, seen);
  }
}

/** Makes every directory from the stage down readable and searchable by others. */
async function openDirectories(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) await openDirectories(join(dir, entry.name));
  }
}

export async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  // Only root can run programs as other users; otherwise the tests that would are skipped.
  if (process.getuid?.() !== 0) return undefined;
  const parent = tmpdir();
  await removeStaleStages(parent);
  const root = await mkdtemp(join(parent, `${prefix}${process.pid}-`));
  const remove = () => rm(root, { recursive: true, force: true });
  try {
    await chmod(root, 0o755);
    await assertTraversable(root);
    const node = join(root, "bin", "node");
    await copyReadable(await realpath(process.execPath), node);
    await chmod(node, 0o755);
    const stageRepo = join(root, "repo");
    const seen = new Set<string>();
    for (const app of apps) {
      if (existsSync(join(repo, app, "dist"))) await stagePackage(join(repo, app), stageRepo, seen);
    }
    for (const script of scripts) await copyReadable(join(repo, script), join(stageRepo, script));
    await openDirectories(root);
    project.provide("otherUsers", { root, node, repo: stageRepo } satisfies OtherUsersStage);
  } catch (error) {
    await remove();
    throw error;
  }
  return remove;
}
