import { lstat, readdir, readFile, readlink, stat } from "node:fs/promises";
import { posix } from "node:path";

export type FileType = "directory" | "file" | "symlink" | "other";

/**
 * The read-only view of the store that building needs. `buildImage` reads through it and never
 * writes. The default reads the real file system; a registry can pass its own view.
 */
export interface StoreFileSystem {
  /** Type of `path` itself (a symlink is `symlink`). */
  lstat(path: string): Promise<FileType>;
  /** Type of what `path` resolves to. */
  stat(path: string): Promise<FileType>;
  readdir(path: string): Promise<string[]>;
  readlink(path: string): Promise<string>;
  readFile(path: string): Promise<Uint8Array>;
}

function typeOf(stats: {
  isDirectory(): boolean;
  isFile(): boolean;
  isSymbolicLink(): boolean;
}): FileType {
  if (stats.isSymbolicLink()) return "symlink";
  if (stats.isDirectory()) return "directory";
  if (stats.isFile()) return "file";
  return "other";
}

/** The real file system, read-only. */
export function createNodeFileSystem(): StoreFileSystem {
  return {
    lstat: async (path) => typeOf(await lstat(path)),
    stat: async (path) => typeOf(await stat(path)),
    readdir: async (path) => readdir(path),
    readlink: async (path) => readlink(path),
    readFile: async (path) => readFile(path),
  };
}

/** One node of an in-memory file system. */
export type MemoryNode =
  | { type: "directory" }
  | { type: "file"; data?: Uint8Array | string }
  | { type: "symlink"; target: string };

function notFound(path: string): Error {
  return Object.assign(new Error(`ENOENT: no such file or directory, '${path}'`), {
    code: "ENOENT",
  });
}

/**
 * An in-memory file system from absolute paths to nodes; parent directories are implied. Useful
 * for tests, benchmarks, and registries that know their store's layout without touching disk.
 */
export function createMemoryFileSystem(
  nodes: Readonly<Record<string, MemoryNode>>,
): StoreFileSystem {
  const table = new Map<string, MemoryNode>();
  const children = new Map<string, Set<string>>();
  const addDirectory = (path: string) => {
    if (!table.has(path)) table.set(path, { type: "directory" });
  };
  for (const [rawPath, node] of Object.entries(nodes)) {
    const path = posix.normalize(rawPath);
    table.set(path, node);
    let current = path;
    while (current !== "/") {
      const parent = posix.dirname(current);
      addDirectory(parent);
      let set = children.get(parent);
      if (set === undefined) {
        set = new Set();
        children.set(parent, set);
      }
      set.add(posix.basename(current));
      current = parent;
    }
  }
  const get = (path: string) => {
    // Keys are normalised: a direct hit means `path` was already normalised.
    const node = table.get(path) ?? table.get(posix.normalize(path));
    if (node === undefined) throw notFound(path);
    return node;
  };
  const resolve = (path: string): MemoryNode => {
    let current = table.has(path) ? path : posix.normalize(path);
    for (let hops = 0; hops < 40; hops++) {
      const node = get(current);
      if (node.type !== "symlink") return node;
      current = posix.resolve(posix.dirname(current), node.target);
    }
    throw Object.assign(new Error(`ELOOP: too many symbolic links, '${path}'`), { code: "ELOOP" });
  };
  return {
    lstat: async (path) => get(path).type,
    stat: async (path) => resolve(path).type,
    readdir: async (path) => {
      if (resolve(path).type !== "directory") throw new Error(`ENOTDIR: '${path}'`);
      return [...(children.get(posix.normalize(path)) ?? [])].sort();
    },
    readlink: async (path) => {
      const node = get(path);
      if (node.type !== "symlink") throw new Error(`EINVAL: not a symlink, '${path}'`);
      return node.target;
    },
    readFile: async (path) => {
      const node = resolve(path);
      if (node.type !== "file") throw new Error(`EISDIR: '${path}'`);
      return typeof node.data === "string"
        ? Buffer.from(node.data)
        : (node.data ?? new Uint8Array(0));
    },
  };
}
