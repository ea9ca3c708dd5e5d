import type { GcRoots } from "@nix-snapshotter/nix-store";
import type { NixStorePort } from "../nix-store-port.js";

/**
 * A `NixStorePort` whose GC roots are real (a `GcRoots` directory of `@nix-snapshotter/nix-store`)
 * and whose store is a plain directory: every path "realises" to itself and counts as valid.
 * For crash tests of root creation and removal without a Nix daemon.
 */
export function gcRootsPort(storeDir: string, roots: GcRoots): NixStorePort {
  const storePath = (path: string) => ({
    path,
    storeDir,
    baseName: path.slice(storeDir.length + 1),
    hash: path.slice(storeDir.length + 1, storeDir.length + 33),
    name: path.slice(storeDir.length + 34),
  });
  return {
    storeDir,
    async realise(paths, { owner }) {
      await roots.add(owner, paths.map(storePath));
    },
    async addRoots(owner, paths) {
      await roots.add(owner, paths.map(storePath));
    },
    async queryValidPaths(paths) {
      return new Set(paths);
    },
    async readClosureInfo(path) {
      throw new Error(`${path}: no closure info in a directory store`);
    },
    async removeRoots(owner) {
      await roots.remove(owner);
    },
    listRootOwners: () => roots.owners(),
    listRootLeftovers: () => roots.leftovers(),
    async removeRootLeftover(name) {
      await roots.removeLeftover(name);
    },
  };
}
