import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { link, lstat, open, readdir, rename, rm, unlink } from "node:fs/promises";
import { join, resolve } from "node:path";
import { type Logger, silentLogger } from "@nix-snapshotter/nix-store";
import { boltHeadSize, looksLikeBolt, readBoltFile } from "../bolt/bolt-file.js";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { defaultGcRootOwnerPrefix } from "../gc-root-owner.js";
import { mergePaths } from "../merge-paths.js";
import { nixClosureLabel, parseClosureStorePaths, parseNixLabels } from "../nix-labels.js";
import type { NixStorePort } from "../nix-store-port.js";
import { MetadataStore, type SnapshotRecord } from "../storage/metastore.js";
import { Kind } from "../types.js";
import { type GoSnapshot, readGoMetaStore } from "./go-metastore.js";

/**
 * Taking over, in place, a root left by the Go nix-snapshotter (containerd's bolt MetaStore in
 * `<root>/metadata.db`, directories `snapshots/<id>/{fs,work}`, GC roots
 * `gcroots/<id>/<hash>-<name>` made with `nix-store --add-root`). Every snapshot keeps its key,
 * kind, parent, labels, times, usage, id and so its directory.
 *
 * Steps, each safe to interrupt (the next start migrates again or finishes):
 * 1. read the bolt file completely and check it (nothing is written before);
 * 2. give every nix layer our GC roots (realising paths that are not valid);
 * 3. write the new database beside it, `metadata.db.migrating`;
 * 4. keep the old database under a second name, `metadata.go.db` (a hard link);
 * 5. commit: rename the new database over `metadata.db` (one atomic rename);
 * 6. remove the Go `gcroots/` tree (ours exist since step 2);
 * 7. remove `metadata.go.db`: the take-over is complete.
 * Before step 5 the root is still the Go root (a restart starts over: stale files of an earlier
 * attempt are ours and are replaced); after it, the root is ours, and while `metadata.go.db`
 * exists a restart finishes steps 6 and 7.
 */

export const migrationSteps = [
  "read",
  "roots",
  "database-written",
  "old-kept",
  "committed",
  "go-roots-released",
  "done",
] as const;
export type MigrationStep = (typeof migrationSteps)[number];

/** Meta entry of our database: 1 when it was migrated from a Go root. */
export const goMigrationMeta = "go_migration";

const unpackLabel = "containerd.io/snapshot.ref";
const sqliteHeader = Buffer.from("SQLite format 3\0");

export interface MigrateGoRootOptions {
  root: string;
  /** Nix, for the nix layers' GC roots (required when the root has nix layers). */
  nixStore?: NixStorePort | undefined;
  /** Store directory of the labels' paths; default the Nix store's or `/nix/store`. */
  storeDir?: string;
  /** GC root owner prefix; default the snapshotter's for this root. */
  gcRootOwnerPrefix?: string;
  logger?: Logger;
  /** Bound on the size of the Go database (default 1 GiB). */
  maxDatabaseSize?: number;
  /** Called after each step (tests kill the process there). */
  onStep?: (step: MigrationStep) => void | Promise<void>;
}

export interface MigrationResult {
  /** "migrated": a Go root was taken over; "finished": an interrupted one was completed. */
  outcome: "migrated" | "finished";
  snapshots: number;
  committed: number;
  active: number;
  view: number;
  nixLayers: number;
  gcRoots: number;
}

type FileKind = "absent" | "bolt" | "sqlite" | "other";

async function fileKind(path: string): Promise<FileKind> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return "absent";
    throw error;
  }
  try {
    const head = Buffer.alloc(boltHeadSize);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const bytes = head.subarray(0, bytesRead);
    if (bytes.subarray(0, sqliteHeader.length).equals(sqliteHeader)) return "sqlite";
    if (looksLikeBolt(bytes)) return "bolt";
    return "other";
  } finally {
    await handle.close();
  }
}

/** fsync a directory, so the renames in it are durable. */
async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function removeDatabaseFiles(path: string): Promise<void> {
  for (const suffix of ["", "-wal", "-shm", "-journal"]) {
    await rm(`${path}${suffix}`, { force: true });
  }
}

