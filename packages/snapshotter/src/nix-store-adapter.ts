import { createGcRoots, type NixStore } from "@nix-snapshotter/nix-store";
import type { NixStorePort } from "./nix-store-port.js";

/** The snapshotter's view of a `@nix-snapshotter/nix-store` NixStore. */
export function nixStorePortFrom(nixStore: NixStore): NixStorePort {
  // The same directory the store's own root calls use; only read and delete leftovers here.
  const gcRoots = createGcRoots(nixStore.gcRootsDir);
  return {
    storeDir: nixStore.storeDir,
    async realise(paths, { owner, signal }) {
      await nixStore.realise(paths, signal ? { roots: { owner }, signal } : { roots: { owner } });
    },
    async addRoots(owner, paths) {
      await nixStore.addRoots(owner, paths);
    },
    async queryValidPaths(paths) {
      return new Set(await nixStore.queryValidPaths(paths));
    },
    readClosureInfo: (closureInfoPath) => nixStore.readClosureInfo(closureInfoPath),
    async removeRoots(owner) {
      await nixStore.removeRoots(owner);
    },
    listRootOwners: () => nixStore.listRootOwners(),
    listRootLeftovers: () => gcRoots.leftovers(),
    async removeRootLeftover(name) {
      await gcRoots.removeLeftover(name);
    },
  };
}
