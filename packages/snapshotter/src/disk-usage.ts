import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { Usage } from "./types.js";

/**
 * Disk usage of a directory tree, like containerd's `fs.DiskUsage`: every inode counted once
 * (hard links), size = allocated blocks * 512, the root included. Never follows symlinks.
 */
export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const account = (stats: { dev: bigint; ino: bigint; blocks: bigint }) => {
    const id = `${stats.dev}:${stats.ino}`;
    if (seen.has(id)) return;
    seen.add(id);
    size += Number(stats.blocks) * 512;
  };
  account(await lstat(root, { bigint: true }));
  const pending = [root];
  while (pending.length > 0) {
    const directory = pending.pop()!;
    for (const entry of await readdir(directory, { withFileTypes: true })) {
      const path = join(directory, entry.name);
      account(await lstat(path, { bigint: true }));
      if (entry.isDirectory()) pending.push(path);
    }
  }
  return { size, inodes: seen.size };
}