/** Numeric directory names under `<root>/snapshots`. */
async function snapshotDirectories(root: string): Promise<string[]> {
  try {
    return (await readdir(join(root, "snapshots"))).filter((name) => /^[0-9]+$/.test(name));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

/**
 * Takes over a Go nix-snapshotter root in place, or finishes an interrupted take-over. Returns
 * undefined when there is nothing to do (our own root, or a new one). Throws, having changed
 * nothing, on a root that is both Go's and ours or whose bolt database cannot be read; the
 * message names the file and says what to do.
 */
export async function migrateGoRoot(
  options: MigrateGoRootOptions,
): Promise<MigrationResult | undefined> {
  const root = resolve(options.root);
  const logger = options.logger ?? silentLogger;
  const step = async (name: MigrationStep) => {
    await options.onStep?.(name);
  };
  const database = join(root, "metadata.db");
  const old = join(root, "metadata.go.db");
  const next = join(root, "metadata.db.migrating");
  const goRoots = join(root, "gcroots");
  const mixed = (detail: string): SnapshotterError =>
    new SnapshotterError(
      ErrorCode.FailedPrecondition,
      `root ${root} holds state of both the Go nix-snapshotter and this one (${detail}); nothing was changed. Keep the root of the daemon you mean to run and move the other one's files aside`,
    );

  const nixStore = options.nixStore;
  const storeDir = options.storeDir ?? nixStore?.storeDir ?? "/nix/store";
  const ownerPrefix = options.gcRootOwnerPrefix ?? defaultGcRootOwnerPrefix(root);
  const [databaseKind, oldKind] = [await fileKind(database), await fileKind(old)];
  const goRootsExist = existsSync(goRoots);

  if (databaseKind === "sqlite") {
    // Ours. After the commit, the kept Go database marks a take-over whose Go roots may not all
    // be released yet; without it, a Go gcroots/ tree does not belong here.
    if (oldKind === "bolt") return finish(await openRecords(database), "finished");
    if (oldKind !== "absent") throw mixed(`${old} is not a bolt database`);
    if (goRootsExist) throw mixed(`${goRoots} exists beside our ${database}`);
    return undefined;
  }

  if (databaseKind === "absent") {
    if (oldKind !== "absent") {
      throw mixed(`${old} exists but ${database} does not`);
    }
    const orphans = await snapshotDirectories(root);
    if (goRootsExist || orphans.length > 0) {
      throw new SnapshotterError(
        ErrorCode.FailedPrecondition,
        `root ${root} has ${orphans.length} snapshot directories${goRootsExist ? " and a Go gcroots/ tree" : ""} but no ${database}; starting would give new snapshots their ids and delete their directories. Restore metadata.db from a backup, or move the root aside to start empty`,
      );
    }
    return undefined;
  }

  if (databaseKind !== "bolt") return undefined;

  // A Go root. Refuse mixtures before touching anything.
  for (const suffix of ["-wal", "-shm"]) {
    if (existsSync(`${database}${suffix}`))
      throw mixed(`${database}${suffix} beside a bolt ${database}`);
  }
  if (oldKind !== "absent") {
    const [a, b] = await Promise.all([lstat(database), lstat(old)]);
    if (a.ino !== b.ino || a.dev !== b.dev)
      throw mixed(`${old} is not the same file as ${database}`);
  }

  // Step 1: read and check everything.
  let goStore: ReturnType<typeof readGoMetaStore>;
  try {
    goStore = readGoMetaStore(
      await readBoltFile(
        database,
        options.maxDatabaseSize === undefined ? {} : { maxSize: options.maxDatabaseSize },
      ),
    );
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    throw new SnapshotterError(
      SnapshotterError.is(error) ? error.code : ErrorCode.Internal,
      `cannot take over the Go nix-snapshotter's root ${root}: ${detail}. Nothing was changed. Restore ${database} from a backup (the Go daemon can still use the root), or move the root aside to start empty`,
      { cause: error },
    );
  }
  const records = await planRecords(goStore.snapshots, storeDir, logger);
  const nixLayers = records.filter((record) => record.roots.length > 0);
  if (nixLayers.length > 0 && nixStore === undefined) {
    throw new SnapshotterError(
      ErrorCode.FailedPrecondition,
      `root ${root}: ${nixLayers.length} nix layer(s) of the Go nix-snapshotter need GC roots, but the snapshotter has no Nix store; nothing was changed`,
    );
  }
  const present = new Set(await snapshotDirectories(root));
  const missing = records.filter((record) => !present.has(String(record.record.id)));
  if (missing.length > 0) {
    logger.warn(
      { count: missing.length, keys: missing.slice(0, 10).map((record) => record.record.key) },
      "migration: snapshots of the Go database without a directory (kept as they are)",
    );
  }
  await step("read");

  // Step 2: our GC roots, before anything of the Go daemon's is released.
  let gcRoots = 0;
  if (nixStore !== undefined && nixLayers.length > 0) {
    for (const layer of nixLayers) {
      await nixStore.addRoots(ownerPrefix + layer.record.id, layer.roots);
      gcRoots += layer.roots.length;
    }
    const all = [...new Set(nixLayers.flatMap((layer) => layer.roots))];
    const valid = await nixStore.queryValidPaths(all);
    for (const layer of nixLayers) {
      const invalid = layer.roots.filter((path) => !valid.has(path));
      if (invalid.length === 0) continue;
      logger.info(
        { key: layer.record.key, storePaths: invalid.length },
        "migration: realising store paths of a nix layer",
      );
      await nixStore.realise(invalid, { owner: ownerPrefix + layer.record.id });
      for (const path of invalid) valid.add(path);
    }
    for (const layer of nixLayers) {
      if (layer.record.nixClosure === null) continue;
      const listed = parseClosureStorePaths(
        await nixStore.readClosureInfo(layer.record.nixClosure),
        layer.record.nixClosure,
        storeDir,
      );
      layer.record.nixPaths = mergePaths(layer.record.nixPaths, listed);
    }
  }
  // Flattened paths of committed snapshots, parents first.
  const byId = new Map(records.map((planned) => [planned.record.id, planned.record]));
  for (const { record } of records) {
    if (record.kind !== Kind.Committed) continue;
    const parent = record.parentId === null ? undefined : byId.get(record.parentId);
    record.flattened = mergePaths(parent?.flattened ?? [], record.nixPaths);
  }
  await step("roots");

  // Step 3: the new database, beside the old one.
  await removeDatabaseFiles(next);
  const store = new MetadataStore(next);
  try {
    store.transaction(() => {
      for (const { record } of records) store.insertRecord(record);
      store.reserveIdsThrough(goStore.sequence);
      store.setMeta(goMigrationMeta, 1);
    });
    const problems = store.check();
    if (problems.length > 0) {
      throw new SnapshotterError(ErrorCode.Internal, `migrated database: ${problems.join("; ")}`);
    }
  } finally {
    store.close();
  }
  if (existsSync(`${next}-wal`)) {
    throw new SnapshotterError(ErrorCode.Internal, `${next}-wal was left after closing ${next}`);
  }
  await step("database-written");

  // Step 4: keep the Go database under its second name.
  if (oldKind === "absent") await link(database, old);
  await syncDirectory(root);
  await step("old-kept");

  // Step 5: commit.
  await rename(next, database);
  await syncDirectory(root);
  await step("committed");

  const result = await finish(
    records.map((planned) => planned.record),
    "migrated",
  );
  result.gcRoots = gcRoots;
  logger.info(
    { root, ...result, from: old },
    `migrated the Go nix-snapshotter's root: ${result.snapshots} snapshots (${result.committed} committed, ${result.active} active, ${result.view} view), ${result.nixLayers} nix layers with ${gcRoots} GC roots; the Go gcroots/ tree is released`,
  );
  return result;

  async function openRecords(path: string): Promise<SnapshotRecord[]> {
    const opened = new MetadataStore(path);
    try {
      return opened.all();
    } finally {
      opened.close();
    }
  }

  /** Steps 6 and 7: release the Go roots (ours exist), mark done, drop the old database. */
  async function finish(
    all: Array<Omit<SnapshotRecord, "parentKey">>,
    outcome: MigrationResult["outcome"],
  ): Promise<MigrationResult> {
    if (outcome === "finished" && nixStore !== undefined) {
      // Ours were made before the commit; make sure, cheaply (links that exist stay).
      for (const record of all) {
        const own = [
          ...record.nixPaths,
          ...(record.nixClosure === null ? [] : [record.nixClosure]),
        ];
        if (record.nixLayer && own.length > 0)
          await nixStore.addRoots(ownerPrefix + record.id, own);
      }
    }
    if (existsSync(goRoots)) {
      const doomed = join(root, `.gcroots-removing-${randomBytes(4).toString("hex")}`);
      await rename(goRoots, doomed);
      await syncDirectory(root);
      await rm(doomed, { recursive: true, force: true });
    }
    for (const name of await readdir(root)) {
      if (name.startsWith(".gcroots-removing-"))
        await rm(join(root, name), { recursive: true, force: true });
    }
    await step("go-roots-released");
    await unlink(old).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOENT") throw error;
    });
    await removeDatabaseFiles(next);
    await step("done");
    const count = (kind: Kind) => all.filter((record) => record.kind === kind).length;
    const result: MigrationResult = {
      outcome,
      snapshots: all.length,
      committed: count(Kind.Committed),
      active: count(Kind.Active),
      view: count(Kind.View),
      nixLayers: all.filter((record) => record.nixPaths.length > 0 || record.nixClosure !== null)
        .length,
      gcRoots: 0,
    };
    if (outcome === "finished") {
      logger.info(
        { root, ...result },
        "finished an interrupted take-over of the Go nix-snapshotter's root: the Go gcroots/ tree is released",
      );
    }
    return result;
  }
}

