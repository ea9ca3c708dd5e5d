import { type Dir, lstatSync, opendirSync } from "node:fs";
import { lstat, opendir } from "node:fs/promises";
import { join } from "node:path";
import type { Usage } from "./types.js";

/**
 * How many file-system calls {@link diskUsage} may make synchronously, on the caller's turn of
 * the event loop, before it goes on through libuv's pool (an lstat counts as one, and so does
 * each directory entry read). Each is a few microseconds on a cached directory; a hop through
 * the pool and back costs more, and an upper directory that a container or the differ wrote is
 * usually either small or far larger than this.
 */
export const syncUsageCalls = 32;

interface Walk {
  readonly seen: Set<string>;
  size: number;
}

function account(walk: Walk, stats: { dev: bigint; ino: bigint; blocks: bigint }): void {
  const id = `${stats.dev}:${stats.ino}`;
  if (walk.seen.has(id)) return;
  walk.seen.add(id);
  walk.size += Number(stats.blocks) * 512;
}

/**
 * Disk usage of a directory tree, like containerd's `fs.DiskUsage`: every inode counted once
 * (hard links), size = allocated blocks * 512, the root included. Never follows symlinks.
 *
 * `sync` (the caller is the only call in flight): the walk starts synchronously and stays so
 * for at most {@link syncUsageCalls} calls, entries read one by one (a directory of a million
 * entries is never read whole on the event loop); from the call that would pass the bound on,
 * it goes on through libuv's pool, from the same open directory. Without `sync`, every call goes
 * through the pool.
 */
export async function diskUsage(root: string, sync = false): Promise<Usage> {
  const walk: Walk = { seen: new Set<string>(), size: 0 };
  const pending = [root];
  let budget = sync ? syncUsageCalls : 0;
  if (budget > 0) {
    budget--;
    account(walk, lstatSync(root, { bigint: true }));
  } else {
    account(walk, await lstat(root, { bigint: true }));
  }
  while (pending.length > 0) {
    const directory = pending.pop()!;
    let dir: Dir;
    if (budget > 0) {
      budget--;
      dir = opendirSync(directory);
    } else {
      dir = await opendir(directory);
    }
    try {
      for (;;) {
        // Each entry and its lstat: two calls of the budget, or through the pool.
        const entry = budget >= 2 ? dir.readSync() : await dir.read();
        if (entry === null) break;
        const path = join(directory, entry.name);
        if (budget >= 2) {
          budget -= 2;
          account(walk, lstatSync(path, { bigint: true }));
        } else {
          budget = 0;
          account(walk, await lstat(path, { bigint: true }));
        }
        if (entry.isDirectory()) pending.push(path);
      }
    } finally {
      if (budget > 0) {
        budget--;
        dir.closeSync();
      } else {
        await dir.close();
      }
    }
  }
  return { size: walk.size, inodes: walk.seen.size };
}
