import type { Logger } from "@nix-snapshotter/nix-store";
import type { RealisedLayer } from "../nix-layers.js";
import type { MetadataStore, SnapshotHeader } from "../storage/metastore.js";
import type { Mount } from "../types.js";

/** What the snapshotter lends a mount mode for its work. */
export interface MountModeContext {
  readonly store: MetadataStore;
  readonly logger: Logger;
  /** Every store path of committed snapshot `id` and its ancestors. */
  flattened(id: number): string[];
  /** Hard-links the layer's own store paths into its `fs` directory. */
  linkLayer(record: SnapshotHeader, key: string): Promise<void>;
  /** Makes a mountpoint in the layer's `fs` directory for each of its own store paths. */
  ensureMountpoints(record: SnapshotHeader, key: string): Promise<void>;
  /** Runs `work` with snapshot `id` held: Cleanup leaves its directory and roots alone. */
  holding<T>(id: number, work: () => Promise<T>): Promise<T>;
}

/**
 * How the store paths of nix layers reach containers: one module per mode, listed once in
 * `mount-modes/index.ts` (config validation, the daemon's docs and the test harnesses read that
 * list). Remove has no hook: every mode removes the same things (the row, the directory with
 * any links in it, the GC roots).
 */
export interface MountModeStrategy {
  /** The name in `SnapshotterOptions.mountMode` and the daemon's `mount_mode`. */
  readonly name: string;
  /** One sentence for docs and logs. */
  readonly description: string;
  /** Whether nix labels are read at all (false: a plain overlay snapshotter). */
  readonly nixLayers: boolean;
  /**
   * The oldest containerd whose containers see the store paths in this mode (`"1.6"`,
   * `"1.7"`); undefined when the mode exposes none.
   */
  readonly minimumContainerd: string | undefined;
  /** Prepare or View on committed `parent`, before anything is created. */
  beforeCreate(parent: SnapshotHeader, context: MountModeContext): Promise<void>;
  /** Prepare of a nix layer, once its store paths are realised and valid: checks on them. */
  checkLayer(key: string, layer: RealisedLayer, context: MountModeContext): Promise<void>;
  /**
   * Commit of a layer with store paths of its own, before its row is committed. Returns true
   * when the paths are now linked into the layer (recorded with the commit).
   */
  commitLayer(record: SnapshotHeader, key: string, context: MountModeContext): Promise<boolean>;
  /** Mounts after the overlay's, for `record` on committed `parentId`. */
  extraMounts(
    record: SnapshotHeader,
    parentId: number | undefined,
    context: MountModeContext,
  ): Mount[];
}
