import { ErrorCode, SnapshotterError } from "../errors.js";
import { infoAdaptor, parseFilters } from "../filters.js";
import { type Info, Kind } from "../types.js";
import type { MetadataStore, NewSnapshot, SnapshotHeader } from "./metastore.js";

/**
 * containerd's snapshot semantics over the metastore (like containerd's `snapshots/storage`):
 * which keys and parents are acceptable, how Update applies field paths, which snapshots a
 * filter matches, what Remove refuses. No file system work here; the functions that write run
 * in the caller's transaction or open their own.
 */

/** containerd's limit on a label: key plus value. */
export const maxLabelSize = 4096;

export function validateLabels(labels: Readonly<Record<string, string>>): void {
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

/** Labels without the empty values (containerd drops them). */
export function withoutEmptyLabels(
  labels: Readonly<Record<string, string>> | undefined,
): Record<string, string> {
  return Object.fromEntries(Object.entries(labels ?? {}).filter(([, value]) => value !== ""));
}

export function notFound(key: string): SnapshotterError {
  return new SnapshotterError(ErrorCode.NotFound, `snapshot "${key}" does not exist`);
}

/** The snapshot named `key`, or NotFound. */
export function getSnapshot(store: MetadataStore, key: string): SnapshotHeader {
  const record = store.getByKey(key);
  if (record === undefined) throw notFound(key);
  return record;
}

export function getInfo(store: MetadataStore, key: string): Info {
  return store.info(getSnapshot(store, key));
}

function alreadyExists(key: string): SnapshotterError {
  return new SnapshotterError(ErrorCode.AlreadyExists, `snapshot "${key}" already exists`);
}

function checkParent(parent: string, record: SnapshotHeader | undefined): SnapshotHeader {
  if (record === undefined) {
    throw new SnapshotterError(ErrorCode.NotFound, `parent snapshot "${parent}" does not exist`);
  }
  if (record.kind !== Kind.Committed) {
    throw new SnapshotterError(
      ErrorCode.InvalidArgument,
      `parent snapshot "${parent}" is not a committed snapshot`,
    );
  }
  return record;
}

/** Checks the key is free and the parent committed (one read); returns the parent record. */
export function checkCreate(
  store: MetadataStore,
  key: string,
  parent: string,
): SnapshotHeader | undefined {
  const found = store.createCheck(key, parent);
  if (found.taken) throw alreadyExists(key);
  if (parent === "") return undefined;
  return checkParent(parent, found.parent);
}

/**
 * Inserts an active or view snapshot on `parent` ("" for none) after checking again that the key
 * is free and the parent committed. `checked` is the parent's record from {@link checkCreate}
 * earlier in the same call (undefined for none): then the check again is one read, of whether
 * the key is taken now and that parent is still there; without it, the whole check. Call inside
 * a transaction.
 */
export function createSnapshot(
  store: MetadataStore,
  parent: string,
  snapshot: Omit<NewSnapshot, "parentId">,
  now: Date,
  checked?: { parent: SnapshotHeader | undefined },
): SnapshotHeader {
  let parentRecord: SnapshotHeader | undefined;
  if (checked === undefined) {
    parentRecord = checkCreate(store, snapshot.key, parent);
  } else {
    parentRecord = checked.parent;
    const current = store.createRecheck(snapshot.key, parentRecord?.id ?? null);
    if (current.taken) throw alreadyExists(snapshot.key);
    // Removed since (and perhaps made again under the same key, with another id).
    if (!current.parentCommitted) checkParent(parent, undefined);
  }
  return store.insert(
    {
      ...snapshot,
      labels: withoutEmptyLabels(snapshot.labels),
      parentId: parentRecord?.id ?? null,
    },
    now,
    parentRecord?.key ?? "",
  );
}

/**
 * Applies containerd's Update: field paths `labels` (replace all) or `labels.<key>` (one label;
 * absent or empty deletes it); none = replace all labels; anything else is InvalidArgument.
 * Runs in its own transaction (or the caller's).
 */
export function updateInfo(
  store: MetadataStore,
  info: Info,
  fieldPaths: readonly string[],
  now: Date,
): Info {
  const requested = info.labels ?? {};
  validateLabels(requested);
  return store.transaction(() => {
    const record = getSnapshot(store, info.name);
    let labels: Record<string, string> = store.labelsOf(record.id);
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
    store.updateLabels(record.id, labels, now);
    return store.info(store.getById(record.id)!);
  });
}

/** Checks `key` is active and `name` free (one read); returns the active snapshot. */
export function checkCommit(store: MetadataStore, name: string, key: string): SnapshotHeader {
  const record = store.commitCheck(key, name);
  if (record === undefined) throw notFound(key);
  if (record.kind !== Kind.Active) {
    throw new SnapshotterError(ErrorCode.FailedPrecondition, `snapshot "${key}" is not active`);
  }
  if (record.nameTaken) throw alreadyExists(name);
  const { nameTaken: _, ...header } = record;
  return header;
}

/**
 * Turns active snapshot `id` (key `key`) into committed `name` after checking again in one read
 * (the key may have been removed, or the name taken, while the caller worked). Call inside a
 * transaction.
 */
export function commitActive(
  store: MetadataStore,
  commit: {
    id: number;
    name: string;
    key: string;
    labels: Record<string, string>;
    usage: { size: number; inodes: number };
    flattened: string[];
  },
  now: Date,
): void {
  const current = store.commitRecheck(commit.id, commit.key, commit.name);
  if (current.kind === undefined) {
    // Gone, or another snapshot under that key now: report what a fresh check would.
    checkCommit(store, commit.name, commit.key);
    throw notFound(commit.key);
  }
  if (current.kind !== Kind.Active) {
    throw new SnapshotterError(
      ErrorCode.FailedPrecondition,
      `snapshot "${commit.key}" is not active`,
    );
  }
  if (current.nameTaken) throw alreadyExists(commit.name);
  store.commit(commit.id, commit.name, commit.labels, commit.usage, commit.flattened, now);
}

/**
 * Deletes the row of snapshot `key` unless it has children (FailedPrecondition); returns it.
 * Runs in its own transaction (or the caller's).
 */
export function removeSnapshot(store: MetadataStore, key: string): SnapshotHeader {
  return store.transaction(() => {
    const found = store.removalCheck(key);
    if (found === undefined) throw notFound(key);
    if (found.hasChildren) {
      throw new SnapshotterError(
        ErrorCode.FailedPrecondition,
        `cannot remove snapshot "${key}": it has children`,
      );
    }
    store.delete(found.id);
    const { hasChildren: _, ...header } = found;
    return header;
  });
}

/** Info of every snapshot matching any of `filters` (containerd's syntax), in key order. */
export function matchingInfos(store: MetadataStore, filters: readonly string[]): Info[] {
  const filter = parseFilters(filters);
  return store.allInfos().filter((info) => filter.match(infoAdaptor(info)));
}
