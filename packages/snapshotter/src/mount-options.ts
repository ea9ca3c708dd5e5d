import { Kind, type Mount } from "./types.js";

export interface OverlaySettings {
  /** Add `index=off` (the kernel has /sys/module/overlay/parameters/index). */
  indexOff: boolean;
  /** Add `userxattr` (rootless). */
  userxattr: boolean;
  /** Mount with fuse-overlayfs: type `fuse3.fuse-overlayfs`, no kernel-only options. */
  fuseOverlayfs: boolean;
}

export interface SnapshotLayout {
  kind: Kind;
  /** The snapshot's own `fs` directory. */
  upperDir: string;
  /** The snapshot's own `work` directory (active snapshots). */
  workDir: string;
  /** `fs` directories of the parent chain, parent first, bottom layer last. */
  lowerDirs: readonly string[];
}

/**
 * The mounts of a snapshot, as containerd's overlayfs snapshotter builds them:
 * - no parent: a bind mount of the snapshot's own directory (`rw`, or `ro` for a view);
 * - a view of a single parent: a read-only bind mount of the parent;
 * - otherwise one overlay with `lowerdir=` the parent chain (parent first), plus
 *   `upperdir=`/`workdir=` for an active snapshot (a view has no upper dir: read-only).
 */
export function overlayMounts(layout: SnapshotLayout, settings: OverlaySettings): Mount[] {
  if (layout.lowerDirs.length === 0) {
    return [
      {
        type: "bind",
        source: layout.upperDir,
        options: [layout.kind === Kind.View ? "ro" : "rw", "rbind"],
      },
    ];
  }
  if (layout.kind !== Kind.Active && layout.lowerDirs.length === 1) {
    return [{ type: "bind", source: layout.lowerDirs[0]!, options: ["ro", "rbind"] }];
  }
  const options: string[] = [];
  if (!settings.fuseOverlayfs) {
    if (settings.indexOff) options.push("index=off");
    if (settings.userxattr) options.push("userxattr");
  }
  if (layout.kind === Kind.Active) {
    options.push(`workdir=${layout.workDir}`, `upperdir=${layout.upperDir}`);
  }
  options.push(`lowerdir=${layout.lowerDirs.join(":")}`);
  return [
    {
      type: settings.fuseOverlayfs ? "fuse3.fuse-overlayfs" : "overlay",
      source: "overlay",
      options,
    },
  ];
}

/** One read-only recursive bind mount per store path, mounted at the same path in the rootfs. */
export function storePathMounts(storePaths: readonly string[]): Mount[] {
  return storePaths.map((path) => ({
    type: "bind",
    source: path,
    target: path,
    options: ["ro", "rbind"],
  }));
}
