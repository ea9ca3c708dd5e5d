import { posix } from "node:path";
import { storePathOf } from "@nix-snapshotter/nix-store";
import type { TarWriteEntry } from "@nix-snapshotter/oci";
import { asBuildError, ImageBuildError } from "./build-error.js";
import type { StoreFileSystem } from "./file-system.js";

export interface MountpointLayerOptions {
  /** Canonical store paths, each gets a mountpoint. */
  storePaths: readonly string[];
  /** Store paths (or symlinks to store paths) whose trees are linked from `/`. */
  copyToRoot: readonly string[];
  fileSystem: StoreFileSystem;
  storeDir: string;
}

const maxSymlinkHops = 40;

/**
 * Compares tar names component by component, so parents sort before their children: the order
 * of comparing the names' `/`-separated components in turn (UTF-16 code units, a component
 * before any longer one it begins), computed in one pass without splitting. At the first
 * difference, a name whose component ends there (at a `/`) is the smaller one.
 */
export function compareEntryNames(left: string, right: string): number {
  const length = Math.min(left.length, right.length);
  for (let index = 0; index < length; index++) {
    const x = left.charCodeAt(index);
    const y = right.charCodeAt(index);
    if (x === y) continue;
    if (x === slash) return -1;
    if (y === slash) return 1;
    return x - y;
  }
  return left.length - right.length;
}

const slash = 0x2f;

class LayerTree {
  readonly entries = new Map<string, TarWriteEntry>();

  /**
   * Adds an entry unless something is already there. Directories merge with directories; for any
   * other clash the entry added first wins. Returns whether `name` is (now) a directory that
   * children may be added to, or whether a non-directory was added.
   */
  add(entry: TarWriteEntry): boolean {
    // Each prefix that ends before a slash is a parent.
    for (
      let slash = entry.name.indexOf("/");
      slash !== -1;
      slash = entry.name.indexOf("/", slash + 1)
    ) {
      const parent = entry.name.slice(0, slash);
      const existing = this.entries.get(parent);
      if (existing === undefined)
        this.entries.set(parent, { name: parent, type: "directory", mode: 0o755 });
      else if (existing.type !== "directory") return false;
    }
    const existing = this.entries.get(entry.name);
    if (existing === undefined) {
      this.entries.set(entry.name, entry);
      return true;
    }
    return existing.type === "directory" && entry.type === "directory";
  }

  sorted(): TarWriteEntry[] {
    return [...this.entries.values()].sort((left, right) =>
      compareEntryNames(left.name, right.name),
    );
  }
}

/** Follows a copyToRoot that is a symlink (possibly several hops) to the directory it names. */
async function resolveCopyToRoot(path: string, options: MountpointLayerOptions): Promise<string> {
  let current = path;
  for (let hops = 0; hops <= maxSymlinkHops; hops++) {
    if (storePathOf(current, { storeDir: options.storeDir }) === undefined) {
      throw new ImageBuildError(
        "InvalidArgument",
        current === path
          ? `copyToRoot "${path}" is not inside the store ${options.storeDir}`
          : `copyToRoot "${path}" links to "${current}", outside the store ${options.storeDir}`,
      );
    }
    const type = await options.fileSystem.lstat(current);
    if (type === "directory") return current;
    if (type !== "symlink") {
      throw new ImageBuildError(
        "InvalidArgument",
        `copyToRoot "${path}" must be a directory, got a ${type}`,
      );
    }
    const target = await options.fileSystem.readlink(current);
    current = posix.resolve(posix.dirname(current), target);
  }
  throw new ImageBuildError(
    "InvalidArgument",
    `copyToRoot "${path}": too many levels of symbolic links`,
  );
}

async function walkCopyToRoot(
  tree: LayerTree,
  root: string,
  relative: string,
  fileSystem: StoreFileSystem,
): Promise<void> {
  const directory = relative === "" ? root : `${root}/${relative}`;
  const names = (await fileSystem.readdir(directory)).sort();
  for (const name of names) {
    if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
      throw new ImageBuildError(
        "InvalidArgument",
        `copyToRoot "${root}": invalid directory entry "${name}"`,
      );
    }
    const childRelative = relative === "" ? name : `${relative}/${name}`;
    const childPath = `${root}/${childRelative}`;
    const type = await fileSystem.lstat(childPath);
    if (type === "directory") {
      if (tree.add({ name: childRelative, type: "directory", mode: 0o755 })) {
        await walkCopyToRoot(tree, root, childRelative, fileSystem);
      }
    } else {
      tree.add({ name: childRelative, type: "symlink", mode: 0o777, linkname: childPath });
    }
  }
}

/**
 * Plans the mountpoint layer's entries, sorted so parents precede children:
 * - the store directory's components (`nix/`, `nix/store/`),
 * - a directory (0755) for each store path that is (or resolves to) a directory and an empty
 *   file (0555) for each other store path,
 * - for each copyToRoot, in order, its directories (0755) and a symlink (0777) from `/<relative
 *   path>` to `<copyToRoot>/<relative path>` for everything else in it.
 * Merge rule: directories merge; for any other clash, what came first wins: mountpoints first,
 * then copyToRoots in the order given. A copyToRoot that is a symlink is followed (to at most 40
 * levels) while it stays inside the store, and its target's tree is linked. uid/gid and mtime
 * are 0 (the tar writer's defaults).
 */
export async function planMountpointLayer(
  options: MountpointLayerOptions,
): Promise<TarWriteEntry[]> {
  const tree = new LayerTree();
  const storeDir = options.storeDir.replace(/^\/+|\/+$/g, "");
  if (options.storePaths.length > 0) tree.add({ name: storeDir, type: "directory", mode: 0o755 });
  // Stat in parallel (the file system queues the calls); the order of entries does not depend on it.
  const types = await Promise.all(
    options.storePaths.map(async (storePath) => {
      try {
        return await options.fileSystem.stat(storePath);
      } catch (error) {
        throw asBuildError(error, `store path "${storePath}"`);
      }
    }),
  );
  for (const [index, storePath] of options.storePaths.entries()) {
    const type = types[index];
    const name = storePath.slice(1);
    tree.add(
      type === "directory"
        ? { name, type: "directory", mode: 0o755 }
        : { name, type: "file", mode: 0o555, data: new Uint8Array(0) },
    );
  }
  const inClosure = new Set(options.storePaths);
  for (const copyToRoot of options.copyToRoot) {
    try {
      const root = await resolveCopyToRoot(copyToRoot, options);
      for (const path of new Set([
        storePathOf(copyToRoot, { storeDir: options.storeDir }),
        storePathOf(root, { storeDir: options.storeDir }),
      ])) {
        if (path !== undefined && !inClosure.has(path)) {
          throw new ImageBuildError(
            "FailedPrecondition",
            `store path "${path}" is not in the closure; its links would dangle in the container`,
          );
        }
      }
      await walkCopyToRoot(tree, root, "", options.fileSystem);
    } catch (error) {
      throw asBuildError(error, `copyToRoot "${copyToRoot}"`);
    }
  }
  return tree.sorted();
}
