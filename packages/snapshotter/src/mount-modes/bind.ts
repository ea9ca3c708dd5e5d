import { lstat } from "node:fs/promises";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { storePathMounts } from "../mount-options.js";
import type { MountModeStrategy } from "./mount-mode.js";

/**
 * `bind`: every container gets one read-only bind mount per store path of its chain, with
 * `target` set (containerd >= 1.7; 1.6 drops `target`). The Go nix-snapshotter's way.
 */
export const bindMode = {
  name: "bind" as const,
  description:
    "one read-only bind mount per store path (the Go nix-snapshotter's way; containerd >= 1.7 honours the mounts' target)",
  nixLayers: true,
  minimumContainerd: "1.7",

  async beforeCreate() {},

  /** A store path that is a symbolic link would be followed by the bind mount: refused. */
  async checkLayer(key, { paths, labelOf }) {
    let next = 0;
    const worker = async () => {
      while (next < paths.length) {
        const path = paths[next++]!;
        const stats = await lstat(path);
        if (stats.isSymbolicLink()) {
          throw new SnapshotterError(
            ErrorCode.InvalidArgument,
            `snapshot "${key}": label "${labelOf.get(path)}": store path "${path}" is a symbolic link, which a bind mount would follow`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, paths.length) }, worker));
  },

  async commitLayer(record, key, context) {
    await context.ensureMountpoints(record, key);
    return false;
  },

  /**
   * The store paths of the parent chain. A nix layer itself, or any layer being unpacked, gets
   * the plain snapshot: the differ writes into it, and read-only store mounts there would make
   * the unpack fail.
   */
  extraMounts(record, parentId, context) {
    if (parentId === undefined || record.nixLayer) return [];
    return storePathMounts(context.flattened(parentId));
  },
} satisfies MountModeStrategy;
