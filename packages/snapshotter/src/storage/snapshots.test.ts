import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { Kind } from "../types.js";
import { MetadataStore } from "./metastore.js";
import {
  checkCreate,
  commitActive,
  createSnapshot,
  matchingInfos,
  maxLabelSize,
  removeSnapshot,
  updateInfo,
  validateLabels,
} from "./snapshots.js";

let directory: string;
let store: MetadataStore;
const now = new Date(1_700_000_000_000);

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-storage-"));
  store = new MetadataStore(join(directory, "metadata.db"));
});

afterEach(async () => {
  store.close();
  await rm(directory, { recursive: true, force: true });
});

function codeOf(work: () => unknown): ErrorCode | undefined {
  try {
    work();
  } catch (error) {
    if (error instanceof SnapshotterError) return error.code;
    throw error;
  }
  return undefined;
}

/** An active snapshot `key` on `parent`, committed as `name` when given. */
function make(key: string, parent = "", name?: string, labels: Record<string, string> = {}) {
  return store.transaction(() => {
    const record = createSnapshot(
      store,
      parent,
      {
        id: store.allocateId(),
        key,
        kind: Kind.Active,
        labels,
        nixPaths: [],
        nixClosure: null,
      },
      now,
    );
    if (name !== undefined) {
      commitActive(
        store,
        { id: record.id, name, key, labels, usage: { size: 0, inodes: 0 }, flattened: [] },
        now,
      );
    }
    return record;
  });
}

describe("containerd's snapshot semantics over the metastore", () => {
  it("create: a taken key is AlreadyExists, a missing parent NotFound, an active parent InvalidArgument", () => {
    make("a", "", "A");
    make("b", "A");
    expect(codeOf(() => checkCreate(store, "b", ""))).toBe(ErrorCode.AlreadyExists);
    expect(codeOf(() => checkCreate(store, "c", "nope"))).toBe(ErrorCode.NotFound);
    expect(codeOf(() => checkCreate(store, "c", "b"))).toBe(ErrorCode.InvalidArgument);
    expect(checkCreate(store, "c", "A")?.key).toBe("A");
    // Empty label values are not stored.
    expect(store.labelsOf(make("d", "A", undefined, { x: "", y: "1" }).id)).toEqual({ y: "1" });
  });

  it("commit: only an active key, onto a free name; a key gone meanwhile is NotFound", () => {
    const a = make("a", "", "A");
    const b = make("b", "A");
    const commit = (id: number, name: string, key: string) =>
      store.transaction(() =>
        commitActive(
          store,
          { id, name, key, labels: {}, usage: { size: 1, inodes: 1 }, flattened: [] },
          now,
        ),
      );
    expect(codeOf(() => commit(a.id, "A2", "A"))).toBe(ErrorCode.FailedPrecondition);
    expect(codeOf(() => commit(b.id, "A", "b"))).toBe(ErrorCode.AlreadyExists);
    expect(codeOf(() => commit(b.id + 100, "B", "b"))).toBe(ErrorCode.NotFound);
    commit(b.id, "B", "b");
    expect(store.getByKey("B")).toMatchObject({ kind: Kind.Committed, parentKey: "A" });
  });

  it("update: labels, labels.<key>, no paths; other field paths are InvalidArgument", () => {
    make("a", "", undefined, { keep: "1", drop: "2" });
    const info = (labels: Record<string, string>) => ({
      kind: Kind.Active,
      name: "a",
      parent: "",
      labels,
      created: now,
      updated: now,
    });
    expect(
      updateInfo(store, info({ drop: "", added: "3" }), ["labels.drop", "labels.added"], now)
        .labels,
    ).toEqual({
      keep: "1",
      added: "3",
    });
    expect(updateInfo(store, info({ only: "x" }), [], now).labels).toEqual({ only: "x" });
    expect(updateInfo(store, info({ z: "1" }), ["labels"], now).labels).toEqual({ z: "1" });
    expect(codeOf(() => updateInfo(store, info({}), ["kind"], now))).toBe(
      ErrorCode.InvalidArgument,
    );
    expect(codeOf(() => updateInfo(store, { ...info({}), name: "b" }, [], now))).toBe(
      ErrorCode.NotFound,
    );
    expect(codeOf(() => validateLabels({ k: "v".repeat(maxLabelSize) }))).toBe(
      ErrorCode.InvalidArgument,
    );
  });

  it("remove: FailedPrecondition while children exist, NotFound after", () => {
    make("a", "", "A");
    make("b", "A");
    expect(codeOf(() => removeSnapshot(store, "A"))).toBe(ErrorCode.FailedPrecondition);
    removeSnapshot(store, "b");
    removeSnapshot(store, "A");
    expect(codeOf(() => removeSnapshot(store, "A"))).toBe(ErrorCode.NotFound);
  });

  it("filters: commas AND, several strings OR, in key order", () => {
    make("a", "", "A", { role: "base" });
    make("b", "A", undefined, { role: "app" });
    make("c", "A", undefined, { role: "tool" });
    const names = (filters: string[]) => matchingInfos(store, filters).map((info) => info.name);
    expect(names([])).toEqual(["A", "b", "c"]);
    expect(names(["parent==A,labels.role==app"])).toEqual(["b"]);
    expect(names(["kind==committed", "labels.role==tool"])).toEqual(["A", "c"]);
    expect(codeOf(() => matchingInfos(store, ["labels.role=="]))).toBeDefined();
  });
});