interface PlannedRecord {
  record: Omit<SnapshotRecord, "parentKey">;
  /** Store paths that get GC roots of this snapshot. */
  roots: string[];
}

/** Our records for the Go snapshots, parents before children. */
async function planRecords(
  snapshots: readonly GoSnapshot[],
  storeDir: string,
  logger: Logger,
): Promise<PlannedRecord[]> {
  const byKey = new Map(snapshots.map((snapshot) => [snapshot.key, snapshot]));
  const ordered: GoSnapshot[] = [];
  const placed = new Set<string>();
  for (const snapshot of snapshots) {
    const chain: GoSnapshot[] = [];
    let current: GoSnapshot | undefined = snapshot;
    while (current !== undefined && !placed.has(current.key)) {
      if (chain.includes(current)) {
        throw new SnapshotterError(
          ErrorCode.DataLoss,
          `snapshot "${current.key}": its parents form a loop`,
        );
      }
      chain.push(current);
      current = current.parent === "" ? undefined : byKey.get(current.parent);
    }
    for (const item of chain.reverse()) {
      placed.add(item.key);
      ordered.push(item);
    }
  }
  return ordered.map((snapshot) => {
    let storePaths: string[] = [];
    let closure: string | null = null;
    let nixLayer = Object.hasOwn(snapshot.labels, unpackLabel);
    try {
      const request = parseNixLabels(snapshot.labels, storeDir);
      if (request !== undefined) {
        nixLayer = true;
        storePaths = [...request.storePaths];
        closure = request.closure ?? null;
      }
    } catch (error) {
      // The Go daemon trusted any label; we mount only canonical store paths. The labels stay.
      logger.warn(
        { key: snapshot.key, err: error },
        `migration: snapshot "${snapshot.key}" keeps its labels, but gets no store paths (${nixClosureLabel} or nix-store-path label not valid)`,
      );
    }
    return {
      record: {
        id: snapshot.id,
        key: snapshot.key,
        kind: snapshot.kind,
        parentId: snapshot.parent === "" ? null : byKey.get(snapshot.parent)!.id,
        labels: snapshot.labels,
        created: snapshot.created,
        updated: snapshot.updated,
        size: snapshot.size,
        inodes: snapshot.inodes,
        nixPaths: storePaths,
        nixClosure: closure,
        nixLayer,
        linked: false,
        flattened: null,
      },
      roots: closure === null ? storePaths : [...storePaths, closure],
    };
  });
}
