import type { BoltBucket, BoltDatabase } from "../bolt/bolt-file.js";
import { PreciseDate } from "../clock.js";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { Kind } from "../types.js";

/**
 * One snapshot of containerd's `snapshots/storage` MetaStore (the schema the Go nix-snapshotter
 * and containerd's overlay snapshotter keep in `<root>/metadata.db`): bucket `v1`, then
 * `snapshots`, one bucket per snapshot key holding `id` (uvarint), `kind` (one byte: 1 view,
 * 2 active, 3 committed), `parent` (the parent's key), `createdat`/`updatedat` (Go
 * `time.MarshalBinary`), `labels` (a bucket), and for committed snapshots `size` and `inodes`
 * (varints). `v1/parents` holds back links from parent to child ids.
 */
export interface GoSnapshot {
  key: string;
  id: number;
  kind: Kind;
  parent: string;
  labels: Record<string, string>;
  created: PreciseDate;
  updated: PreciseDate;
  /** Committed only (containerd records usage at commit). */
  size: number | null;
  inodes: number | null;
}

export interface GoMetaStore {
  snapshots: GoSnapshot[];
  /** The `snapshots` bucket's sequence: every id handed out so far is at most this. */
  sequence: number;
}

const kinds: Record<number, Kind> = { 1: Kind.View, 2: Kind.Active, 3: Kind.Committed };

/** Seconds from 0001-01-01 (Go's internal epoch) to 1970-01-01. */
const goEpochToUnix = 62_135_596_800n;

const utf8 = new TextDecoder("utf-8", { fatal: true });

function readUvarint(bytes: Uint8Array): bigint | undefined {
  let result = 0n;
  let shift = 0n;
  for (let index = 0; index < bytes.length && index < 10; index++) {
    const byte = bytes[index]!;
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return index === bytes.length - 1 ? result : undefined;
    shift += 7n;
  }
  return undefined;
}

/** Go's zig-zag signed varint. */
function readVarint(bytes: Uint8Array): bigint | undefined {
  const unsigned = readUvarint(bytes);
  if (unsigned === undefined) return undefined;
  return (unsigned & 1n) === 0n ? unsigned >> 1n : -((unsigned >> 1n) + 1n);
}

/** Go `time.Time.MarshalBinary` (versions 1 and 2) to a nanosecond-precise date. */
function readGoTime(bytes: Uint8Array): PreciseDate | undefined {
  const version = bytes[0];
  if (!((version === 1 && bytes.length === 15) || (version === 2 && bytes.length === 16))) {
    return undefined;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const seconds = view.getBigInt64(1, false) - goEpochToUnix;
  const nanoseconds = view.getInt32(9, false);
  if (nanoseconds < 0 || nanoseconds >= 1_000_000_000) return undefined;
  return new PreciseDate(seconds * 1_000_000_000n + BigInt(nanoseconds));
}

function text(bytes: Uint8Array, what: () => string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new Error(`${what()} is not UTF-8`);
  }
}

/**
 * Reads every snapshot of a containerd MetaStore. Throws (naming the file and the snapshot) on
 * anything the Go code would not have written: a missing bucket, a bad varint or time, an
 * unknown kind, a parent that does not exist or is not committed, two snapshots with one id.
 */
