import { statfs } from "node:fs/promises";

/** One filesystem's usage as CRI reports it. */
export interface FilesystemUsageFigures {
  mountpoint: string;
  usedBytes: bigint;
  inodesUsed: bigint;
}

/**
 * Usage of the filesystem holding `path`, from statfs: bytes and inodes in use on that
 * filesystem. Cheap (no walk), so it answers at once even for a large store.
 */
export async function filesystemUsage(path: string): Promise<FilesystemUsageFigures> {
  const stats = await statfs(path, { bigint: true });
  return {
    mountpoint: path,
    usedBytes: (stats.blocks - stats.bfree) * stats.bsize,
    inodesUsed: stats.files - stats.ffree,
  };
}
