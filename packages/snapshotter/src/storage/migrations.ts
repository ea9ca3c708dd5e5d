import type { DatabaseSync } from "node:sqlite";
import { ErrorCode, SnapshotterError } from "../errors.js";

/**
 * One step of the metadata schema: it takes a database at `version - 1` to `version`. Steps run
 * in order, all of them in the caller's transaction, when a store is opened. A step is never
 * changed once released (databases at its version exist): a change of schema is a new step.
 */
export interface SchemaMigration {
  version: number;
  description: string;
  up(database: DatabaseSync): void;
}

/**
 * The schema's history, oldest first. Version 0 is an empty database; `meta.schema` holds the
 * version a database is at (the `meta` table is created by step 1).
 */
export const schemaMigrations: readonly SchemaMigration[] = [
  {
    version: 1,
    description: "snapshots with their nix columns, meta (schema, id sequence)",
    up(database) {
      database.exec(`
CREATE TABLE meta (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) STRICT;
CREATE TABLE snapshots (
  id INTEGER PRIMARY KEY,
  key TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
  parent_id INTEGER REFERENCES snapshots(id),
  labels TEXT NOT NULL,
  created INTEGER NOT NULL,
  created_ns INTEGER NOT NULL DEFAULT 0,
  updated INTEGER NOT NULL,
  updated_ns INTEGER NOT NULL DEFAULT 0,
  size INTEGER,
  inodes INTEGER,
  nix_paths TEXT NOT NULL DEFAULT '[]',
  nix_closure TEXT,
  nix_layer INTEGER NOT NULL DEFAULT 0,
  linked INTEGER NOT NULL DEFAULT 0,
  flattened TEXT
) STRICT;
CREATE INDEX snapshots_parent ON snapshots(parent_id);
INSERT INTO meta (name, value) VALUES ('schema', 1), ('sequence', 0);
`);
    },
  },
  {
    version: 2,
    description:
      "nix columns move to their own table (nix_layers, a row only where there is something to keep)",
    up(database) {
      database.exec(`
CREATE TABLE nix_layers (
  snapshot_id INTEGER PRIMARY KEY REFERENCES snapshots(id) ON DELETE CASCADE,
  paths TEXT NOT NULL DEFAULT '[]',
  closure TEXT,
  no_store_mounts INTEGER NOT NULL DEFAULT 0,
  linked INTEGER NOT NULL DEFAULT 0,
  flattened TEXT
) STRICT;
INSERT INTO nix_layers (snapshot_id, paths, closure, no_store_mounts, linked, flattened)
  SELECT id, nix_paths, nix_closure, nix_layer, linked, flattened FROM snapshots
  WHERE nix_paths != '[]' OR nix_closure IS NOT NULL OR nix_layer != 0 OR linked != 0
     OR (flattened IS NOT NULL AND flattened != '[]');
ALTER TABLE snapshots DROP COLUMN nix_paths;
ALTER TABLE snapshots DROP COLUMN nix_closure;
ALTER TABLE snapshots DROP COLUMN nix_layer;
ALTER TABLE snapshots DROP COLUMN linked;
ALTER TABLE snapshots DROP COLUMN flattened;
`);
    },
  },
];

/** The version a database opened by this code is at. */
export const latestSchemaVersion = schemaMigrations[schemaMigrations.length - 1]!.version;

/** The version of `database`: 0 when it has no `meta` table yet (a new file). */
export function schemaVersionOf(database: DatabaseSync): number {
  const table = database
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
    .get();
  if (table === undefined) return 0;
  const row = database.prepare("SELECT value FROM meta WHERE name = 'schema'").get() as
    | { value: number }
    | undefined;
  return row?.value ?? 0;
}

/**
 * Runs the steps after the database's version, through `target` (default: the latest), and
 * records the version reached. Call inside a transaction: a failing step leaves the database as
 * it was. A database at a newer version than this code knows is refused (FailedPrecondition).
 * Returns the versions it went from and to.
 */
export function migrateSchema(
  database: DatabaseSync,
  path: string,
  target: number = latestSchemaVersion,
): { from: number; to: number } {
  const from = schemaVersionOf(database);
  if (from > latestSchemaVersion) {
    throw new SnapshotterError(
      ErrorCode.FailedPrecondition,
      `metadata database ${path}: schema version ${from}, newer than ${latestSchemaVersion} (written by a newer nix-snapshotter)`,
    );
  }
  for (const step of schemaMigrations) {
    if (step.version <= from || step.version > target) continue;
    try {
      step.up(database);
    } catch (error) {
      throw SnapshotterError.from(
        error,
        `metadata database ${path}: migrating to schema version ${step.version} (${step.description})`,
      );
    }
    database.prepare("UPDATE meta SET value = ? WHERE name = 'schema'").run(step.version);
  }
  return { from, to: Math.max(from, Math.min(target, latestSchemaVersion)) };
}