export function readGoMetaStore(database: BoltDatabase): GoMetaStore {
  const fail = (problem: string): never => {
    throw new SnapshotterError(
      ErrorCode.DataLoss,
      `containerd metadata ${database.file}: ${problem}`,
    );
  };
  try {
    const version = database.root.bucket("v1");
    if (version === undefined) {
      const names = [...database.root.entries()].map((entry) => utf8.decode(entry.key));
      return fail(
        `no "v1" bucket (top-level buckets: ${names.slice(0, 10).join(", ") || "none"}); not a snapshotter MetaStore`,
      );
    }
    const bucket = version.bucket("snapshots");
    if (bucket === undefined) return { snapshots: [], sequence: 0 };
    if (bucket.sequence > BigInt(Number.MAX_SAFE_INTEGER)) {
      fail(`snapshot id sequence ${bucket.sequence} is too large`);
    }
    const snapshots: GoSnapshot[] = [];
    const ids = new Map<number, string>();
    for (const entry of bucket.entries()) {
      const key = text(entry.key, () => "a snapshot key");
      const name = `snapshot ${JSON.stringify(key.slice(0, 200))}`;
      if (entry.bucket === undefined) fail(`${name} is a value, not a bucket`);
      snapshots.push(readSnapshot(entry.bucket!, key, name, fail));
      const last = snapshots.at(-1)!;
      const other = ids.get(last.id);
      if (other !== undefined)
        fail(`${name} and snapshot ${JSON.stringify(other)} share id ${last.id}`);
      ids.set(last.id, key);
    }
    const byKey = new Map(snapshots.map((snapshot) => [snapshot.key, snapshot]));
    for (const snapshot of snapshots) {
      if (snapshot.parent === "") continue;
      const parent = byKey.get(snapshot.parent);
      if (parent === undefined) {
        fail(
          `snapshot ${JSON.stringify(snapshot.key)}: parent ${JSON.stringify(snapshot.parent)} does not exist`,
        );
      } else if (parent.kind !== Kind.Committed) {
        fail(
          `snapshot ${JSON.stringify(snapshot.key)}: parent ${JSON.stringify(snapshot.parent)} is not committed`,
        );
      }
    }
    const maxId = snapshots.reduce((max, snapshot) => Math.max(max, snapshot.id), 0);
    return { snapshots, sequence: Math.max(Number(bucket.sequence), maxId) };
  } catch (error) {
    if (error instanceof SnapshotterError) throw error;
    return fail(error instanceof Error ? error.message : String(error));
  }
}

function readSnapshot(
  bucket: BoltBucket,
  key: string,
  name: string,
  fail: (problem: string) => never,
): GoSnapshot {
  const idBytes = bucket.get("id");
  const id = idBytes === undefined ? undefined : readUvarint(idBytes);
  if (id === undefined || id < 1n || id > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail(`${name}: missing or bad id`);
  }
  const kindBytes = bucket.get("kind");
  const kind = kindBytes?.length === 1 ? kinds[kindBytes[0]!] : undefined;
  if (kind === undefined) fail(`${name}: missing or unknown kind`);
  const parentBytes = bucket.get("parent");
  const parent = parentBytes === undefined ? "" : text(parentBytes, () => `${name}: its parent`);
  const times: PreciseDate[] = [];
  for (const field of ["createdat", "updatedat"]) {
    const bytes = bucket.get(field);
    const time = bytes === undefined ? new PreciseDate(0n) : readGoTime(bytes);
    if (time === undefined) fail(`${name}: bad ${field} time`);
    times.push(time!);
  }
  const labels: Record<string, string> = {};
  const labelBucket = bucket.bucket("labels");
  if (labelBucket !== undefined) {
    for (const entry of labelBucket.entries()) {
      if (entry.value === undefined) fail(`${name}: a label is a bucket`);
      const labelKey = text(entry.key, () => `${name}: a label key`);
      labels[labelKey] = text(entry.value!, () => `${name}: label ${JSON.stringify(labelKey)}`);
    }
  }
  let size: number | null = null;
  let inodes: number | null = null;
  if (kind === Kind.Committed) {
    const usage = ["size", "inodes"].map((field) => {
      const bytes = bucket.get(field);
      if (bytes === undefined) return 0;
      const value = readVarint(bytes);
      if (value === undefined || value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
        return fail(`${name}: bad ${field}`);
      }
      return Number(value);
    });
    size = usage[0]!;
    inodes = usage[1]!;
  }
  return {
    key,
    id: Number(id),
    kind: kind!,
    parent,
    labels,
    created: times[0]!,
    updated: times[1]!,
    size,
    inodes,
  };
}
