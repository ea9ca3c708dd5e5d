import { randomBytes } from "node:crypto";
import { lstatSync, mkdirSync, readFileSync, renameSync, rmdirSync, type Stats } from "node:fs";
import { chmod, lchown, lstat, mkdir, readdir, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
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
   * `work` directory to try. `alone`: as for {@link createDirectory}.
   */
  async removeDirectory(id: number, kind: Kind, alone = false): Promise<void> {
    const directory = this.snapshotDir(id);
    // Most removed snapshots are views and committed layers whose work directory is empty:
    // two or three rmdir calls. Anything else (files, a work/work left by overlayfs) goes the
    // long way.
    if (!(await removeEmptySnapshotDirectory(directory, kind !== Kind.View, alone))) {
      await rm(directory, { recursive: true, force: true });
    }
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
