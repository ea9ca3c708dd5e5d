import {
  chmod,
  copyFile,
  link,
  lstat,
  mkdir,
  readdir,
  readlink,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { dirname, join } from "node:path";

/** errno codes where a hard link is impossible and a copy is made instead. */
const copyInstead = new Set(["EXDEV", "EPERM", "EMLINK", "EACCES"]);

export interface LinkStats {
  linked: number;
  copied: number;
  directories: number;
  symlinks: number;
}

/**
 * Makes sure every component of `relative` below `root` is a real directory: the layer's
 * content is untrusted, so a symlink (or a file) where a directory is expected is removed and
 * replaced. Returns the absolute path.
 */
async function realDirectories(root: string, relative: string): Promise<string> {
  let current = root;
  for (const part of relative.split("/").filter((p) => p !== "")) {
    current = join(current, part);
    const stats = await lstat(current).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return undefined;
      throw error;
    });
    if (stats?.isDirectory()) continue;
    if (stats !== undefined) await rm(current, { recursive: true, force: true });
    // Another worker may create the same directory at the same time.
    await mkdir(current, { mode: 0o755 }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "EEXIST") throw error;
    });
  }
  return current;
}

/**
 * `realDirectories` below `root`, once per directory: every store path has the same parent (the
 * store directory), so it is checked once per layer, not once per path.
 */
function parentsUnder(root: string): (directory: string) => Promise<string> {
  const parents = new Map<string, Promise<string>>();
  return (directory) => {
    let parent = parents.get(directory);
    if (parent === undefined) {
      parent = realDirectories(root, directory);
      parents.set(directory, parent);
    }
    return parent;
  };
}

async function copyTree(source: string, destination: string, stats: LinkStats): Promise<void> {
  const info = await lstat(source);
  if (info.isDirectory()) {
    await mkdir(destination, { mode: 0o755 });
    for (const name of await readdir(source)) {
      await copyTree(join(source, name), join(destination, name), stats);
    }
    await chmod(destination, info.mode & 0o7777);
    await utimes(destination, info.atime, info.mtime);
    stats.directories++;
  } else if (info.isSymbolicLink()) {
    await symlink(await readlink(source), destination);
    stats.symlinks++;
  } else if (info.isFile()) {
    try {
      await link(source, destination);
      stats.linked++;
    } catch (error) {
      if (!copyInstead.has((error as NodeJS.ErrnoException).code ?? "")) throw error;
      await copyFile(source, destination);
      await chmod(destination, info.mode & 0o7777);
      await utimes(destination, info.atime, info.mtime);
      stats.copied++;
    }
  }
  // Sockets, FIFOs and devices do not occur in the Nix store; they are not reproduced.
}

/**
 * Puts each store path's tree into `root` at the same absolute path: directories recreated,
 * symlinks recreated (never followed), regular files hard-linked (copied where linking fails,
 * e.g. EXDEV). Whatever the layer had at that path (usually an empty mountpoint) is replaced.
 * The caller passes only canonical, valid store paths.
 */
export async function linkStorePaths(
  root: string,
  storePaths: readonly string[],
  concurrency = 8,
): Promise<LinkStats> {
  const stats: LinkStats = { linked: 0, copied: 0, directories: 0, symlinks: 0 };
  const parentOf = parentsUnder(root);
  let next = 0;
  const worker = async () => {
    while (next < storePaths.length) {
      const storePath = storePaths[next++]!;
      const parent = await parentOf(dirname(storePath));
      const destination = join(parent, storePath.slice(dirname(storePath).length + 1));
      await rm(destination, { recursive: true, force: true });
      await copyTree(storePath, destination, stats);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, storePaths.length) }, worker));
  return stats;
}

/**
 * Bind mode: makes sure the layer at `root` has a mountpoint for every store path it will be
 * given a bind mount for (an empty directory for a directory store path, an empty file for a
 * file one). An image may name a store path in its closure without shipping a mountpoint for it
 * (the closure form lists every path of closure-info's `store-paths`), and a bind mount onto a
 * missing target fails the container's start. The layer is untrusted: a symlink or an entry of
 * the wrong type where a mountpoint belongs is replaced. Returns how many were created.
 */
export async function ensureMountpoints(
  root: string,
  storePaths: readonly string[],
): Promise<number> {
  const parentOf = parentsUnder(root);
  let created = 0;
  for (const storePath of storePaths) {
    const source = await lstat(storePath);
    const wantDirectory = source.isDirectory();
    const parent = await parentOf(dirname(storePath));
    const target = join(parent, storePath.slice(storePath.lastIndexOf("/") + 1));
    const existing = await lstat(target).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return undefined;
      throw error;
    });
    if (existing !== undefined) {
      if (wantDirectory ? existing.isDirectory() : existing.isFile()) continue;
      await rm(target, { recursive: true, force: true });
    }
    if (wantDirectory) await mkdir(target, { mode: 0o555 });
    else await writeFile(target, "", { mode: 0o555, flag: "wx" });
    created++;
  }
  return created;
}
