import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { Kind } from "../types.js";
import { MetadataStore } from "./metastore.js";
import {
  latestSchemaVersion,
  migrateSchema,
  schemaMigrations,
  schemaVersionOf,
} from "./migrations.js";

let directory: string;
let path: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-migrations-"));
  path = join(directory, "metadata.db");
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** A database file at schema `version`, made by running the steps up to it. */
function databaseAt(version: number): DatabaseSync {
  const database = new DatabaseSync(path, { enableForeignKeyConstraints: true });
  database.exec("BEGIN IMMEDIATE");
  migrateSchema(database, path, version);
  database.exec("COMMIT");
  expect(schemaVersionOf(database)).toBe(version);
  return database;
}

function columns(database: DatabaseSync, table: string): string[] {
  return (database.prepare(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>).map(
    (row) => row.name,
  );
}

describe("schema migrations", () => {
  it("are numbered 1, 2, ... in order", () => {
    expect(schemaMigrations.map((step) => step.version)).toEqual(
      schemaMigrations.map((_, index) => index + 1),
    );
    expect(latestSchemaVersion).toBe(schemaMigrations.length);
  });

  it("take a new file (version 0) to the latest version", () => {
    const store = new MetadataStore(path);
    const id = store.allocateId();
    store.insert(
      {
        id,
        key: "a",
        kind: Kind.Active,
        parentId: null,
        labels: {},
        nixPaths: [],
        nixClosure: null,
      },
      new Date(),
    );
    store.close();
    const database = new DatabaseSync(path);
    expect(schemaVersionOf(database)).toBe(latestSchemaVersion);
    expect(columns(database, "snapshots")).not.toContain("nix_paths");
    // A plain snapshot has no nix row.
    expect(database.prepare("SELECT count(*) AS n FROM nix_layers").get()).toEqual({ n: 0 });
    database.close();
  });

  it("version 1 -> 2: nix columns move to nix_layers with their data, ids and meta kept", () => {
    const v1 = databaseAt(1);
    expect(columns(v1, "snapshots")).toContain("nix_paths");
    const insert = v1.prepare(
      `INSERT INTO snapshots (id, key, kind, parent_id, labels, created, created_ns, updated,
         updated_ns, size, inodes, nix_paths, nix_closure, nix_layer, linked, flattened)
       VALUES (?, ?, ?, ?, ?, 1000, 7, 2000, 9, ?, ?, ?, ?, ?, ?, ?)`,
    );
    // A plain committed base, a linked nix layer (closure form) on it, an unpack layer without
    // paths, a committed layer above inheriting store paths, and an active container on top.
    insert.run(3, "base", "committed", null, '{"a":"1"}', 10, 2, "[]", null, 0, 0, "[]");
    insert.run(
      5,
      "nix",
      "committed",
      3,
      "{}",
      20,
      3,
      '["/nix/store/aaa-x"]',
      "/nix/store/ccc-closure",
      1,
      1,
      '["/nix/store/aaa-x","/nix/store/bbb-y"]',
    );
    insert.run(6, "extract", "active", 5, "{}", null, null, "[]", null, 1, 0, null);
    insert.run(7, "top", "committed", 5, "{}", 1, 1, "[]", null, 0, 0, '["/nix/store/aaa-x"]');
    insert.run(9, "container", "active", 7, '{"b":"2"}', null, null, "[]", null, 0, 0, null);
    v1.prepare("UPDATE meta SET value = 64 WHERE name = 'sequence'").run();
    v1.prepare("INSERT INTO meta (name, value) VALUES ('go-migration', 1)").run();
    v1.close();

    const store = new MetadataStore(path);
    expect(store.check()).toEqual([]);
    expect(store.getMeta("go-migration")).toBe(1);
    expect(store.allocateId()).toBe(65);
    const byKey = Object.fromEntries(store.all().map((record) => [record.key, record]));
    expect(Object.keys(byKey).sort()).toEqual(["base", "container", "extract", "nix", "top"]);
    expect(byKey.base).toMatchObject({
      id: 3,
      kind: Kind.Committed,
      parentId: null,
      labels: { a: "1" },
      size: 10,
      inodes: 2,
      nixPaths: [],
      nixClosure: null,
      nixLayer: false,
      linked: false,
      flattened: [],
    });
    expect(byKey.base!.created.getTime()).toBe(1000);
    expect(byKey.nix).toMatchObject({
      id: 5,
      parentKey: "base",
      nixPaths: ["/nix/store/aaa-x"],
      nixClosure: "/nix/store/ccc-closure",
      nixLayer: true,
      linked: true,
      flattened: ["/nix/store/aaa-x", "/nix/store/bbb-y"],
    });
    expect(byKey.extract).toMatchObject({
      kind: Kind.Active,
      nixPaths: [],
      nixLayer: true,
      flattened: null,
    });
    expect(byKey.top).toMatchObject({ nixLayer: false, flattened: ["/nix/store/aaa-x"] });
    expect(byKey.container).toMatchObject({
      kind: Kind.Active,
      labels: { b: "2" },
      parentKey: "top",
      nixPaths: [],
      nixLayer: false,
      linked: false,
      flattened: null,
    });
    expect(store.parentIds(byKey.container!)).toEqual([7, 5, 3]);
    // Removing a snapshot takes its nix row with it.
    store.transaction(() => store.delete(9));
    store.transaction(() => store.delete(7));
    store.close();

    const database = new DatabaseSync(path);
    expect(schemaVersionOf(database)).toBe(2);
    expect(columns(database, "snapshots")).toEqual([
      "id",
      "key",
      "kind",
      "parent_id",
      "labels",
      "created",
      "created_ns",
      "updated",
      "updated_ns",
      "size",
      "inodes",
    ]);
    const rows = database
      .prepare("SELECT snapshot_id FROM nix_layers ORDER BY snapshot_id")
      .all() as Array<{ snapshot_id: number }>;
    expect(rows.map((row) => row.snapshot_id)).toEqual([5, 6]);
    database.close();
  });

  it("a failing step leaves the database at its version, unchanged", () => {
    const v1 = databaseAt(1);
    // Something in the way of step 2.
    v1.exec("CREATE TABLE nix_layers (x INTEGER)");
    v1.prepare(
      `INSERT INTO snapshots (id, key, kind, labels, created, updated, nix_paths)
       VALUES (1, 'a', 'active', '{}', 0, 0, '["/nix/store/aaa-x"]')`,
    ).run();
    v1.close();
    let failure: unknown;
    try {
      new MetadataStore(path).close();
    } catch (error) {
      failure = error;
    }
    expect(SnapshotterError.is(failure, ErrorCode.Internal)).toBe(true);
    expect((failure as Error).message).toMatch(/migrating to schema version 2/);
    const database = new DatabaseSync(path);
    expect(schemaVersionOf(database)).toBe(1);
    expect(columns(database, "snapshots")).toContain("nix_paths");
    expect(database.prepare("SELECT nix_paths FROM snapshots WHERE id = 1").get()).toEqual({
      nix_paths: '["/nix/store/aaa-x"]',
    });
    database.close();
  });

  it("refuses a database of a newer version, changing nothing", () => {
    const database = databaseAt(latestSchemaVersion);
    database
      .prepare("UPDATE meta SET value = ? WHERE name = 'schema'")
      .run(latestSchemaVersion + 1);
    database.close();
    let failure: unknown;
    try {
      new MetadataStore(path).close();
    } catch (error) {
      failure = error;
    }
    expect(SnapshotterError.is(failure, ErrorCode.FailedPrecondition)).toBe(true);
    expect((failure as Error).message).toContain(`schema version ${latestSchemaVersion + 1}`);
    const again = new DatabaseSync(path);
    expect(schemaVersionOf(again)).toBe(latestSchemaVersion + 1);
    again.close();
  });
});
