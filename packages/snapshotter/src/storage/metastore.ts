import { closeSync, fdatasyncSync, openSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { dirname } from "node:path";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { Worker } from "node:worker_threads";
import { nanosecondsOf, PreciseDate } from "../clock.js";
import { ErrorCode, isNoSpace, SnapshotterError } from "../errors.js";
import { type Info, Kind } from "../types.js";
import { migrateSchema } from "./migrations.js";

/**
 * One snapshot as stored, every column read. `id` never changes (commit renames the key) and is
 * never reused. Only the whole-store reads ({@link MetadataStore.all}) give these: a lookup
 * gives a {@link SnapshotHeader}, without the columns that grow with a nix layer's closure.
 */
export interface SnapshotRecord {
  id: number;
  key: string;
  kind: Kind;
  parentId: number | null;
  labels: Record<string, string>;
  created: Date;
  updated: Date;
  /** Usage recorded at commit; null while active or view. */
  size: number | null;
  inodes: number | null;
  /** Validated store paths requested by this snapshot's own labels (nix layers). */
  nixPaths: string[];
  /** Closure-info store path of the closure form, if any (its root keeps the closure alive). */
  nixClosure: string | null;
  /**
   * The snapshot never gets store mounts itself: it is a nix layer, or a layer being unpacked
   * (its labels carry `containerd.io/snapshot.ref`), which the differ writes into.
   */
  nixLayer: boolean;
  /** The layer's store paths were hard-linked into its directory (hardlink mode). */
  linked: boolean;
  /** Key of the parent ("" when none), read with the row. */
  parentKey: string;
  /**
   * Committed only: every store path of this snapshot and all its ancestors, deduplicated,
   * in first-seen order from the bottom layer up.
   */
  flattened: string[] | null;
}

/**
 * A snapshot without its labels and store path lists, which grow with the closure of a nix layer
 * (thousands of paths, each of them also a label in the per-path form): what lookups return. The
 * lists are read where they are used: {@link MetadataStore.labelsOf},
 * {@link MetadataStore.nixPathsOf}, {@link MetadataStore.flattenedOf}.
 */
export type SnapshotHeader = Omit<SnapshotRecord, "labels" | "nixPaths" | "flattened"> & {
  /** The snapshot's own labels named store paths (`nixPaths` is not empty). */
  hasNixPaths: boolean;
};

interface HeaderRow {
  id: number;
  key: string;
  kind: string;
  parent_id: number | null;
  created: number;
  created_ns: number;
  updated: number;
  updated_ns: number;
  size: number | null;
  inodes: number | null;
  parent_key: string | null;
  nix_closure: string | null;
  no_store_mounts: number | null;
  linked: number | null;
  /** 1 when nix_layers.paths is not the empty list. */
  has_nix_paths: number | null;
}

/** A whole row: the header's columns plus the labels and the closure's lists. */
type Row = Omit<HeaderRow, "has_nix_paths"> & {
  labels: string;
  /** From nix_layers: null when the snapshot has no row there. */
  nix_paths: string | null;
  flattened: string | null;
};

/**
 * Every read joins the parent's key and the nix columns, so Stat and Walk need one query. The
 * generic table (`snapshots`) holds what containerd knows; `nix_layers` what the nix layers add,
 * a row only for snapshots that have something there.
 */
const selectRecord = `SELECT s.*, p.key AS parent_key, n.paths AS nix_paths, n.closure AS nix_closure,
    n.no_store_mounts, n.linked, n.flattened
  FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
  LEFT JOIN nix_layers n ON n.snapshot_id = s.id`;

/**
 * The columns of a {@link SnapshotHeader}: the store path lists and labels are not read.
 * `octet_length` of a TEXT column is its stored size, which SQLite knows without loading the
 * text (an empty list is the 2 bytes `[]`).
 */
const selectHeader = `SELECT s.id, s.key, s.kind, s.parent_id, s.created, s.created_ns, s.updated,
    s.updated_ns, s.size, s.inodes, p.key AS parent_key, n.closure AS nix_closure,
    n.no_store_mounts, n.linked, octet_length(n.paths) > 2 AS has_nix_paths
  FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id
  LEFT JOIN nix_layers n ON n.snapshot_id = s.id`;

/** A header by key, with whether the name bound first is taken (Commit's check). */
const selectForCommit =
  selectHeader.replace(
    "\n  FROM snapshots s",
    ", EXISTS(SELECT 1 FROM snapshots WHERE key = ?) AS name_taken\n  FROM snapshots s",
  ) + " WHERE s.key = ?";

/** A header by key, with whether the snapshot has children (Remove's check). */
const selectForRemoval =
  selectHeader.replace(
    "\n  FROM snapshots s",
    ", EXISTS(SELECT 1 FROM snapshots c WHERE c.parent_id = s.id) AS has_children\n  FROM snapshots s",
  ) + " WHERE s.key = ?";

/** Info of every snapshot but its labels (read through the labels cache). */
const selectInfo = `SELECT s.id, s.key, s.kind, s.created, s.created_ns, s.updated, s.updated_ns,
    p.key AS parent_key
  FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id`;

/**
 * WAL bounds: a checkpoint every this many pages (SQLite's default is 1,000, 4 MB) and the WAL
 * file cut back to this many bytes after one, so the log cannot eat a small root's free space
 * (the full-disk test holds it under 1 MiB). Not fewer pages: the checkpointing thread (below)
 * is asked at about 96 pages, and the more commits it has to end a checkpoint with the WAL
 * copied to its end (so the next commit restarts the WAL), the fewer automatic checkpoints run
 * on the event loop: 128 pages, 46 of them in 600 cycles of the snapshotter-cycles bench; 192
 * pages, 20. The size limit is above the largest WAL of 192 pages, so a restarted WAL is not
 * cut and reallocated (an allocation makes the WAL's fdatasync commit the file system's journal).
 */
const walAutocheckpointPages = 192;
const walSizeLimitBytes = 832 * 1024;

/**
 * Group commit checkpoints on a worker thread (its own connection), after a sync, every this
 * many commits: a commit of the snapshotter writes two to four pages (three in a cycle of plain
 * snapshots), so the thread checkpoints before the WAL reaches the 192 pages above, where the
 * event loop's own automatic checkpoint (kept, in case the thread falls behind) would run. A
 * checkpoint on the event loop costs two fsyncs: measured, 85% of a commit's time. Not fewer
 * commits than this: each checkpoint that empties the WAL costs the thread two fsyncs, and the
 * next commit on the event loop one more (SQLite syncs the header of a restarted WAL).
 */
const commitsPerCheckpoint = 32;

/** At most this many PASSIVE checkpoints per request to the thread (see below). */
const checkpointPasses = 4;

/**
 * The checkpointing thread's program (CommonJS, evaluated): PASSIVE checkpoints per message,
 * never blocking the writer; `synchronous = NORMAL` keeps the checkpoint's syncs (the WAL
 * before copying, the database after). A checkpoint that leaves frames the writer appended
 * meanwhile runs again (up to `checkpointPasses` times): only a WAL copied to its end lets the
 * next commit restart it from its first frame, so it stays under the 192-page automatic
 * checkpoint (which would run on the event loop with its two fsyncs) and within the blocks
 * the file already has (no allocation, so its fdatasync commits no journal entry).
 */
const checkpointerSource = `
const { parentPort, workerData } = require("node:worker_threads");
const { DatabaseSync } = require("node:sqlite");
const database = new DatabaseSync(workerData.path);
database.exec("PRAGMA busy_timeout = 5000");
database.exec("PRAGMA synchronous = NORMAL");
const checkpoint = database.prepare("PRAGMA wal_checkpoint(PASSIVE)");
parentPort.on("message", (message) => {
  if (message === "close") {
    database.close();
    parentPort.close();
    return;
  }
  try {
    let row = checkpoint.get();
    for (let pass = 1; pass < ${checkpointPasses} && row.busy === 0 && row.checkpointed < row.log; pass++) {
      row = checkpoint.get();
    }
    parentPort.postMessage({ ok: true, busy: row.busy, log: row.log, checkpointed: row.checkpointed });
  } catch (error) {
    parentPort.postMessage({ ok: false, message: String(error && error.message) });
  }
});
`;

/**
 * Ids are reserved durably in blocks of this size: one committed write per block instead of one
 * per snapshot. An id is handed out only after its block is committed, so a restart (clean or
 * not) continues after the block and never reuses an id; it may skip the rest of a block.
 */
const idBlockSize = 64;

/** Timestamps are stored as milliseconds plus the nanoseconds within the millisecond. */
function toColumns(date: Date): [number, number] {
  const nanoseconds = nanosecondsOf(date);
  const milliseconds = nanoseconds / 1_000_000n;
  return [Number(milliseconds), Number(nanoseconds - milliseconds * 1_000_000n)];
}

function fromColumns(milliseconds: number, nanoseconds: number): PreciseDate {
  return new PreciseDate(BigInt(milliseconds) * 1_000_000n + BigInt(nanoseconds));
}

interface InfoRow {
  id: number;
  key: string;
  kind: string;
  created: number;
  created_ns: number;
  updated: number;
  updated_ns: number;
  parent_key: string | null;
}

function toRecord(row: Row): SnapshotRecord {
  const kind = row.kind as Kind;
  return {
    id: row.id,
    key: row.key,
    kind,
    parentId: row.parent_id,
    labels: JSON.parse(row.labels) as Record<string, string>,
    created: fromColumns(row.created, row.created_ns),
    updated: fromColumns(row.updated, row.updated_ns),
    size: row.size,
    inodes: row.inodes,
    nixPaths: row.nix_paths === null ? [] : (JSON.parse(row.nix_paths) as string[]),
    nixClosure: row.nix_closure,
    nixLayer: (row.no_store_mounts ?? 0) !== 0,
    linked: (row.linked ?? 0) !== 0,
    parentKey: row.parent_key ?? "",
    flattened:
      row.flattened !== null
        ? (JSON.parse(row.flattened) as string[])
        : kind === Kind.Committed
          ? []
          : null,
  };
}

function toHeader(row: HeaderRow): SnapshotHeader {
  return {
    id: row.id,
    key: row.key,
    kind: row.kind as Kind,
    parentId: row.parent_id,
    created: fromColumns(row.created, row.created_ns),
    updated: fromColumns(row.updated, row.updated_ns),
    size: row.size,
    inodes: row.inodes,
    nixClosure: row.nix_closure,
    nixLayer: (row.no_store_mounts ?? 0) !== 0,
    linked: (row.linked ?? 0) !== 0,
    parentKey: row.parent_key ?? "",
    hasNixPaths: (row.has_nix_paths ?? 0) !== 0,
  };
}

export interface NewSnapshot {
  id: number;
  key: string;
  kind: typeof Kind.Active | typeof Kind.View;
  parentId: number | null;
  labels: Record<string, string>;
  nixPaths: string[];
  nixClosure: string | null;
  nixLayer?: boolean;
}

export interface MetadataStoreOptions {
  /**
   * Group commit. false (the default): every COMMIT fsyncs the WAL on the calling thread
   * (`synchronous = FULL`). true: COMMIT only writes the WAL (`synchronous = NORMAL`, which
   * survives kill -9), and {@link MetadataStore.durable} makes it survive power loss: one
   * `fdatasync` of the WAL on libuv's pool for every commit made before it started, so the event
   * loop serves other calls meanwhile and concurrent commits share one sync. A caller
   * acknowledges a mutation (or deletes what a commit released) only after `durable()`.
   */
  groupCommit?: boolean;
}

const resolved: Promise<void> = Promise.resolve();

/**
 * The metadata store: one SQLite database in WAL mode. Every mutating call of the snapshotter
 * runs in one `transaction` (BEGIN IMMEDIATE ... COMMIT); node:sqlite is synchronous, so a
 * transaction never spans an await.
 *
 * With group commit, checkpoints stay safe: SQLite syncs the WAL before it copies pages into the
 * database and the database after (`synchronous = NORMAL` keeps those syncs), so a checkpoint
 * never writes a page that is not durable in the WAL first, and a WAL restarted after one
 * overwrites only frames that are in the synced database already.
 */
export class MetadataStore {
  private readonly database: DatabaseSync;
  private closed = false;
  private depth = 0;
  /** Prepared statements by SQL text: compiling one costs more than running it. */
  private readonly statements = new Map<string, StatementSync>();
  /** The next id to hand out and the last id of the committed reservation. */
  private nextId = 1;
  private reservedUntil = 0;
  /** The open transaction reserved a block (a rollback un-reserves it). */
  private reservedInTransaction = false;
  /** The commit (count) that reserved the current block in its own transaction. */
  private reservedAt = 0;
  /**
   * Parsed labels by snapshot id, frozen and shared by the Infos that Stat, Walk and List give:
   * containerd's collector Walks every snapshot after each removal, and a nix layer in the
   * per-path form has one label per store path. Kept current by this store's own writes (each
   * drops the entry of the snapshot it writes); a rollback drops them all. The daemon is the
   * only writer of its database.
   */
  private readonly labelsCache = new Map<number, Readonly<Record<string, string>>>();

  private readonly path: string;
  private readonly groupCommit: boolean;
  /** COMMIT leaves the sync to {@link durable} (group commit, once open). */
  private deferSync = false;
  /** Group commit: outer transactions committed, and how many of them are known durable. */
  private committed = 0;
  private synced = 0;
  /** The sync in flight (it never rejects: a failure is kept in `syncFailure`). */
  private syncing: Promise<void> | undefined;
  /** A failed sync: what it covered may be lost, so the store acknowledges nothing after it. */
  private syncFailure: SnapshotterError | undefined;
  /** The WAL, open for its syncs (group commit). */
  private walHandle: FileHandle | undefined;
  /** Group commit: the checkpointing thread, whether it works now, commits since it last did. */
  private checkpointer: Worker | undefined;
  private checkpointing = false;
  private commitsSinceCheckpoint = 0;
  /** Checkpoints the thread completed (for tests and diagnostics). */
  checkpointsOffThread = 0;

  constructor(path: string, options: MetadataStoreOptions = {}) {
    this.path = path;
    this.groupCommit = options.groupCommit ?? false;
    this.database = new DatabaseSync(path, { enableForeignKeyConstraints: true });
    // First: the checkpointing thread of a store closed just before may still be closing its
    // connection (the last one checkpoints and removes the WAL).
    this.database.exec("PRAGMA busy_timeout = 5000");
    this.database.exec("PRAGMA journal_mode = WAL");
    // Opening (and migrating) always syncs each commit; group commit starts after.
    this.database.exec("PRAGMA synchronous = FULL");
    this.database.exec(`PRAGMA wal_autocheckpoint = ${walAutocheckpointPages}`);
    this.database.exec(`PRAGMA journal_size_limit = ${walSizeLimitBytes}`);
    try {
      this.transaction(() => migrateSchema(this.database, path));
      if (this.groupCommit) {
        this.database.exec("PRAGMA synchronous = NORMAL");
        this.deferSync = true;
      }
    } catch (error) {
      this.close();
      throw error;
    }
  }

  /**
   * Resolves once every transaction committed so far is durable (at once when it is already, or
   * without group commit). Concurrent callers share one sync: callers that come while a sync
   * runs wait for it, then one sync covers all of them. Rejects (Unavailable) if a sync failed:
   * after a failed fsync the kernel may have dropped the pages, so nothing is acknowledged
   * until the daemon restarts and SQLite recovers from what is on the disk.
   */
  durable(): Promise<void> {
    if (this.syncFailure !== undefined) return Promise.reject(this.syncFailure);
    if (this.synced >= this.committed) return resolved;
    return this.waitForSync(this.committed);
  }

  /**
   * Resolves once the reservation of the ids handed out so far is durable (group commit): a
   * caller names files after an id only then, so power loss cannot hand the same id out again
   * beside a file left with that name.
   */
  idsDurable(): Promise<void> {
    if (this.syncFailure !== undefined) return Promise.reject(this.syncFailure);
    if (this.synced >= this.reservedAt) return resolved;
    return this.waitForSync(this.reservedAt);
  }

  /** Commits made and not known durable yet (group commit only). */
  get unsyncedCommits(): number {
    return this.committed - this.synced;
  }

  private async waitForSync(target: number): Promise<void> {
    while (this.synced < target) {
      if (this.syncFailure !== undefined) throw this.syncFailure;
      this.syncing ??= this.syncOnce();
      await this.syncing;
    }
    if (this.syncFailure !== undefined) throw this.syncFailure;
  }

  private async syncOnce(): Promise<void> {
    // Everything committed before the sync starts is in the WAL file's pages: this sync covers it.
    const upTo = this.committed;
    try {
      await this.syncWal(`${this.path}-wal`);
      this.synced = Math.max(this.synced, upTo);
      this.checkpointOffThread();
    } catch (error) {
      if (this.closed) {
        // close() checkpointed (with its syncs) and removed the WAL: all of it is durable.
        this.synced = Math.max(this.synced, upTo);
      } else {
        this.syncFailure = new SnapshotterError(
          ErrorCode.Unavailable,
          `metadata database ${this.path}: syncing the WAL failed (${(error as Error).message}); restart the snapshotter`,
          { cause: error },
        );
      }
    } finally {
      this.syncing = undefined;
    }
  }

  /**
   * Asks the checkpointing thread for a PASSIVE checkpoint when enough commits went into the WAL
   * since the last one and none runs. If the thread cannot start or fails, the connection's own
   * automatic checkpoint (192 pages) still keeps the WAL bounded.
   */
  private checkpointOffThread(): void {
    if (this.closed || this.checkpointing || this.commitsSinceCheckpoint < commitsPerCheckpoint) {
      return;
    }
    if (this.checkpointer === undefined) {
      try {
        const worker = new Worker(checkpointerSource, {
          eval: true,
          workerData: { path: this.path },
        });
        worker.unref();
        worker.on("message", (result: { ok: boolean }) => {
          this.checkpointing = false;
          if (result.ok) this.checkpointsOffThread++;
        });
        const gone = () => {
          if (this.checkpointer === worker) this.checkpointer = undefined;
          this.checkpointing = false;
        };
        worker.on("error", gone);
        worker.on("exit", gone);
        this.checkpointer = worker;
      } catch {
        return;
      }
    }
    this.checkpointing = true;
    this.commitsSinceCheckpoint = 0;
    this.checkpointer.postMessage("checkpoint");
  }

  /**
   * Makes the WAL file durable: `fdatasync` on libuv's pool of a handle opened at the first sync
   * (its directory is synced then too, so the file's name is durable as well). While this
   * connection is open SQLite never deletes the WAL (only the last connection to close does),
   * so the handle stays the file's. A seam for tests, which hold it to see what waits for it.
   */
  async syncWal(walPath: string): Promise<void> {
    if (this.walHandle === undefined) {
      const handle = await open(walPath, "r");
      try {
        const directory = await open(dirname(walPath), "r");
        try {
          await directory.sync();
        } finally {
          await directory.close();
        }
      } catch (error) {
        await handle.close();
        throw error;
      }
      if (this.closed) {
        await handle.close();
        return;
      }
      this.walHandle = handle;
    }
    await this.walHandle.datasync();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.statements.clear();
    // Commits not synced yet are synced here, on the calling thread (once, at close): the close
    // of the connection checkpoints only when no other connection (the checkpointer) is open.
    if (this.committed > this.synced && this.syncFailure === undefined) {
      try {
        const paths = [`${this.path}-wal`];
        if (this.walHandle === undefined) paths.push(dirname(this.path));
        for (const path of paths) {
          const fd = openSync(path, "r");
          try {
            fdatasyncSync(fd);
          } finally {
            closeSync(fd);
          }
        }
      } catch (error) {
        this.syncFailure = new SnapshotterError(
          ErrorCode.Unavailable,
          `metadata database ${this.path}: syncing the WAL at close failed (${(error as Error).message})`,
          { cause: error },
        );
      }
    }
    this.labelsCache.clear();
    this.database.close();
    this.checkpointer?.postMessage("close");
    this.checkpointer = undefined;
    // A sync in flight on it fails and counts as done (closed): everything is durable now.
    this.walHandle?.close().catch(() => undefined);
    this.walHandle = undefined;
    if (this.syncFailure === undefined) this.synced = this.committed;
  }

  private ensureOpen(): void {
    if (this.closed) {
      throw new SnapshotterError(ErrorCode.Unavailable, "snapshotter is closed");
    }
  }

  /** Runs fn in one write transaction; rolls back if it throws. Nested calls join the outer one. */
  transaction<T>(fn: () => T): T {
    this.ensureOpen();
    if (this.depth > 0) return fn();
    this.database.exec("BEGIN IMMEDIATE");
    this.depth++;
    try {
      const result = fn();
      this.database.exec("COMMIT");
      // Synced by COMMIT itself (synchronous = FULL) unless group commit is on.
      if (this.deferSync) {
        this.committed++;
        this.commitsSinceCheckpoint++;
      }
      return result;
    } catch (error) {
      if (this.database.isTransaction) this.database.exec("ROLLBACK");
      // Labels read inside the transaction may be gone with it.
      this.labelsCache.clear();
      // The block's reservation is gone: read the sequence again on the next allocation.
      if (this.reservedInTransaction) this.reservedUntil = 0;
      if (isNoSpace(error)) {
        // Give the log's space back to the file system: a full disk must not keep a WAL full
        // of pages that are in the database already.
        this.checkpoint();
        throw new SnapshotterError(
          ErrorCode.ResourceExhausted,
          `metadata database ${this.path}: no space left on the device (${(error as Error).message})`,
          { cause: error },
        );
      }
      throw error;
    } finally {
      this.depth--;
      this.reservedInTransaction = false;
    }
  }

  /**
   * Copies the WAL into the database and truncates it to zero bytes (best effort: on a full
   * disk the copy may fail; the next call tries again). Returns whether it completed.
   */
  checkpoint(): boolean {
    if (this.closed || this.database.isTransaction) return false;
    try {
      const row = this.database.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get() as
        | { busy: number }
        | undefined;
      return row?.busy === 0;
    } catch {
      return false;
    }
  }

  /** A compiled statement for `sql`, prepared once per store. */
  private statement(sql: string): StatementSync {
    let statement = this.statements.get(sql);
    if (statement === undefined) {
      statement = this.database.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  /**
   * A fresh snapshot id, never handed out before. When the current block is used up, reserves
   * the next one in a committed write (its own transaction, or the caller's: if that one rolls
   * back, so does the reservation, and the ids it gave out, like a single id before).
   */
  allocateId(): number {
    this.ensureOpen();
    if (this.nextId > this.reservedUntil) {
      const row = this.transaction(
        () =>
          this.statement(
            "UPDATE meta SET value = value + ? WHERE name = 'sequence' RETURNING value",
          ).get(idBlockSize) as { value: number },
      );
      if (this.depth > 0) this.reservedInTransaction = true;
      else this.reservedAt = this.committed;
      this.reservedUntil = row.value;
      this.nextId = row.value - idBlockSize + 1;
    }
    return this.nextId++;
  }

  private one(sql: string, ...parameters: SQLInputValue[]): SnapshotHeader | undefined {
    this.ensureOpen();
    const row = this.statement(sql).get(...parameters) as HeaderRow | undefined;
    return row === undefined ? undefined : toHeader(row);
  }

  getByKey(key: string): SnapshotHeader | undefined {
    return this.one(`${selectHeader} WHERE s.key = ?`, key);
  }

  getById(id: number): SnapshotHeader | undefined {
    return this.one(`${selectHeader} WHERE s.id = ?`, id);
  }

  /**
   * Create's first check in one read: whether `key` is taken, and the header of snapshot
   * `parent` (undefined when there is none; not read for "").
   */
  createCheck(key: string, parent: string): { taken: boolean; parent: SnapshotHeader | undefined } {
    this.ensureOpen();
    if (parent === "") return { taken: this.idOf(key) !== undefined, parent: undefined };
    const row = this.statement(
      `SELECT EXISTS(SELECT 1 FROM snapshots WHERE key = ?) AS taken, h.*
         FROM (SELECT 1) LEFT JOIN (${selectHeader} WHERE s.key = ?) h ON 1`,
    ).get(key, parent) as
      | (Omit<HeaderRow, "id"> & { id: number | null; taken: number })
      | undefined;
    if (row === undefined) return { taken: false, parent: undefined };
    return {
      taken: row.taken !== 0,
      parent: row.id === null ? undefined : toHeader(row as HeaderRow),
    };
  }

  /**
   * Create's check again, inside its transaction, in one read: whether `key` is taken now and
   * whether snapshot `parentId` (checked before) is still there and committed.
   */
  createRecheck(
    key: string,
    parentId: number | null,
  ): { taken: boolean; parentCommitted: boolean } {
    this.ensureOpen();
    if (parentId === null) return { taken: this.idOf(key) !== undefined, parentCommitted: true };
    const row = this.statement(
      `SELECT EXISTS(SELECT 1 FROM snapshots WHERE key = ?) AS taken,
         EXISTS(SELECT 1 FROM snapshots WHERE id = ? AND kind = 'committed') AS parent_committed`,
    ).get(key, parentId) as { taken: number; parent_committed: number };
    return { taken: row.taken !== 0, parentCommitted: row.parent_committed !== 0 };
  }

  /** Commit's first check in one read: the header of `key` and whether `name` is taken. */
  commitCheck(key: string, name: string): (SnapshotHeader & { nameTaken: boolean }) | undefined {
    this.ensureOpen();
    const row = this.statement(selectForCommit).get(name, key) as
      | (HeaderRow & { name_taken: number })
      | undefined;
    return row === undefined ? undefined : { ...toHeader(row), nameTaken: row.name_taken !== 0 };
  }

  /**
   * Commit's check again, inside its transaction, in one read: the kind of snapshot `id` if it
   * is still named `key` (undefined otherwise) and whether `name` is taken now.
   */
  commitRecheck(
    id: number,
    key: string,
    name: string,
  ): { kind: Kind | undefined; nameTaken: boolean } {
    this.ensureOpen();
    const row = this.statement(
      `SELECT (SELECT kind FROM snapshots WHERE id = ? AND key = ?) AS kind,
         EXISTS(SELECT 1 FROM snapshots WHERE key = ?) AS name_taken`,
    ).get(id, key, name) as { kind: string | null; name_taken: number };
    return { kind: (row.kind ?? undefined) as Kind | undefined, nameTaken: row.name_taken !== 0 };
  }

  /** The header of `key` and whether it has children, in one read (Remove). */
  removalCheck(key: string): (SnapshotHeader & { hasChildren: boolean }) | undefined {
    this.ensureOpen();
    const row = this.statement(selectForRemoval).get(key) as
      | (HeaderRow & { has_children: number })
      | undefined;
    return row === undefined
      ? undefined
      : { ...toHeader(row), hasChildren: row.has_children !== 0 };
  }

  /** The id of snapshot `key`, if there is one. */
  idOf(key: string): number | undefined {
    this.ensureOpen();
    const row = this.statement("SELECT id FROM snapshots WHERE key = ?").get(key) as
      | { id: number }
      | undefined;
    return row?.id;
  }

  /** Every column of snapshot `id` (the lists parsed). */
  getRecordById(id: number): SnapshotRecord | undefined {
    this.ensureOpen();
    const row = this.statement(`${selectRecord} WHERE s.id = ?`).get(id) as Row | undefined;
    return row === undefined ? undefined : toRecord(row);
  }

  /** The labels of snapshot `id`, a copy the caller may change ({} when there is no such snapshot). */
  labelsOf(id: number): Record<string, string> {
    return { ...this.sharedLabels(id) };
  }

  /** The labels of snapshot `id`, frozen, from the cache ({} when there is no such snapshot). */
  private sharedLabels(id: number): Readonly<Record<string, string>> {
    this.ensureOpen();
    const cached = this.labelsCache.get(id);
    if (cached !== undefined) return cached;
    const row = this.statement("SELECT labels FROM snapshots WHERE id = ?").get(id) as
      | { labels: string }
      | undefined;
    if (row === undefined) return {};
    const labels = Object.freeze(JSON.parse(row.labels) as Record<string, string>);
    this.labelsCache.set(id, labels);
    return labels;
  }

  /** The store paths that snapshot `id`'s own labels named ([] when none). */
  nixPathsOf(id: number): string[] {
    this.ensureOpen();
    const row = this.statement("SELECT paths FROM nix_layers WHERE snapshot_id = ?").get(id) as
      | { paths: string }
      | undefined;
    return row === undefined ? [] : (JSON.parse(row.paths) as string[]);
  }

  /**
   * Every store path of committed snapshot `id` and its ancestors ([] for a committed snapshot
   * without any, or no such snapshot; null while active or view).
   */
  flattenedOf(id: number): string[] | null {
    this.ensureOpen();
    const row = this.statement(
      `SELECT s.kind, n.flattened FROM snapshots s LEFT JOIN nix_layers n ON n.snapshot_id = s.id
         WHERE s.id = ?`,
    ).get(id) as { kind: string; flattened: string | null } | undefined;
    if (row === undefined) return [];
    if (row.flattened !== null) return JSON.parse(row.flattened) as string[];
    return row.kind === Kind.Committed ? [] : null;
  }

  /** Ids of the parent chain of a snapshot: its parent first, the bottom layer last. */
  parentIds(record: Pick<SnapshotHeader, "parentId">): number[] {
    if (record.parentId === null) return [];
    this.ensureOpen();
    const rows = this.statement(
      `WITH RECURSIVE chain(id, parent_id, depth) AS (
           SELECT id, parent_id, 0 FROM snapshots WHERE id = ?
           UNION ALL
           SELECT s.id, s.parent_id, chain.depth + 1 FROM snapshots s JOIN chain ON s.id = chain.parent_id
         )
         SELECT id FROM chain ORDER BY depth`,
    ).all(record.parentId) as Array<{ id: number }>;
    return rows.map((row) => row.id);
  }

  hasChildren(id: number): boolean {
    this.ensureOpen();
    return (
      this.statement("SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1").get(id) !== undefined
    );
  }

  /**
   * Inserts an active or view snapshot. With `parentKey` (the parent's key, "" for none) the
   * header returned is made from what was written; without it, read back.
   */
  insert(snapshot: NewSnapshot, now: Date, parentKey?: string): SnapshotHeader {
    this.ensureOpen();
    this.labelsCache.delete(snapshot.id);
    const [milliseconds, nanoseconds] = toColumns(now);
    this.statement(
      `INSERT INTO snapshots (id, key, kind, parent_id, labels, created, created_ns, updated, updated_ns)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      snapshot.id,
      snapshot.key,
      snapshot.kind,
      snapshot.parentId,
      JSON.stringify(snapshot.labels),
      milliseconds,
      nanoseconds,
      milliseconds,
      nanoseconds,
    );
    const noStoreMounts = snapshot.nixLayer === true;
    if (snapshot.nixPaths.length > 0 || snapshot.nixClosure !== null || noStoreMounts) {
      this.insertNix(
        snapshot.id,
        snapshot.nixPaths,
        snapshot.nixClosure,
        noStoreMounts,
        false,
        null,
      );
    }
    if (parentKey === undefined) return this.getById(snapshot.id)!;
    return {
      id: snapshot.id,
      key: snapshot.key,
      kind: snapshot.kind,
      parentId: snapshot.parentId,
      created: fromColumns(milliseconds, nanoseconds),
      updated: fromColumns(milliseconds, nanoseconds),
      size: null,
      inodes: null,
      nixClosure: snapshot.nixClosure,
      nixLayer: noStoreMounts,
      linked: false,
      parentKey,
      hasNixPaths: snapshot.nixPaths.length > 0,
    };
  }

  /**
   * Inserts a snapshot with every field given, keeping its id (a migration from another store).
   * Call inside a transaction, parents before children; then {@link reserveIdsThrough}.
   */
  insertRecord(record: Omit<SnapshotRecord, "parentKey">): void {
    this.ensureOpen();
    this.labelsCache.delete(record.id);
    this.statement(
      `INSERT INTO snapshots (id, key, kind, parent_id, labels, created, created_ns, updated, updated_ns,
           size, inodes)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      record.id,
      record.key,
      record.kind,
      record.parentId,
      JSON.stringify(record.labels),
      ...toColumns(record.created),
      ...toColumns(record.updated),
      record.size,
      record.inodes,
    );
    if (
      record.nixPaths.length > 0 ||
      record.nixClosure !== null ||
      record.nixLayer ||
      record.linked ||
      (record.flattened !== null && record.flattened.length > 0)
    ) {
      this.insertNix(
        record.id,
        record.nixPaths,
        record.nixClosure,
        record.nixLayer,
        record.linked,
        record.flattened,
      );
    }
  }

  private insertNix(
    id: number,
    paths: readonly string[],
    closure: string | null,
    noStoreMounts: boolean,
    linked: boolean,
    flattened: readonly string[] | null,
  ): void {
    this.statement(
      `INSERT INTO nix_layers (snapshot_id, paths, closure, no_store_mounts, linked, flattened)
         VALUES (?, ?, ?, ?, ?, ?)`,
    ).run(
      id,
      JSON.stringify(paths),
      closure,
      noStoreMounts ? 1 : 0,
      linked ? 1 : 0,
      flattened === null ? null : JSON.stringify(flattened),
    );
  }

  /** Makes every id up to `sequence` count as handed out: the next one is above it. */
  reserveIdsThrough(sequence: number): void {
    this.ensureOpen();
    this.statement("UPDATE meta SET value = max(value, ?) WHERE name = 'sequence'").run(sequence);
    this.reservedUntil = 0;
    this.nextId = 1;
  }

  /** An integer kept in the meta table under `name` (not the schema or sequence). */
  getMeta(name: string): number | undefined {
    this.ensureOpen();
    const row = this.statement("SELECT value FROM meta WHERE name = ?").get(name) as
      | { value: number }
      | undefined;
    return row?.value;
  }

  setMeta(name: string, value: number): void {
    this.ensureOpen();
    if (name === "schema" || name === "sequence") {
      throw new SnapshotterError(ErrorCode.InvalidArgument, `meta "${name}" is not settable`);
    }
    this.statement(
      "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    ).run(name, value);
  }

  /** Turns an active snapshot into a committed one named `name` (same id). */
  commit(
    id: number,
    name: string,
    labels: Record<string, string>,
    usage: { size: number; inodes: number },
    flattened: string[],
    now: Date,
  ): void {
    this.ensureOpen();
    this.labelsCache.delete(id);
    this.statement(
      `UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, created = ?, created_ns = ?,
           updated = ?, updated_ns = ?, size = ?, inodes = ? WHERE id = ?`,
    ).run(
      name,
      JSON.stringify(labels),
      ...toColumns(now),
      ...toColumns(now),
      usage.size,
      usage.inodes,
      id,
    );
    // A committed snapshot without a nix row has no store paths (flattened reads as []).
    if (flattened.length > 0) {
      this.statement(
        `INSERT INTO nix_layers (snapshot_id, flattened) VALUES (?, ?)
           ON CONFLICT (snapshot_id) DO UPDATE SET flattened = excluded.flattened`,
      ).run(id, JSON.stringify(flattened));
    }
  }

  markLinked(id: number): void {
    this.ensureOpen();
    this.statement(
      `INSERT INTO nix_layers (snapshot_id, linked) VALUES (?, 1)
         ON CONFLICT (snapshot_id) DO UPDATE SET linked = 1`,
    ).run(id);
  }

  updateLabels(id: number, labels: Record<string, string>, now: Date): void {
    this.ensureOpen();
    this.labelsCache.delete(id);
    this.statement("UPDATE snapshots SET labels = ?, updated = ?, updated_ns = ? WHERE id = ?").run(
      JSON.stringify(labels),
      ...toColumns(now),
      id,
    );
  }

  /** Deletes the snapshot's row (its nix_layers row goes with it: ON DELETE CASCADE). */
  delete(id: number): void {
    this.ensureOpen();
    this.labelsCache.delete(id);
    this.statement("DELETE FROM snapshots WHERE id = ?").run(id);
  }

  /** Every snapshot with every column, in key order (checks, migrations, tests). */
  all(): SnapshotRecord[] {
    this.ensureOpen();
    return (this.statement(`${selectRecord} ORDER BY s.key`).all() as unknown as Row[]).map(
      toRecord,
    );
  }

  /** The header of every snapshot, in id order (creation order: parents before children). */
  headers(): SnapshotHeader[] {
    this.ensureOpen();
    return (this.statement(`${selectHeader} ORDER BY s.id`).all() as unknown as HeaderRow[]).map(
      toHeader,
    );
  }

  ids(): Set<number> {
    this.ensureOpen();
    const rows = this.statement("SELECT id FROM snapshots").all() as Array<{ id: number }>;
    return new Set(rows.map((row) => row.id));
  }

  /** SQLite's own integrity and foreign-key checks; [] when consistent. */
  check(): string[] {
    this.ensureOpen();
    const problems: string[] = [];
    const integrity = this.database.prepare("PRAGMA integrity_check").all() as Array<
      Record<string, string>
    >;
    for (const row of integrity) {
      const message = Object.values(row)[0];
      if (message !== "ok") problems.push(`integrity: ${message}`);
    }
    const foreign = this.database.prepare("PRAGMA foreign_key_check").all();
    for (const row of foreign) problems.push(`foreign key: ${JSON.stringify(row)}`);
    return problems;
  }

  /** Info of every snapshot, in key order: labels as {@link info} gives them, no store path lists. */
  allInfos(): Info[] {
    this.ensureOpen();
    const rows = this.statement(`${selectInfo} ORDER BY s.key`).all() as unknown as InfoRow[];
    return rows.map((row) => ({
      kind: row.kind as Kind,
      name: row.key,
      parent: row.parent_key ?? "",
      labels: this.sharedLabels(row.id) as Record<string, string>,
      created: fromColumns(row.created, row.created_ns),
      updated: fromColumns(row.updated, row.updated_ns),
    }));
  }

  /**
   * Info of a snapshot, with the parent's name. Its labels object is frozen and shared (see
   * {@link labelsCache}): copy it to change it.
   */
  info(record: SnapshotHeader): Info {
    return {
      kind: record.kind,
      name: record.key,
      parent: record.parentKey,
      labels: this.sharedLabels(record.id) as Record<string, string>,
      created: record.created,
      updated: record.updated,
    };
  }
}
