import { type Dirent, lstatSync, readdirSync } from "node:fs";
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import type { Usage } from "./types.js";

/**
 * How many file-system calls {@link diskUsage} may make synchronously, on the caller's turn of
 * the event loop, before it goes on through libuv's pool (a readdir counts as one call, however
 * many entries it returns). Each call is a few microseconds on a cached directory; a hop
 * through the pool and back costs more, and an upper directory that a container or the differ
 * wrote is usually either small or far larger than this.
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
 * while it has made at most {@link syncUsageCalls} calls: a directory whose entries would take
 * it past that bound is read, and the rest of the walk goes on through libuv's pool from
 * there. Without `sync`, every call goes through the pool.
 */
export async function diskUsage(root: string, sync = false): Promise<Usage> {
  const walk: Walk = { seen: new Set<string>(), size: 0 };
  const pending = [root];
  let budget = sync ? syncUsageCalls - 1 : 0;
  if (budget > 0) account(walk, lstatSync(root, { bigint: true }));
  else account(walk, await lstat(root, { bigint: true }));
  while (pending.length > 0 && budget > 0) {
    const directory = pending.pop()!;
    const entries = readdirSync(directory, { withFileTypes: true });
    budget -= 1 + entries.length;
    if (budget < 0) {
      await accountEntries(walk, directory, entries, pending);
      break;
    }
    for (const entry of entries) {
      const path = join(directory, entry.name);
      account(walk, lstatSync(path, { bigint: true }));
      if (entry.isDirectory()) pending.push(path);
    }
  }
  while (pending.length > 0) {
    const directory = pending.pop()!;
    await accountEntries(
      walk,
      directory,
      await readdir(directory, { withFileTypes: true }),
      pending,
    );
  }
  return { size: walk.size, inodes: walk.seen.size };
}
/** lstat of each entry of `directory` through the pool; subdirectories go on `pending`. */
async function accountEntries(
  walk: Walk,
  directory: string,
  entries: readonly Dirent[],
  pending: string[],
): Promise<void> {
  for (const entry of entries) {
    const path = join(directory, entry.name);
    account(walk, await lstat(path, { bigint: true }));
    if (entry.isDirectory()) pending.push(path);
  }
}
