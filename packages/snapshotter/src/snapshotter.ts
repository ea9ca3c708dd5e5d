import { existsSync } from "node:fs";
import { chmod, mkdir, readdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { isValidStoreDir, type Logger, silentLogger } from "@nix-snapshotter/nix-store";
import { nowNanoseconds, PreciseDate } from "./clock.js";
import { crashAt } from "./crash-point.js";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { defaultGcRootOwnerPrefix } from "./gc-root-owner.js";
import {
  defaultMountMode,
  type MountModeContext,
  type MountModeStrategy,
  mountModeNamed,
} from "./mount-modes/index.js";
import type { OverlaySettings } from "./mount-options.js";
import { NixLayers } from "./nix-layers.js";
import { OverlayFilesystem } from "./overlay-filesystem.js";
import { SpaceReserve } from "./space-reserve.js";
import { MetadataStore, type SnapshotHeader } from "./storage/metastore.js";
import {
  checkCommit,
  checkCreate,
  commitActive,
  createSnapshot,
  getInfo,
  getSnapshot,
  matchingInfos,
  removeSnapshot,
  updateInfo,
  validateLabels,
  withoutEmptyLabels,
} from "./storage/snapshots.js";
import {
  type Info,
  Kind,
  type Mount,
  type SnapshotOptions,
  type Snapshotter,
  type SnapshotterOptions,
  type Usage,
  type WalkFunction,
} from "./types.js";
import { inChildUserNamespace } from "./user-namespace.js";

/**
 * containerd's unpacker labels every layer snapshot it prepares with the layer's chain id. Such a
 * snapshot is written by the differ, not run: it gets no store mounts (they would be read-only
 * targets for the layer's files, and thousands of mounts per extracted layer).
 */
const unpackLabel = "containerd.io/snapshot.ref";

export { spaceReserveName } from "./space-reserve.js";
export { maxLabelSize } from "./storage/snapshots.js";

/**
 * containerd's Snapshotter contract, composed of: the metastore and containerd's semantics
 * (storage/), the overlay file system work (overlay-filesystem.ts), the Nix side of nix layers
 * (nix-layers.ts) and the mount mode's strategy (mount-modes/). This class orders their steps
 * so that a crash at any instant leaves a consistent root (commit, then delete) and tracks
 * what calls in flight own, which Cleanup leaves alone.
 */
class OverlaySnapshotter implements Snapshotter {
  /** Snapshot ids that in-flight calls own (Cleanup skips their directories and roots). */
  private readonly busyIds = new Set<number>();
  private readonly pending = new Set<Promise<unknown>>();
  /** Directory deletions of removed snapshots that run after their Remove was answered. */
  private readonly deletions = new Set<Promise<void>>();
  private closed = false;

  private readonly root: string;
  private readonly store: MetadataStore;
  private readonly filesystem: OverlayFilesystem;
  private readonly layers: NixLayers;
  private readonly mode: MountModeStrategy;
  private readonly reserve: SpaceReserve;
  private readonly logger: Logger;
  private readonly context: MountModeContext;

  constructor(parts: {
    root: string;
    store: MetadataStore;
    filesystem: OverlayFilesystem;
    layers: NixLayers;
    mode: MountModeStrategy;
    logger: Logger;
  }) {
    this.root = parts.root;
    this.store = parts.store;
    this.filesystem = parts.filesystem;
    this.layers = parts.layers;
    this.mode = parts.mode;
    this.logger = parts.logger;
    this.reserve = new SpaceReserve(parts.root, parts.logger);
    const layers = parts.layers;
    this.context = {
      store: parts.store,
      logger: parts.logger,
      flattened: (id) => layers.flattened(id),
      linkLayer: (record, key) => layers.linkLayer(record, key),
      ensureMountpoints: (record, key) => layers.ensureMountpoints(record, key),
      holding: (id, work) => this.holding(id, work),
    };
  }

  /** Runs `work` with snapshot `id` held: Cleanup leaves its directory and roots alone. */
  private async holding<T>(id: number, work: () => Promise<T>): Promise<T> {
    this.busyIds.add(id);
    try {
      return await work();
    } finally {
      this.busyIds.delete(id);
    }
  }

  /**
   * Whether the calling operation is the only one in flight: then a snapshot's directory calls
   * run synchronously (no other call waits on the event loop meanwhile, and a hop through
   * libuv's pool costs more than the call); with calls beside it they go through the pool.
   */
  private alone(): boolean {
    return this.pending.size <= 1;
  }

  /** Runs an operation, tracked so close() can wait for it. */
  private run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.closed) {
      return Promise.reject(new SnapshotterError(ErrorCode.Unavailable, "snapshotter is closed"));
    }
    // Nothing is answered before it is durable: a result (or an error, such as NotFound after
    // another call's Remove) may show commits still waiting for their sync (group commit).
    const promise = operation().then(
      (result) => this.store.durable().then(() => result),
      (error: unknown) => {
        // Out of space: give the WAL's pages back to the file system, so freeing space
        // elsewhere is enough for the next call to work.
        if (SnapshotterError.is(error, ErrorCode.ResourceExhausted)) this.store.checkpoint();
        return this.store.durable().then(
          () => Promise.reject(error),
          () => Promise.reject(error),
        );
      },
    );
    this.pending.add(promise);
    const forget = () => this.pending.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  /** `parentIds`: the record's parent chain when the caller knows it (else read). */
  private mountsOf(record: SnapshotHeader, parentIds = this.store.parentIds(record)): Mount[] {
    const mounts = this.filesystem.mounts(record.kind, record.id, parentIds);
    mounts.push(...this.mode.extraMounts(record, parentIds[0], this.context));
    return mounts;
  }

  stat(key: string): Promise<Info> {
    return this.run(async () => getInfo(this.store, key));
  }

  update(info: Info, fieldPaths: readonly string[] = []): Promise<Info> {
    return this.run(async () =>
      updateInfo(this.store, info, fieldPaths, new PreciseDate(nowNanoseconds())),
    );
  }

  usage(key: string): Promise<Usage> {
    return this.run(async () => {
      const record = getSnapshot(this.store, key);
      if (record.kind === Kind.Active) {
        try {
          return await this.filesystem.usage(record.id, this.alone());
        } catch (error) {
          throw SnapshotterError.from(error, `usage of snapshot "${key}"`);
        }
      }
      return { size: record.size ?? 0, inodes: record.inodes ?? 0 };
    });
  }

  mounts(key: string): Promise<Mount[]> {
    return this.run(async () => {
      const record = getSnapshot(this.store, key);
      if (record.kind === Kind.Committed) {
        throw new SnapshotterError(
          ErrorCode.FailedPrecondition,
          `snapshot "${key}" is not active or view`,
        );
      }
      return this.mountsOf(record);
    });
  }

  prepare(key: string, parent: string, options: SnapshotOptions = {}): Promise<Mount[]> {
    return this.run(() => this.createAfterDeletions(Kind.Active, key, parent, options));
  }

  view(key: string, parent: string, options: SnapshotOptions = {}): Promise<Mount[]> {
    return this.run(() => this.createAfterDeletions(Kind.View, key, parent, options));
  }

  /**
   * {@link createSnapshot}, once more if it ran out of space while removed snapshots' directories
   * were still being deleted (a failed creation leaves nothing behind): the space a Remove frees
   * counts as free once it is answered.
   */
  private async createAfterDeletions(
    kind: typeof Kind.Active | typeof Kind.View,
    key: string,
    parent: string,
    options: SnapshotOptions,
  ): Promise<Mount[]> {
    try {
      return await this.createSnapshot(kind, key, parent, options);
    } catch (error) {
      if (!SnapshotterError.is(error, ErrorCode.ResourceExhausted) || this.deletions.size === 0) {
        throw error;
      }
      await this.deletionsDone();
      return this.createSnapshot(kind, key, parent, options);
    }
  }

  private async createSnapshot(
    kind: typeof Kind.Active | typeof Kind.View,
    key: string,
    parent: string,
    options: SnapshotOptions,
  ): Promise<Mount[]> {
    const labels = { ...(options.labels ?? {}) };
    validateLabels(labels);
    if (key === "") throw new SnapshotterError(ErrorCode.InvalidArgument, "snapshot key is empty");
    // The parent is read once here and passed down; the transaction checks again that it is
    // still there (one read), as containerd's storage does within its transaction.
    const parentRecord = checkCreate(this.store, key, parent);
    const request = this.mode.nixLayers ? this.layers.request(key, labels) : undefined;

    if (parentRecord !== undefined) await this.mode.beforeCreate(parentRecord, this.context);
    const parentIds =
      parentRecord === undefined ? [] : [parentRecord.id, ...this.store.parentIds(parentRecord)];

    const id = this.store.allocateId();
    this.busyIds.add(id);
    try {
      await this.store.idsDurable();
    } catch (error) {
      this.busyIds.delete(id);
      throw error;
    }
    // Made only where something is logged (a pino child serialises its bindings at once).
    const log = () => this.logger.child({ key, id });
    let created: SnapshotHeader;
    try {
      // Under its final name at once: the id is new, durably reserved and held (Cleanup leaves
      // the directory alone) until the row commits; without the row (a failure here, or a
      // kill before the commit) the directory is an orphan that the catch below or Cleanup
      // removes, and its id is never handed out again.
      await this.filesystem.createDirectory(id, kind, parentRecord?.id, this.alone());

      let nixPaths: string[] = [];
      let nixClosure: string | null = null;
      if (request !== undefined) {
        const layer = await this.layers.realise(key, request, id, log(), options.signal);
        await this.mode.checkLayer(key, layer, this.context);
        nixPaths = layer.paths;
        nixClosure = request.closure ?? null;
        crashAt("prepare:realised");
      }

      created = this.store.transaction(() =>
        createSnapshot(
          this.store,
          parent,
          {
            id,
            key,
            kind,
            labels,
            nixPaths,
            nixClosure,
            nixLayer: request !== undefined || Object.hasOwn(labels, unpackLabel),
          },
          new PreciseDate(nowNanoseconds()),
          { parent: parentRecord },
        ),
      );
      crashAt("prepare:committed");
      if (nixPaths.length > 0) log().debug({ storePaths: nixPaths.length }, "nix layer prepared");
    } catch (error) {
      await this.filesystem
        .discard(id)
        .catch((cleanupError: unknown) =>
          log().warn({ err: cleanupError }, "removing directory of failed snapshot failed"),
        );
      if (request !== undefined) {
        await this.layers
          .removeRoots(id)
          .catch((cleanupError: unknown) =>
            log().warn({ err: cleanupError }, "removing GC roots of failed snapshot failed"),
          );
      }
      throw SnapshotterError.from(error, `snapshot "${key}"`);
    } finally {
      this.busyIds.delete(id);
    }
    // Outside the cleanup above: from here on the snapshot exists and keeps its roots.
    await this.reserve.ensure();
    return this.mountsOf(created, parentIds);
  }

  commit(name: string, key: string, options: SnapshotOptions = {}): Promise<void> {
    return this.run(async () => {
      const labels = withoutEmptyLabels(options.labels);
      validateLabels(labels);
      if (name === "") {
        throw new SnapshotterError(ErrorCode.InvalidArgument, "committed snapshot name is empty");
      }
      const record = checkCommit(this.store, name, key);
      await this.holding(record.id, async () => {
        const usage = await this.filesystem
          .usage(record.id, this.alone())
          .catch((error: unknown) => {
            throw SnapshotterError.from(error, `usage of snapshot "${key}"`);
          });
        const linked =
          record.hasNixPaths && (await this.mode.commitLayer(record, key, this.context));
        const flattened = this.layers.flatten(record);
        crashAt("commit:prepared");
        this.store.transaction(() => {
          commitActive(
            this.store,
            { id: record.id, name, key, labels, usage, flattened },
            new PreciseDate(nowNanoseconds()),
          );
          if (linked) this.store.markLinked(record.id);
        });
        this.layers.remember(record.id, flattened);
      });
      await this.reserve.ensure();
    });
  }

  remove(key: string): Promise<void> {
    return this.run(async () => {
      // Commit, then delete: the row goes first; a kill after the commit leaves an orphaned
      // directory and roots, which Cleanup removes, never a row without its directory.
      const deleteRow = () => {
        const removed = removeSnapshot(this.store, key);
        // Held until the files go: Cleanup leaves them alone while the deletion syncs.
        this.busyIds.add(removed.id);
        return removed;
      };
      let record: SnapshotHeader;
      let diskFull = false;
      try {
        record = deleteRow();
      } catch (error) {
        // A full disk: Remove is how space comes back, so it uses the reserve to commit.
        if (!SnapshotterError.is(error, ErrorCode.ResourceExhausted)) {
          throw SnapshotterError.from(error, `removing snapshot "${key}"`);
        }
        if (!(await this.reserve.release())) {
          throw SnapshotterError.from(error, `removing snapshot "${key}"`);
        }
        this.logger.warn({ key }, "disk full: released the space reserve to commit a Remove");
        try {
          record = deleteRow();
        } catch (again) {
          throw SnapshotterError.from(again, `removing snapshot "${key}"`);
        }
        diskFull = true;
      }
      const hasRoots = record.hasNixPaths || Boolean(record.nixClosure);
      let handedOver = false;
      try {
        this.layers.forget(record.id);
        crashAt("remove:committed");
        // A snapshot without GC roots (containers, views, ordinary layers) is deleted after the
        // answer, off its path; a nix layer (its roots released after its directory, as below)
        // and a Remove that freed space on a full disk are deleted before it.
        // docs/decisions/2026-12-06-deferred-directory-work.md
        if (!hasRoots && !diskFull) {
          this.deleteAfterAnswer(record, key);
          handedOver = true;
          return;
        }
        // Commit, then delete, across power loss too: the files go once the deletion is durable.
        await this.store.durable();
        // The id is held since the commit: Cleanup leaves the directory alone meanwhile, and a
        // kill part way leaves an orphan that Cleanup removes (no rename to claim it first).
        crashAt("remove:durable");
        await this.deleteDirectory(record, key, this.alone());
        if (hasRoots) {
          await this.layers
            .removeRoots(record.id)
            .catch((error: unknown) =>
              this.logger.warn({ err: error, key }, "removing GC roots failed (Cleanup retries)"),
            );
        }
      } finally {
        if (!handedOver) this.busyIds.delete(record.id);
      }
      await this.reserve.ensure();
    });
  }

  /** Deletes a removed snapshot's directory; a failure is logged (Cleanup retries). */
  private async deleteDirectory(record: SnapshotHeader, key: string, alone: boolean) {
    try {
      await this.filesystem.removeDirectory(record.id, record.kind, alone);
    } catch (error) {
      this.logger.warn({ err: error, key }, "removing snapshot directory failed (Cleanup retries)");
    }
    crashAt("remove:deleted");
  }

  /**
   * Deletes the directory of removed snapshot `record` once its row's deletion is durable, after
   * the Remove is answered (the answer waits for the same sync, then this waits one more turn
   * of the event loop), on the remover thread so the event loop serves the next call meanwhile.
   * The id stays held until the directory is gone: Cleanup leaves it alone and waits for it, and
   * close() waits for it. A kill before it ends leaves an orphan that the next Cleanup removes;
   * a failed sync (the Remove answers an error) leaves the directory to Cleanup too.
   */
  private deleteAfterAnswer(record: SnapshotHeader, key: string): void {
    const deletion = this.store
      .durable()
      .then(
        async () => {
          await new Promise<void>((resolve) => setImmediate(resolve));
          crashAt("remove:answered");
          // Off the event loop, in one message to the remover thread (see EmptyDirectoryRemover).
          await this.deleteDirectory(record, key, false);
        },
        () => undefined,
      )
      .finally(() => this.busyIds.delete(record.id))
      .then(() => this.reserve.ensure());
    this.deletions.add(deletion);
    void deletion.finally(() => this.deletions.delete(deletion));
  }

  /** Waits for the deletions of removed snapshots started so far. */
  private async deletionsDone(): Promise<void> {
    while (this.deletions.size > 0) await Promise.allSettled([...this.deletions]);
  }

  /** Writes the space reserve if it is missing (no error: without room, it waits for later). */
  ensureReserve(): Promise<void> {
    return this.reserve.ensure();
  }

  /**
   * True while snapshot `id` is owned: a committed row, or a call in flight that holds it.
   * Ids are never reused, so an id that is not owned now never will be again: checking this
   * synchronously right before a removal starts is enough, whatever runs beside it.
   */
  private owned(id: number): boolean {
    return this.busyIds.has(id) || this.store.getById(id) !== undefined;
  }

  private matching(filters: readonly string[]): Info[] {
    return matchingInfos(this.store, filters);
  }

  walk(fn: WalkFunction, filters: readonly string[] = []): Promise<void> {
    return this.run(async () => {
      for (const info of this.matching(filters)) await fn(info);
    });
  }

  list(filters: readonly string[] = []): AsyncIterable<Info> {
    // Parse (and report bad filters) on the first iteration, reading one consistent snapshot.
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        const infos = await self.run(async () => self.matching(filters));
        yield* infos;
      },
    };
  }

  cleanup(): Promise<void> {
    return this.run(async () => {
      // Removed snapshots' directories still being deleted go first (their ids are held, so
      // Cleanup would skip them anyway): once Cleanup returns, no orphan is left.
      await this.deletionsDone();
      // A row is absent for good only once its deletion is durable (Remove holds its id until).
      await this.store.durable();
      await this.filesystem.removeOrphanedDirectories((id) => this.owned(id), this.logger);
      await this.removeOrphanedRoots();
      await this.reserve.ensure();
    });
  }

  private removeOrphanedRoots(): Promise<void> {
    return this.layers.removeOrphanedRoots(
      (id) => this.owned(id),
      (id) => this.busyIds.has(id),
    );
  }

  /**
   * At start, before any call: directories that a row needs and lost are made again (below),
   * roots of interrupted calls and orphaned roots go.
   */
  async recover(): Promise<void> {
    await this.restoreMissingDirectories();
    try {
      await this.removeOrphanedRoots();
    } catch (error) {
      this.logger.warn(
        { err: error },
        "removing orphaned GC roots at start failed (Cleanup retries)",
      );
    }
  }

  /**
   * Rows whose `snapshots/<id>` is missing. A kill cannot leave one (the directory is made before
   * the row commits and deleted after its deletion commits), but power loss can: the row's commit
   * is synced before the answer, the directory's creation is not (nor in containerd's overlay
   * snapshotter, whose bolt commit follows an unsynced rename). An active snapshot or a view gets
   * its empty directories back: nothing written into them was synced either, and without them
   * it could not be mounted. A committed snapshot's content is gone and cannot be made again
   * here: it is reported (an error naming up to ten keys) and left as it is, so that its mount
   * fails rather than shows an empty layer; removing the image and pulling it again replaces it.
   */
  private async restoreMissingDirectories(): Promise<void> {
    const present = new Set(await readdir(this.filesystem.snapshotsDir));
    const restored: string[] = [];
    const lost: string[] = [];
    // Parents first (ids grow with creation): a restored active snapshot's `fs` takes the owner
    // of its parent's, as at Prepare.
    for (const header of this.store.headers()) {
      if (present.has(String(header.id))) continue;
      if (header.kind === Kind.Committed) {
        lost.push(header.key);
        continue;
      }
      try {
        await this.filesystem.createDirectory(header.id, header.kind, header.parentId ?? undefined);
        restored.push(header.key);
      } catch (error) {
        // The start goes on: the snapshot stays as power loss left it, and the next start tries again.
        this.logger.error(
          { err: error, key: header.key },
          "making the lost directory of an active snapshot or view again failed",
        );
      }
    }
    if (restored.length > 0) {
      this.logger.warn(
        { count: restored.length, keys: restored.slice(0, 10) },
        "active snapshots and views without their directory (lost by a power loss?): made again, empty",
      );
    }
    if (lost.length > 0) {
      this.logger.error(
        { count: lost.length, keys: lost.slice(0, 10) },
        "committed snapshots without their directory (lost by a power loss?): their content is gone and they cannot be mounted; remove the images that use them and pull them again",
      );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.pending]);
    await this.deletionsDone();
    this.filesystem.close();
    this.store.close();
  }

  toString(): string {
    return `OverlaySnapshotter(${this.root})`;
  }
}

