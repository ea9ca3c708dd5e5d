import { randomBytes } from "node:crypto";
import { lstatSync, mkdirSync, readFileSync, renameSync, rmdirSync, type Stats } from "node:fs";
import { chmod, lchown, lstat, mkdir, readdir, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import type { Logger } from "@nix-snapshotter/nix-store";
import { crashAt } from "./crash-point.js";
import { diskUsage } from "./disk-usage.js";
import { SnapshotterError } from "./errors.js";
import { type OverlaySettings, overlayMounts } from "./mount-options.js";
import { Kind, type Mount, type Usage } from "./types.js";

function isErrno(error: unknown, code: string): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === code;
}

/** The process's umask, read without changing it (Linux: /proc/self/status); undefined if unknown. */
function currentUmask(): number | undefined {
  try {
    const match = /^Umask:\s*([0-7]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    return match === null ? undefined : Number.parseInt(match[1]!, 8);
  } catch {
    return undefined;
  }
}

/**
 * rmdir of `fs`, `work` (either may be absent; `work` is not tried for a view, which has none)
 * and `directory`; false when one is not empty. `alone`: synchronous calls (no other call in
 * flight), else through libuv's pool; see docs/decisions/2026-12-06-sync-directory-calls.md.
 */
async function removeEmptySnapshotDirectory(
  directory: string,
  hasWork: boolean,
  alone: boolean,
): Promise<boolean> {
  try {
    for (const child of hasWork ? ["fs", "work"] : ["fs"]) {
      try {
        if (alone) rmdirSync(join(directory, child));
        else await rmdir(join(directory, child));
      } catch (error) {
        if (!isErrno(error, "ENOENT")) throw error;
      }
    }
    if (alone) rmdirSync(directory);
    else await rmdir(directory);
    return true;
  } catch {
    return false;
  }
}

/**
 * The remover thread's program (CommonJS, evaluated): per message, rmdir of each path in order;
 * a path but the last that is absent is skipped. Answers false at the first other failure (a
 * directory that is not empty, or the last path absent), leaving the rest as they are.
 */
const removerSource = `
const { parentPort } = require("node:worker_threads");
const { rmdirSync } = require("node:fs");
parentPort.on("message", (message) => {
  if (message === "close") {
    parentPort.close();
    return;
  }
  const paths = message.paths;
  let ok = true;
  for (let i = 0; i < paths.length; i++) {
    try {
      rmdirSync(paths[i]);
    } catch (error) {
      if (i < paths.length - 1 && error && error.code === "ENOENT") continue;
      ok = false;
      break;
    }
  }
  parentPort.postMessage({ id: message.id, ok });
});
`;

/**
 * Removes empty directories on a thread of its own, one message per call whatever the number of
 * paths: on the event loop that is one message out and one back, where the same rmdir calls
 * through libuv's pool cost a hop each (submit, wake-up, completion, promise). Measured on the
 * 2-core VM: 73-81 us of main-thread CPU for a snapshot's three rmdirs against 128-194 us
 * through the pool (docs/benchmarks/where-the-time-goes.md, session 8). Not on the event loop
 * itself: an rmdir there took 190 us on average and up to 4 ms in steady cycles (ext4 waits on
 * its journal while the WAL or a checkpoint syncs).
 *
 * The thread starts at the first call and keeps the process alive only while a call waits. If
 * it cannot start or dies, the calls waiting and the next ones answer false (the caller goes the
 * long way), and the next call starts a new thread.
 */
export class EmptyDirectoryRemover {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, (removed: boolean) => void>();
  private nextId = 0;
  private closed = false;

  /**
   * rmdir of each of `paths` in order (every one but the last may be absent); true when all went,
   * false at the first that did not (not empty, or the last absent), or when the thread failed
   * or is closed.
   */
  remove(paths: readonly string[]): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    let worker: Worker;
    try {
      worker = this.worker ?? this.start();
    } catch {
      return Promise.resolve(false);
    }
    if (this.waiting.size === 0) worker.ref();
    const id = this.nextId++;
    return new Promise<boolean>((resolve) => {
      this.waiting.set(id, resolve);
      worker.postMessage({ id, paths });
    });
  }

  private start(): Worker {
    const worker = new Worker(removerSource, { eval: true });
    worker.unref();
    worker.on("message", (result: { id: number; ok: boolean }) => {
      const resolve = this.waiting.get(result.id);
      this.waiting.delete(result.id);
      if (this.waiting.size === 0) worker.unref();
      resolve?.(result.ok);
    });
    const gone = () => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      const waiting = [...this.waiting.values()];
      this.waiting.clear();
      for (const resolve of waiting) resolve(false);
    };
    worker.on("error", gone);
    worker.on("exit", gone);
    this.worker = worker;
    return worker;
  }

  /** Ends the thread after the calls sent so far (answered first, in order); later calls answer false. */
  close(): void {
    this.closed = true;
    this.worker?.postMessage("close");
  }
}

