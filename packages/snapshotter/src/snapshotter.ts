import { randomBytes } from "node:crypto";
import { existsSync, renameSync } from "node:fs";
import {
  chmod,
  lchown,
  lstat,
  mkdir,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { join, resolve } from "node:path";
import { isValidStoreDir, type Logger, silentLogger } from "@nix-snapshotter/nix-store";
import { nowNanoseconds, PreciseDate } from "./clock.js";
import { crashAt } from "./crash-point.js";
import { diskUsage } from "./disk-usage.js";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { infoAdaptor, parseFilters } from "./filters.js";
import { defaultGcRootOwnerPrefix } from "./gc-root-owner.js";
import { ensureMountpoints, linkStorePaths } from "./link-tree.js";
import { mergePaths } from "./merge-paths.js";
import { MetadataStore, type SnapshotRecord } from "./metadata.js";
import { type OverlaySettings, overlayMounts, storePathMounts } from "./mount-options.js";
import {
  type NixLayerRequest,
  nixClosureLabel,
  parseClosureStorePaths,
  parseNixLabels,
} from "./nix-labels.js";
import type { NixStorePort, RootLeftover } from "./nix-store-port.js";
import {
  type Info,
  Kind,
  type Mount,
  type MountMode,
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

/** containerd's limit on a label: key plus value. */
export const maxLabelSize = 4096;

function validateLabels(labels: Readonly<Record<string, string>>): void {
  for (const [key, value] of Object.entries(labels)) {
    if (typeof value !== "string") {
      throw new SnapshotterError(
        ErrorCode.InvalidArgument,
        `label "${key}": value is not a string`,
      );
    }
    const size = Buffer.byteLength(key) + Buffer.byteLength(value);
    if (size > maxLabelSize) {
      throw new SnapshotterError(
        ErrorCode.InvalidArgument,
        `label "${key.slice(0, 200)}": key and value are ${size} bytes, more than ${maxLabelSize}`,
      );
    }
  }
}

/**
 * A file of this size under the root keeps space for Remove on a full disk: when its commit
 * fails for lack of space, the file is deleted and the commit tried again (Remove then frees the
 * snapshot's space); it is written again once there is room.
 */
const spaceReserveBytes = 256 * 1024;
export const spaceReserveName = "space-reserve";

/** Nix store errors carry gRPC code names; keep them, anything else is Unavailable. */
function nixError(error: unknown, message: string): SnapshotterError {
  const name = (error as { name?: unknown } | null)?.name;
  if (name === "TimeoutError" || name === "AbortError") {
    const detail = error instanceof Error ? error.message : String(error);
    return new SnapshotterError(
      name === "TimeoutError" ? ErrorCode.DeadlineExceeded : ErrorCode.Canceled,
      `${message}: ${detail}`,
      { cause: error },
    );
  }
  const code = (error as { code?: unknown } | null)?.code;
  const known =
    typeof code === "string" && Object.hasOwn(ErrorCode, code)
      ? ErrorCode[code as keyof typeof ErrorCode]
      : ErrorCode.Unavailable;
  const detail = error instanceof Error ? error.message : String(error);
  return new SnapshotterError(known, `${message}: ${detail}`, { cause: error });
}

/**
 * Realise failures that say something about the paths (rather than the caller's cancellation
 * or deadline, a refused permission or a bad argument): the paths' state decides the answer.
 */
function realiseFailureIsAboutPaths(code: ErrorCode): boolean {
  return (
    code === ErrorCode.NotFound ||
    code === ErrorCode.Unavailable ||
    code === ErrorCode.Internal ||
    code === ErrorCode.Unknown ||
    code === ErrorCode.FailedPrecondition
  );
}

function notFound(key: string): SnapshotterError {
  return new SnapshotterError(ErrorCode.NotFound, `snapshot "${key}" does not exist`);
}

function isErrno(error: unknown, code: string): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === code;
}

class OverlaySnapshotter implements Snapshotter {
  private readonly snapshotsDir: string;
  /** Flattened store paths of committed snapshots, by id (immutable once committed). */
  private readonly flattenedCache = new Map<number, string[]>();
  /** Directory names under snapshots/ and ids that in-flight calls own (Cleanup skips them). */
  private readonly busyNames = new Set<string>();
  private readonly busyIds = new Set<number>();
  private readonly pending = new Set<Promise<unknown>>();
  /** Linking in progress, by snapshot id. */
  private readonly linking = new Map<number, Promise<void>>();
  private closed = false;
  private reserve: "present" | "missing" | "busy" = "missing";

  private readonly root: string;
  private readonly store: MetadataStore;
  private readonly settings: OverlaySettings;
  private readonly mountMode: MountMode;
  private readonly nixStore: NixStorePort | undefined;
  private readonly storeDir: string;
  private readonly ownerPrefix: string;
  private readonly logger: Logger;
  private readonly realiseTimeoutMs: number | undefined;

  constructor(parts: {
    root: string;
    store: MetadataStore;
    settings: OverlaySettings;
    mountMode: MountMode;
    nixStore: NixStorePort | undefined;
    storeDir: string;
    ownerPrefix: string;
    logger: Logger;
    realiseTimeoutMs: number | undefined;
  }) {
    this.root = parts.root;
    this.store = parts.store;
    this.settings = parts.settings;
    this.mountMode = parts.mountMode;
    this.nixStore = parts.nixStore;
    this.storeDir = parts.storeDir;
    this.ownerPrefix = parts.ownerPrefix;
    this.logger = parts.logger;
    this.realiseTimeoutMs = parts.realiseTimeoutMs;
    this.snapshotsDir = join(parts.root, "snapshots");
  }

  private snapshotDir(id: number): string {
    return join(this.snapshotsDir, String(id));
  }

  private upperDir(id: number): string {
    return join(this.snapshotDir(id), "fs");
  }

  private workDir(id: number): string {
    return join(this.snapshotDir(id), "work");
  }

  private owner(id: number): string {
    return `${this.ownerPrefix}${id}`;
  }

  /** Runs an operation, tracked so close() can wait for it. */
  private run<T>(operation: () => Promise<T>): Promise<T> {
    if (this.closed) {
      return Promise.reject(new SnapshotterError(ErrorCode.Unavailable, "snapshotter is closed"));
    }
    const promise = operation().catch((error: unknown) => {
      // Out of space: give the WAL's pages back to the file system, so freeing space
      // elsewhere is enough for the next call to work.
      if (SnapshotterError.is(error, ErrorCode.ResourceExhausted)) this.store.checkpoint();
      throw error;
    });
    this.pending.add(promise);
    const forget = () => this.pending.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  private record(key: string): SnapshotRecord {
    const record = this.store.getByKey(key);
    if (record === undefined) throw notFound(key);
    return record;
  }

  private flattened(id: number): string[] {
    let paths = this.flattenedCache.get(id);
    if (paths === undefined) {
      paths = this.store.getById(id)?.flattened ?? [];
      this.flattenedCache.set(id, paths);
    }
    return paths;
  }

  private mountsOf(record: SnapshotRecord): Mount[] {
    const parentIds = this.store.parentIds(record);
    const mounts = overlayMounts(
      {
        kind: record.kind,
        upperDir: this.upperDir(record.id),
        workDir: this.workDir(record.id),
        lowerDirs: parentIds.map((id) => this.upperDir(id)),
      },
      this.settings,
    );
    const parentId = parentIds[0];
    // A nix layer itself, or any layer being unpacked, gets the plain snapshot: the differ
    // writes into it, and read-only store mounts there would make the unpack fail.
    if (this.mountMode === "bind" && parentId !== undefined && !record.nixLayer) {
      mounts.push(...storePathMounts(this.flattened(parentId)));
    }
    return mounts;
  }

  stat(key: string): Promise<Info> {
    return this.run(async () => this.store.info(this.record(key)));
  }

  update(info: Info, fieldPaths: readonly string[] = []): Promise<Info> {
    return this.run(async () => {
      const requested = info.labels ?? {};
      validateLabels(requested);
      return this.store.transaction(() => {
        const record = this.record(info.name);
        let labels: Record<string, string> = { ...record.labels };
        if (fieldPaths.length === 0) {
          labels = { ...requested };
        } else {
          for (const path of fieldPaths) {
            if (path.startsWith("labels.")) {
              const key = path.slice("labels.".length);
              labels[key] = Object.hasOwn(requested, key) ? requested[key]! : "";
            } else if (path === "labels") {
              labels = { ...requested };
            } else {
              throw new SnapshotterError(
                ErrorCode.InvalidArgument,
                `cannot update ${JSON.stringify(path)} field on snapshot "${info.name}"`,
              );
            }
          }
        }
        for (const [key, value] of Object.entries(labels)) {
          if (value === "") delete labels[key];
        }
        this.store.updateLabels(record.id, labels, new PreciseDate(nowNanoseconds()));
        return this.store.info(this.store.getById(record.id)!);
      });
    });
  }

  usage(key: string): Promise<Usage> {
    return this.run(async () => {
      const record = this.record(key);
      if (record.kind === Kind.Active) {
        try {
          return await diskUsage(this.upperDir(record.id));
        } catch (error) {
          throw SnapshotterError.from(error, `usage of snapshot "${key}"`);
        }
      }
      return { size: record.size ?? 0, inodes: record.inodes ?? 0 };
    });
  }

  mounts(key: string): Promise<Mount[]> {
    return this.run(async () => {
      const record = this.record(key);
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
    return this.run(() => this.createSnapshot(Kind.Active, key, parent, options));
  }

  view(key: string, parent: string, options: SnapshotOptions = {}): Promise<Mount[]> {
    return this.run(() => this.createSnapshot(Kind.View, key, parent, options));
  }

  /** Checks the key is free and the parent committed; returns the parent record. */
  private checkCreate(key: string, parent: string): SnapshotRecord | undefined {
    if (this.store.getByKey(key) !== undefined) {
      throw new SnapshotterError(ErrorCode.AlreadyExists, `snapshot "${key}" already exists`);
    }
    if (parent === "") return undefined;
    const parentRecord = this.store.getByKey(parent);
    if (parentRecord === undefined) {
      throw new SnapshotterError(ErrorCode.NotFound, `parent snapshot "${parent}" does not exist`);
    }
    if (parentRecord.kind !== Kind.Committed) {
      throw new SnapshotterError(
        ErrorCode.InvalidArgument,
        `parent snapshot "${parent}" is not a committed snapshot`,
      );
    }
    return parentRecord;
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
    this.checkCreate(key, parent);
    const request = this.mountMode === "none" ? undefined : parseNixLabels(labels, this.storeDir);
    if (request !== undefined && this.nixStore === undefined) {
      throw new SnapshotterError(
        ErrorCode.FailedPrecondition,
        `snapshot "${key}" is a nix layer but the snapshotter has no Nix store`,
      );
    }

    if (parent !== "") await this.linkAncestors(this.store.getByKey(parent));

    const id = this.store.allocateId();
    const temporaryName = `new-${id}-${randomBytes(4).toString("hex")}`;
    const temporary = join(this.snapshotsDir, temporaryName);
    this.busyNames.add(temporaryName);
    this.busyIds.add(id);
    const log = this.logger.child({ key, id });
    let created: SnapshotRecord;
    try {
      await mkdir(temporary, { mode: 0o700 });
      const upper = join(temporary, "fs");
      await mkdir(upper, { mode: 0o755 });
      await chmod(upper, 0o755);
      if (kind === Kind.Active) await mkdir(join(temporary, "work"), { mode: 0o711 });
      crashAt("prepare:directory");
      const parentRecord = this.store.getByKey(parent);
      if (parentRecord !== undefined) {
        // Like containerd: the new upper directory belongs to whoever owns the parent's.
        const parentStats = await lstat(this.upperDir(parentRecord.id));
        const own = await lstat(upper);
        if (parentStats.uid !== own.uid || parentStats.gid !== own.gid) {
          await lchown(upper, parentStats.uid, parentStats.gid);
        }
      }

      let nixPaths: string[] = [];
      let nixClosure: string | null = null;
      if (request !== undefined) {
        nixPaths = await this.realiseLayer(key, request, this.owner(id), log, options.signal);
        nixClosure = request.closure ?? null;
        crashAt("prepare:realised");
      }

      const final = this.snapshotDir(id);
      let renamed = false;
      let record: SnapshotRecord;
      try {
        record = this.store.transaction(() => {
          const parentNow = this.checkCreate(key, parent);
          const inserted = this.store.insert(
            {
              id,
              key,
              kind,
              parentId: parentNow?.id ?? null,
              labels: Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== "")),
              nixPaths,
              nixClosure,
              nixLayer: request !== undefined || Object.hasOwn(labels, unpackLabel),
            },
            new PreciseDate(nowNanoseconds()),
          );
          // The directory gets its final name only if the row commits (containerd does the same).
          renameSync(temporary, final);
          renamed = true;
          return inserted;
        });
      } catch (error) {
        if (renamed) renameSync(final, temporary);
        throw error;
      }
      crashAt("prepare:committed");
      if (nixPaths.length > 0) log.debug({ storePaths: nixPaths.length }, "nix layer prepared");
      created = record;
    } catch (error) {
      await rm(temporary, { recursive: true, force: true }).catch((cleanupError: unknown) =>
        log.warn({ err: cleanupError }, "removing temporary snapshot directory failed"),
      );
      if (request !== undefined && this.nixStore !== undefined) {
        await this.nixStore
          .removeRoots(this.owner(id))
          .catch((cleanupError: unknown) =>
            log.warn({ err: cleanupError }, "removing GC roots of failed snapshot failed"),
          );
      }
      throw SnapshotterError.from(error, `snapshot "${key}"`);
    } finally {
      this.busyNames.delete(temporaryName);
      this.busyIds.delete(id);
    }
    // Outside the cleanup above: from here on the snapshot exists and keeps its roots.
    await this.ensureReserve();
    return this.mountsOf(created);
  }

  /**
   * Roots and realises the store paths of a nix layer in one batch, reads and validates the
   * closure file, and checks every path is valid. Returns every store path to expose.
   */
  private async realiseLayer(
    key: string,
    request: NixLayerRequest,
    owner: string,
    log: Logger,
    callerSignal: AbortSignal | undefined,
  ): Promise<string[]> {
    const nixStore = this.nixStore!;
    const signals: AbortSignal[] = [];
    if (callerSignal !== undefined) signals.push(callerSignal);
    if (this.realiseTimeoutMs !== undefined)
      signals.push(AbortSignal.timeout(this.realiseTimeoutMs));
    const signal = signals.length === 0 ? undefined : AbortSignal.any(signals);
    const toRealise =
      request.closure === undefined ? request.storePaths : [...request.storePaths, request.closure];
    if (toRealise.length === 0) return [];
    log.debug({ storePaths: toRealise.length }, "realising nix layer");
    const labelOf = new Map(request.labelOf);
    if (request.closure !== undefined) labelOf.set(request.closure, nixClosureLabel);
    const realiseOptions = signal === undefined ? { owner } : { owner, signal };
    const what = `snapshot "${key}": realising ${toRealise.length} store path(s) named by its nix labels`;
    for (let attempt = 1; ; attempt++) {
      try {
        signal?.throwIfAborted();
        await nixStore.realise(toRealise, realiseOptions);
        break;
      } catch (error) {
        const failure = nixError(error, what);
        if (!realiseFailureIsAboutPaths(failure.code)) throw failure;
        // Nix failed for the paths themselves: a path missing now (not substitutable, or
        // collected while Nix worked) is NotFound, named; none missing means one came back
        // while Nix worked, and one more try settles it.
        const valid = await nixStore.queryValidPaths(toRealise).catch(() => undefined);
        if (valid === undefined) throw failure;
        const missing = toRealise.find((path) => !valid.has(path));
        if (missing !== undefined) {
          throw new SnapshotterError(
            ErrorCode.NotFound,
            `snapshot "${key}": label "${labelOf.get(missing)}": store path "${missing}" could not be realised: ${failure.message}`,
            { cause: error },
          );
        }
        if (attempt >= 2) {
          throw new SnapshotterError(
            ErrorCode.FailedPrecondition,
            `${failure.message} (every path is valid now; Nix failed twice)`,
            { cause: error },
          );
        }
        log.debug({ err: error }, "realise failed, but every path is valid now: trying again");
      }
    }
    let paths = [...request.storePaths];
    if (request.closure !== undefined) {
      let lines: string[];
      try {
        lines = await nixStore.readClosureInfo(request.closure);
      } catch (error) {
        throw nixError(
          error,
          `snapshot "${key}": label "${nixClosureLabel}": reading closure ${request.closure}`,
        );
      }
      const listed = parseClosureStorePaths(lines, request.closure, this.storeDir);
      for (const path of listed) if (!labelOf.has(path)) labelOf.set(path, nixClosureLabel);
      paths = mergePaths(paths, listed);
    }
    const valid = await nixStore.queryValidPaths(paths).catch((error: unknown) => {
      throw nixError(error, `snapshot "${key}": querying store path validity`);
    });
    const missing = paths.find((path) => !valid.has(path));
    if (missing !== undefined) {
      throw new SnapshotterError(
        ErrorCode.FailedPrecondition,
        `snapshot "${key}": label "${labelOf.get(missing)}": store path "${missing}" is not valid in the Nix store`,
      );
    }
    if (this.mountMode === "bind") {
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
    }
    return paths;
  }

  /** Hard-links a layer's own store paths into its directory (one at a time per layer). */
  private linkLayer(record: SnapshotRecord, key: string): Promise<void> {
    const running = this.linking.get(record.id);
    if (running !== undefined) return running;
    const promise = (async () => {
      try {
        const stats = await linkStorePaths(this.upperDir(record.id), record.nixPaths);
        this.logger.debug({ key, id: record.id, ...stats }, "store paths linked into layer");
      } catch (error) {
        throw SnapshotterError.from(error, `snapshot "${key}": linking store paths`);
      } finally {
        this.linking.delete(record.id);
      }
    })();
    this.linking.set(record.id, promise);
    return promise;
  }

  /**
   * In hardlink mode, links the store paths of ancestors committed without links (while the
   * snapshotter ran in another mount mode), so a container on top sees them.
   */
  private async linkAncestors(parent: SnapshotRecord | undefined): Promise<void> {
    if (this.mountMode !== "hardlink" || parent === undefined) return;
    for (const id of [parent.id, ...this.store.parentIds(parent)]) {
      const ancestor = this.store.getById(id);
      if (ancestor === undefined || ancestor.linked || ancestor.nixPaths.length === 0) continue;
      this.busyIds.add(id);
      try {
        await this.linkLayer(ancestor, ancestor.key);
        this.store.transaction(() => this.store.markLinked(id));
      } finally {
        this.busyIds.delete(id);
      }
      this.logger.info(
        { key: ancestor.key, id },
        "linked store paths of a layer committed in another mount mode",
      );
    }
  }

  commit(name: string, key: string, options: SnapshotOptions = {}): Promise<void> {
    return this.run(async () => {
      const labels = Object.fromEntries(
        Object.entries(options.labels ?? {}).filter(([, value]) => value !== ""),
      );
      validateLabels(labels);
      if (name === "") {
        throw new SnapshotterError(ErrorCode.InvalidArgument, "committed snapshot name is empty");
      }
      const checkCommit = (): SnapshotRecord => {
        const record = this.record(key);
        if (record.kind !== Kind.Active) {
          throw new SnapshotterError(
            ErrorCode.FailedPrecondition,
            `snapshot "${key}" is not active`,
          );
        }
        if (this.store.getByKey(name) !== undefined) {
          throw new SnapshotterError(ErrorCode.AlreadyExists, `snapshot "${name}" already exists`);
        }
        return record;
      };
      const record = checkCommit();
      this.busyIds.add(record.id);
      try {
        const usage = await diskUsage(this.upperDir(record.id)).catch((error: unknown) => {
          throw SnapshotterError.from(error, `usage of snapshot "${key}"`);
        });
        const link = this.mountMode === "hardlink" && record.nixPaths.length > 0;
        if (link) await this.linkLayer(record, key);
        else if (this.mountMode === "bind" && record.nixPaths.length > 0) {
          await ensureMountpoints(this.upperDir(record.id), record.nixPaths).catch(
            (error: unknown) => {
              throw SnapshotterError.from(error, `mountpoints of snapshot "${key}"`);
            },
          );
        }
        const parentPaths = record.parentId === null ? [] : this.flattened(record.parentId);
        const flattened = mergePaths(parentPaths, record.nixPaths);
        crashAt("commit:prepared");
        this.store.transaction(() => {
          const current = checkCommit();
          if (current.id !== record.id) throw notFound(key);
          this.store.commit(
            record.id,
            name,
            labels,
            usage,
            flattened,
            new PreciseDate(nowNanoseconds()),
          );
          if (link) this.store.markLinked(record.id);
        });
        this.flattenedCache.set(record.id, flattened);
      } finally {
        this.busyIds.delete(record.id);
      }
      await this.ensureReserve();
    });
  }

  remove(key: string): Promise<void> {
    return this.run(async () => {
      // Commit, then delete: the row goes first; a kill after the commit leaves an orphaned
      // directory and roots, which Cleanup removes, never a row without its directory.
      const deleteRow = () =>
        this.store.transaction(() => {
          const found = this.record(key);
          if (this.store.hasChildren(found.id)) {
            throw new SnapshotterError(
              ErrorCode.FailedPrecondition,
              `cannot remove snapshot "${key}": it has children`,
            );
          }
          this.store.delete(found.id);
          return found;
        });
      let record: SnapshotRecord;
      try {
        record = deleteRow();
      } catch (error) {
        // A full disk: Remove is how space comes back, so it uses the reserve to commit.
        if (!SnapshotterError.is(error, ErrorCode.ResourceExhausted)) {
          throw SnapshotterError.from(error, `removing snapshot "${key}"`);
        }
        if (!(await this.releaseReserve())) {
          throw SnapshotterError.from(error, `removing snapshot "${key}"`);
        }
        this.logger.warn({ key }, "disk full: released the space reserve to commit a Remove");
        try {
          record = deleteRow();
        } catch (again) {
          throw SnapshotterError.from(again, `removing snapshot "${key}"`);
        }
      }
      this.flattenedCache.delete(record.id);
      crashAt("remove:committed");
      // Same tick as the commit: no Cleanup runs between, and the name is claimed for us.
      const removal = this.claimDirectory(String(record.id));
      if (removal !== undefined) {
        crashAt("remove:renamed");
        try {
          await rm(join(this.snapshotsDir, removal), { recursive: true, force: true });
        } catch (error) {
          this.logger.warn(
            { err: error, key },
            "removing snapshot directory failed (Cleanup retries)",
          );
        } finally {
          this.busyNames.delete(removal);
        }
      }
      crashAt("remove:deleted");
      if (this.nixStore !== undefined && (record.nixPaths.length > 0 || record.nixClosure)) {
        await this.nixStore
          .removeRoots(this.owner(record.id))
          .catch((error: unknown) =>
            this.logger.warn({ err: error, key }, "removing GC roots failed (Cleanup retries)"),
          );
      }
      await this.ensureReserve();
    });
  }

  /** Writes the space reserve if it is missing (no error: without room, it waits for later). */
  async ensureReserve(): Promise<void> {
    if (this.reserve !== "missing") return;
    this.reserve = "busy";
    const path = join(this.root, spaceReserveName);
    const temporary = `${path}.new`;
    try {
      const existing = await stat(path).catch(() => undefined);
      if (existing?.size !== spaceReserveBytes) {
        // Zeros written for real (not a sparse file): the blocks are taken now.
        await writeFile(temporary, Buffer.alloc(spaceReserveBytes), { mode: 0o600 });
        await rename(temporary, path);
      }
      this.reserve = "present";
    } catch (error) {
      this.reserve = "missing";
      await rm(temporary, { force: true }).catch(() => undefined);
      this.logger.debug({ err: error }, "space reserve not written (no room yet)");
    }
  }

  /** Deletes the space reserve; false when there was none to free. */
  private async releaseReserve(): Promise<boolean> {
    if (this.reserve !== "present") return false;
    this.reserve = "busy";
    try {
      await rm(join(this.root, spaceReserveName));
      return true;
    } catch {
      return false;
    } finally {
      this.reserve = "missing";
    }
  }

  /**
   * Renames `snapshots/<name>` to a fresh `rm-*` name this call owns (in busyNames until the
   * caller deletes it); undefined when it does not exist. Synchronous, so the caller's check
   * that nothing owns the name and the rename happen without anything running between.
   */
  private claimDirectory(name: string): string | undefined {
    const removalName = `rm-${randomBytes(6).toString("hex")}`;
    try {
      renameSync(join(this.snapshotsDir, name), join(this.snapshotsDir, removalName));
    } catch (error) {
      if (isErrno(error, "ENOENT")) return undefined;
      throw error;
    }
    this.busyNames.add(removalName);
    return removalName;
  }

  /**
   * True while snapshot `id` is owned: a committed row, or a call in flight that holds it.
   * Ids are never reused, so an id that is not owned now never will be again: checking this
   * synchronously right before a removal starts is enough, whatever runs beside it.
   */
  private owned(id: number): boolean {
    return this.busyIds.has(id) || this.store.getById(id) !== undefined;
  }

  /** The snapshot id of one of our GC root owners; null for a foreign owner. */
  private ownerId(owner: string): number | undefined | null {
    if (!owner.startsWith(this.ownerPrefix)) return null;
    const rest = owner.slice(this.ownerPrefix.length);
    return /^[0-9]+$/.test(rest) ? Number(rest) : undefined;
  }

  private matching(filters: readonly string[]): Info[] {
    const filter = parseFilters(filters);
    return this.store
      .all()
      .map((record) => this.store.info(record))
      .filter((info) => filter.match(infoAdaptor(info)));
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
      await this.removeOrphanedDirectories();
      await this.removeOrphanedRoots();
      await this.ensureReserve();
    });
  }

  /**
   * Removes directories under snapshots/ that no snapshot and no call in flight owns. Ownership
   * is checked right before each removal (not from a list read earlier), in the same tick as
   * the rename that claims the directory.
   */
  private async removeOrphanedDirectories(): Promise<void> {
    let entries: string[] = [];
    try {
      entries = await readdir(this.snapshotsDir);
    } catch (error) {
      if (!isErrno(error, "ENOENT")) throw SnapshotterError.from(error, "cleanup");
    }
    for (const name of entries) {
      if (this.busyNames.has(name)) continue;
      if (/^[0-9]+$/.test(name) && this.owned(Number(name))) continue;
      let removal: string | undefined;
      try {
        removal = this.claimDirectory(name);
      } catch (error) {
        throw SnapshotterError.from(error, `cleanup: snapshot directory ${name}`);
      }
      if (removal === undefined) continue;
      this.logger.info({ directory: name }, "cleanup: removing orphaned snapshot directory");
      try {
        await rm(join(this.snapshotsDir, removal), { recursive: true, force: true });
      } catch (error) {
        throw SnapshotterError.from(error, `cleanup: removing snapshot directory ${name}`);
      } finally {
        this.busyNames.delete(removal);
      }
    }
  }

  /**
   * Removes our GC roots that no snapshot and no call in flight owns, and the hidden
   * directories of root creations and removals a kill interrupted.
   */
  private async removeOrphanedRoots(): Promise<void> {
    const nixStore = this.nixStore;
    if (nixStore === undefined) return;
    let owners: string[];
    try {
      owners = await nixStore.listRootOwners();
    } catch (error) {
      throw nixError(error, "cleanup: listing GC root owners");
    }
    for (const owner of owners) {
      const id = this.ownerId(owner);
      if (id === null || (id !== undefined && this.owned(id))) continue;
      this.logger.info({ owner }, "cleanup: removing orphaned GC roots");
      await nixStore.removeRoots(owner).catch((error: unknown) => {
        throw nixError(error, `cleanup: removing GC roots of ${owner}`);
      });
    }
    if (nixStore.listRootLeftovers === undefined || nixStore.removeRootLeftover === undefined) {
      return;
    }
    let leftovers: RootLeftover[];
    try {
      leftovers = await nixStore.listRootLeftovers();
    } catch (error) {
      throw nixError(error, "cleanup: listing interrupted GC root directories");
    }
    for (const leftover of leftovers) {
      const id = this.ownerId(leftover.owner);
      if (id === null) continue;
      // A staged directory of a call in flight is still being filled; any other was left by an
      // interrupted call (a completed add renamed or deleted its staging directory).
      if (leftover.state === "staged" && id !== undefined && this.busyIds.has(id)) continue;
      this.logger.info({ ...leftover }, "cleanup: removing interrupted GC root directory");
      await nixStore.removeRootLeftover(leftover.name).catch((error: unknown) => {
        throw nixError(error, `cleanup: removing GC root directory ${leftover.name}`);
      });
    }
  }

  /** At start, before any call: roots of interrupted calls and orphaned roots go. */
  async recover(): Promise<void> {
    try {
      await this.removeOrphanedRoots();
    } catch (error) {
      this.logger.warn(
        { err: error },
        "removing orphaned GC roots at start failed (Cleanup retries)",
      );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.pending]);
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
  const mountMode = options.mountMode ?? "bind";
  if (mountMode !== "bind" && mountMode !== "hardlink" && mountMode !== "none") {
    throw new SnapshotterError(ErrorCode.InvalidArgument, `unknown mount mode "${mountMode}"`);
  }
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
    store = new MetadataStore(join(root, "metadata.db"));
  } catch (error) {
    throw SnapshotterError.from(error, `opening ${join(root, "metadata.db")}`);
  }
  logger.debug({ root, mountMode, settings, storeDir }, "snapshotter opened");
  const snapshotter = new OverlaySnapshotter({
    root,
    store,
    settings,
    mountMode,
    nixStore: options.nixStore,
    storeDir,
    ownerPrefix,
    logger,
    realiseTimeoutMs: options.realiseTimeoutMs,
  });
  await snapshotter.recover();
  await snapshotter.ensureReserve();
  return snapshotter;
}
