import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import type { TarWriteEntry } from "../tar.js";

/**
 * Tar entries that put absolute host paths (for example the store paths of a closure) at the same
 * place in an image: their parent directories first, then each path with everything below it,
 * in sorted order. Symbolic links stay links; files keep their permission bits.
 */
export async function hostPathEntries(paths: readonly string[]): Promise<TarWriteEntry[]> {
  const parents = new Set<string>();
  for (const path of paths) {
    if (!isAbsolute(path)) throw new Error(`host path "${path}" is not absolute`);
    for (let parent = dirname(path); parent !== "/"; parent = dirname(parent)) parents.add(parent);
  }
  const entries: TarWriteEntry[] = [...parents]
    .sort()
    .map((parent) => ({ name: parent.slice(1), type: "directory", mode: 0o755 }));
  const walk = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    const name = path.slice(1);
    if (stats.isSymbolicLink()) {
      entries.push({ name, type: "symlink", linkname: await readlink(path) });
    } else if (stats.isDirectory()) {
      entries.push({ name, type: "directory", mode: 0o755 });
      for (const child of (await readdir(path)).sort()) await walk(join(path, child));
    } else {
      entries.push({ name, type: "file", mode: stats.mode & 0o777, data: await readFile(path) });
    }
  };
  for (const path of [...paths].sort()) await walk(path);
  return entries;
}