/**
 * The overlay file system work of a snapshotter root (like containerd's `snapshots/overlay`):
 * `<root>/snapshots/<id>/{fs,work}`, made and deleted under that name while the caller holds
 * the id (ids are never reused, so a directory left by a kill is an orphan, never another
 * snapshot's), Cleanup of directories nothing owns (claimed by a rename first, in the tick that
 * checks ownership), and the overlay mounts of a snapshot. Knows nothing of metadata or Nix: the
 * caller says which ids are owned.
 */
export class OverlayFilesystem {
  readonly snapshotsDir: string;
  readonly settings: OverlaySettings;
  /** Directory names under snapshots/ that in-flight calls own (Cleanup skips them). */
  private readonly busyNames = new Set<string>();
  /**
   * Cleanup's removal names: a random part drawn once per process, then a counter (unique
   * within the process, and against names left by earlier processes).
   */
  private readonly namePrefix = randomBytes(6).toString("hex");
  private nameCounter = 0;
  /** Removes a removed snapshot's empty directories off the event loop (not alone). */
  private readonly remover = new EmptyDirectoryRemover();
  /** mkdir's mode is exact when the umask clears none of 0755 (no chmod needed after). */
  private readonly umaskKeeps755: boolean;

  constructor(root: string, settings: OverlaySettings) {
    this.snapshotsDir = join(root, "snapshots");
    this.settings = settings;
    const umask = currentUmask();
    this.umaskKeeps755 = umask !== undefined && (umask & 0o755) === 0;
  }

  private uniqueName(kind: string): string {
    return `${kind}-${this.namePrefix}${(this.nameCounter++).toString(36)}`;
  }

  snapshotDir(id: number): string {
    return join(this.snapshotsDir, String(id));
  }

  upperDir(id: number): string {
    return join(this.snapshotDir(id), "fs");
  }

  workDir(id: number): string {
    return join(this.snapshotDir(id), "work");
  }

  /**
   * Makes snapshot `id`'s directory: `fs` (owned like the upper directory of the parent
   * `parentId`, as containerd does) and, for an active snapshot, `work`. The caller holds the
   * id (Cleanup leaves it alone) until the row commits, and {@link discard}s the directory if it
   * does not. A parent whose directory is gone (removed meanwhile) is skipped: the caller's
   * transaction finds it gone and fails. `alone` (no other call in flight): the calls are
   * synchronous on the event loop, each tens of microseconds where a hop through libuv's pool
   * and back costs more; with calls beside it they go through the pool, in parallel with the
   * event loop's other work (docs/decisions/2026-12-06-sync-directory-calls.md).
   */
  async createDirectory(
    id: number,
    kind: typeof Kind.Active | typeof Kind.View,
    parentId: number | undefined,
    alone = false,
  ): Promise<void> {
    const directory = this.snapshotDir(id);
    const upper = join(directory, "fs");
    if (alone) {
      mkdirSync(directory, { mode: 0o700 });
      mkdirSync(upper, { mode: 0o755 });
    } else {
      await mkdir(directory, { mode: 0o700 });
      await mkdir(upper, { mode: 0o755 });
    }
    // The umask is read once at start: a daemon that changes its own umask later is not one.
    if (!this.umaskKeeps755) await chmod(upper, 0o755);
    if (kind === Kind.Active) {
      if (alone) mkdirSync(join(directory, "work"), { mode: 0o711 });
      else await mkdir(join(directory, "work"), { mode: 0o711 });
    }
    crashAt("prepare:directory");
    if (parentId !== undefined) {
      // Like containerd: the new upper directory belongs to whoever owns the parent's.
      let parentStats: Stats;
      try {
        parentStats = alone
          ? lstatSync(this.upperDir(parentId))
          : await lstat(this.upperDir(parentId));
      } catch (error) {
        if (isErrno(error, "ENOENT")) return;
        throw error;
      }
      const own = alone ? lstatSync(upper) : await lstat(upper);
      if (parentStats.uid !== own.uid || parentStats.gid !== own.gid) {
        await lchown(upper, parentStats.uid, parentStats.gid);
      }
    }
  }

