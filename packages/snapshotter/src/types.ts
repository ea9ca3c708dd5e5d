import type { Logger } from "@nix-snapshotter/nix-store";
import type { MountMode } from "./mount-modes/index.js";

export type { MountMode } from "./mount-modes/index.js";

import type { NixStorePort } from "./nix-store-port.js";

/** The kind of a snapshot, with the spelling containerd's filters use (`kind==active`). */
export const Kind = {
  View: "view",
  Active: "active",
  Committed: "committed",
} as const;

export type Kind = (typeof Kind)[keyof typeof Kind];

/** What containerd knows about a snapshot. */
export interface Info {
  kind: Kind;
  /** The key of an active or view snapshot, the name of a committed one. */
  name: string;
  /** Name of the committed parent, `""` when there is none. */
  parent: string;
  labels: Record<string, string>;
  created: Date;
  updated: Date;
}

/** Disk usage of a snapshot's own directory (not of its parents, not of the Nix store). */
export interface Usage {
  /** Bytes allocated (st_blocks * 512, each inode counted once). */
  size: number;
  inodes: number;
}

/** One mount, as containerd's `types.Mount`. */
export interface Mount {
  type: string;
  source: string;
  /** Path inside the root filesystem (containerd >= 1.7 honours it; 1.6 ignores it). */
  target?: string;
  options: string[];
}

export interface SnapshotOptions {
  labels?: Record<string, string>;
  /**
   * Aborts the call's slow part (realising a nix layer's store paths), e.g. when the gRPC
   * client gives up; the call then fails and leaves nothing behind.
   */
  signal?: AbortSignal;
}

export type WalkFunction = (info: Info) => void | Promise<void>;

/**
 * containerd's Snapshotter contract (snapshots.Snapshotter), with its vocabulary and error
 * codes (see SnapshotterError).
 */
export interface Snapshotter {
  stat(key: string): Promise<Info>;
  /**
   * Updates mutable fields: `labels` (replace all) or `labels.<key>` (one label, an empty value
   * deletes it). No field paths = replace all labels. Anything else is InvalidArgument.
   */
  update(info: Info, fieldPaths?: readonly string[]): Promise<Info>;
  usage(key: string): Promise<Usage>;
  mounts(key: string): Promise<Mount[]>;
  prepare(key: string, parent: string, options?: SnapshotOptions): Promise<Mount[]>;
  view(key: string, parent: string, options?: SnapshotOptions): Promise<Mount[]>;
  commit(name: string, key: string, options?: SnapshotOptions): Promise<void>;
  remove(key: string): Promise<void>;
  /**
   * Calls `fn` for every snapshot matching any of `filters` (containerd filter syntax; within
   * one string, commas mean AND; no filters = everything).
   */
  walk(fn: WalkFunction, filters?: readonly string[]): Promise<void>;
  /** Like walk, as an async iterable (the service adapter streams it in batches). */
  list(filters?: readonly string[]): AsyncIterable<Info>;
  /** Removes directories and GC roots that no snapshot owns (left by crashes). */
  cleanup(): Promise<void>;
  /** Closes the metadata database. Calling it twice is fine. */
  close(): Promise<void>;
}

export interface SnapshotterOptions {
  /** Root directory: `<root>/metadata.db`, `<root>/snapshots/<id>/{fs,work}`. */
  root: string;
  /** A pino logger (or anything with its methods); silent by default. */
  logger?: Logger;
  /**
   * How store paths of nix layers reach containers, one of `mountModes` (mount-modes/): `bind`
   * (default; one read-only bind mount per store path, containerd >= 1.7), `hardlink` (store
   * files hard-linked into the layer at commit, one plain overlay; containerd 1.6) or `none`
   * (nix labels ignored).
   */
  mountMode?: MountMode;
  /** Access to Nix; required unless mountMode is `none`. */
  nixStore?: NixStorePort;
  /** Nix store directory, default `/nix/store` (or `nixStore.storeDir`). */
  storeDir?: string;
  /** Mount type `fuse3.fuse-overlayfs` instead of the kernel's `overlay`. */
  fuseOverlayfs?: boolean;
  /**
   * Add `userxattr` to overlay options (rootless kernels >= 5.11). Default: when not the host's
   * root (not uid 0, or uid 0 of a child user namespace such as rootlesskit's).
   */
  userxattr?: boolean;
  /** Fail a nix layer's Prepare when realising its store paths takes longer. Default: no limit. */
  realiseTimeoutMs?: number;
  /**
   * Prefix of the GC root owner names (`<prefix><id>`); distinct per snapshotter root. Default
   * `snapshot-<first 12 hex of sha256(root)>-`.
   */
  gcRootOwnerPrefix?: string;
}