/**
 * Opens (creating if needed) a snapshotter rooted at `options.root`:
 * `<root>/metadata.db` (SQLite, WAL) and `<root>/snapshots/<id>/{fs,work}`.
 */
export async function createSnapshotter(options: SnapshotterOptions): Promise<Snapshotter> {
  const root = resolve(options.root);
  const mountMode = options.mountMode ?? defaultMountMode;
  const mode = mountModeNamed(mountMode);
  const storeDir = options.storeDir ?? options.nixStore?.storeDir ?? "/nix/store";
  if (!isValidStoreDir(storeDir)) {
    throw new SnapshotterError(ErrorCode.InvalidArgument, `store dir "${storeDir}" is not valid`);
  }
  if (options.nixStore !== undefined && options.nixStore.storeDir !== storeDir) {
    throw new SnapshotterError(
      ErrorCode.InvalidArgument,
      `store dir "${storeDir}" differs from the Nix store's "${options.nixStore.storeDir}"`,
    );
  }
  await mkdir(join(root, "snapshots"), { recursive: true, mode: 0o700 });
  await chmod(root, 0o700);
  const fuseOverlayfs = options.fuseOverlayfs ?? false;
  const settings: OverlaySettings = {
    fuseOverlayfs,
    indexOff: existsSync("/sys/module/overlay/parameters/index"),
    // Not the host's root (an ordinary user, or uid 0 of a rootless namespace): overlay needs
    // user.* xattrs.
    userxattr: options.userxattr ?? (process.getuid?.() !== 0 || inChildUserNamespace()),
  };
  const ownerPrefix = options.gcRootOwnerPrefix ?? defaultGcRootOwnerPrefix(root);
  const logger = options.logger ?? silentLogger;
  let store: MetadataStore;
  try {
    store = new MetadataStore(join(root, "metadata.db"), { groupCommit: true });
  } catch (error) {
    throw SnapshotterError.from(error, `opening ${join(root, "metadata.db")}`);
  }
  logger.debug({ root, mountMode, settings, storeDir }, "snapshotter opened");
  const filesystem = new OverlayFilesystem(root, settings);
  const layers = new NixLayers({
    nixStore: options.nixStore,
    storeDir,
    ownerPrefix,
    store,
    upperDir: (id) => filesystem.upperDir(id),
    logger,
    realiseTimeoutMs: options.realiseTimeoutMs,
  });
  const snapshotter = new OverlaySnapshotter({ root, store, filesystem, layers, mode, logger });
  await snapshotter.recover();
  await snapshotter.ensureReserve();
  return snapshotter;
}