  /** Deletes the directory of snapshot `id`, whose row did not commit. */
  async discard(id: number): Promise<void> {
    await rm(this.snapshotDir(id), { recursive: true, force: true });
  }

  /**
   * Deletes the directory of snapshot `id` (nothing when absent; rejects when the deletion
   * fails). The caller holds the id, whose row's deletion is durable. `kind`: a view has no
   * `work` directory to try. `alone`: synchronous, as for {@link createDirectory}; else the
   * rmdir calls go to the {@link EmptyDirectoryRemover}'s thread in one message.
   */
  async removeDirectory(id: number, kind: Kind, alone = false): Promise<void> {
    const directory = this.snapshotDir(id);
    // Most removed snapshots are views and committed layers whose work directory is empty:
    // two or three rmdir calls, on the event loop when alone, else in one message to the
    // remover thread. Anything else (files, a work/work left by overlayfs) goes the long way.
    const removed = alone
      ? await removeEmptySnapshotDirectory(directory, kind !== Kind.View, true)
      : await this.remover.remove(
          kind === Kind.View
            ? [join(directory, "fs"), directory]
            : [join(directory, "fs"), join(directory, "work"), directory],
        );
    if (!removed) await rm(directory, { recursive: true, force: true });
  }

  /** Ends the remover thread (after the removals sent to it); later removals take the pool. */
  close(): void {
    this.remover.close();
  }

  /**
   * Renames `snapshots/<name>` to a fresh `rm-*` name this call owns (until {@link release});
   * undefined when it does not exist. Synchronous, so the caller's check that nothing owns the
   * name and the rename happen without anything running between.
   */
  claimDirectory(name: string): string | undefined {
    const removalName = this.uniqueName("rm");
    try {
      renameSync(join(this.snapshotsDir, name), join(this.snapshotsDir, removalName));
    } catch (error) {
      if (isErrno(error, "ENOENT")) return undefined;
      throw error;
    }
    this.busyNames.add(removalName);
    return removalName;
  }

  /** Deletes a claimed directory (rejects when the deletion fails) and releases its name. */
  async removeClaimed(removalName: string): Promise<void> {
    const directory = join(this.snapshotsDir, removalName);
    try {
      if (!(await removeEmptySnapshotDirectory(directory, true, false))) {
        await rm(directory, { recursive: true, force: true });
      }
    } finally {
      this.busyNames.delete(removalName);
    }
  }

  /**
   * Removes directories under snapshots/ that no snapshot and no call in flight owns. Ownership
   * is checked right before each removal (not from a list read earlier), in the same tick as
   * the rename that claims the directory.
   */
  async removeOrphanedDirectories(owned: (id: number) => boolean, logger: Logger): Promise<void> {
    let entries: string[] = [];
    try {
      entries = await readdir(this.snapshotsDir);
    } catch (error) {
      if (!isErrno(error, "ENOENT")) throw SnapshotterError.from(error, "cleanup");
    }
    for (const name of entries) {
      if (this.busyNames.has(name)) continue;
      if (/^[0-9]+$/.test(name) && owned(Number(name))) continue;
      let removal: string | undefined;
      try {
        removal = this.claimDirectory(name);
      } catch (error) {
        throw SnapshotterError.from(error, `cleanup: snapshot directory ${name}`);
      }
      if (removal === undefined) continue;
      logger.info({ directory: name }, "cleanup: removing orphaned snapshot directory");
      try {
        await this.removeClaimed(removal);
      } catch (error) {
        throw SnapshotterError.from(error, `cleanup: removing snapshot directory ${name}`);
      }
    }
  }

  /** The overlay (or bind) mounts of snapshot `id` on the parent chain `parentIds`. */
  mounts(kind: Kind, id: number, parentIds: readonly number[]): Mount[] {
    return overlayMounts(
      {
        kind,
        upperDir: this.upperDir(id),
        workDir: this.workDir(id),
        lowerDirs: parentIds.map((parentId) => this.upperDir(parentId)),
      },
      this.settings,
    );
  }

  /**
   * Disk usage of the snapshot's own `fs` directory. `alone`: a small tree is walked
   * synchronously, a larger one goes on through the pool (see {@link diskUsage}).
   */
  usage(id: number, alone = false): Promise<Usage> {
    return diskUsage(this.upperDir(id), alone);
  }
}
