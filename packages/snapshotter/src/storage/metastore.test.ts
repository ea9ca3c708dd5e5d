import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { kill9, spawnTypeScriptChild, waitForLine } from "../testing/child-process.js";
import { Kind } from "../types.js";
import { MetadataStore, type NewSnapshot } from "./metastore.js";

/** A snapshot without nix paths: active, no parent and no labels unless `fields` says so. */
function plainSnapshot(id: number, key: string, fields: Partial<NewSnapshot> = {}): NewSnapshot {
  return {
    id,
    key,
    kind: Kind.Active,
    parentId: null,
    labels: {},
    nixPaths: [],
    nixClosure: null,
    ...fields,
  };
}

const metadataModule = pathToFileURL(join(import.meta.dirname, "metastore.ts")).href;

let directory: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-metadata-"));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

describe("MetadataStore", () => {
  it("labels read for Infos are shared and frozen, and stay current across writes and rollbacks", () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    const now = new Date();
    const id = store.allocateId();
    store.insert(plainSnapshot(id, "k", { labels: { a: "1" } }), now);
    const first = store.info(store.getById(id)!);
    expect(first.labels).toEqual({ a: "1" });
    expect(Object.isFrozen(first.labels)).toBe(true);
    expect(store.allInfos()[0]!.labels).toBe(first.labels);
    // labelsOf gives a copy the caller may change.
    const copy = store.labelsOf(id);
    copy.b = "2";
    expect(store.info(store.getById(id)!).labels).toEqual({ a: "1" });

    store.transaction(() => store.updateLabels(id, { a: "2" }, now));
    expect(store.info(store.getById(id)!).labels).toEqual({ a: "2" });
    expect(store.allInfos()[0]!.labels).toEqual({ a: "2" });

    // Read inside a transaction that rolls back: the labels read there go with it.
    expect(() =>
      store.transaction(() => {
        store.updateLabels(id, { a: "3" }, now);
        expect(store.allInfos()[0]!.labels).toEqual({ a: "3" });
        throw new Error("roll back");
      }),
    ).toThrow("roll back");
    expect(store.info(store.getById(id)!).labels).toEqual({ a: "2" });
    expect(store.allInfos()[0]!.labels).toEqual({ a: "2" });

    store.transaction(() => store.commit(id, "c", { c: "1" }, { size: 0, inodes: 0 }, [], now));
    expect(store.info(store.getByKey("c")!).labels).toEqual({ c: "1" });
    store.transaction(() => store.delete(id));
    expect(store.allInfos()).toEqual([]);
    expect(store.labelsOf(id)).toEqual({});
    store.close();
  });

  it("lookups give headers without the lists; the lists, labels and infos read apart agree with all()", () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    const now = new Date();
    const paths = Array.from({ length: 3000 }, (_, index) => `/nix/store/${index}-p`);
    const labels = Object.fromEntries(
      paths.map((path, index) => [`nix-store-path.${index}`, path]),
    );
    const layer = store.allocateId();
    store.insert(
      plainSnapshot(layer, "layer-key", {
        labels,
        nixPaths: paths,
        nixClosure: "/nix/store/c",
        nixLayer: true,
      }),
      now,
    );
    store.commit(layer, "layer", labels, { size: 2, inodes: 3 }, paths, now);
    store.markLinked(layer);
    const plain = store.allocateId();
    store.insert(plainSnapshot(plain, "plain-key", { parentId: layer }), now);
    store.commit(plain, "plain", {}, { size: 0, inodes: 0 }, paths, now);
    const container = store.allocateId();
    store.insert(
      plainSnapshot(container, "container", { parentId: plain, labels: { x: "1" } }),
      now,
    );

    const header = store.getByKey("layer")!;
    expect(header).toEqual(store.getById(layer));
    expect(Object.keys(header).sort()).toEqual([
      "created",
      "hasNixPaths",
      "id",
      "inodes",
      "key",
      "kind",
      "linked",
      "nixClosure",
      "nixLayer",
      "parentId",
      "parentKey",
      "size",
      "updated",
    ]);
    expect(header).toMatchObject({
      hasNixPaths: true,
      nixClosure: "/nix/store/c",
      nixLayer: true,
      linked: true,
      kind: Kind.Committed,
      size: 2,
      inodes: 3,
      parentKey: "",
    });
    expect(store.getByKey("plain")).toMatchObject({
      hasNixPaths: false,
      nixClosure: null,
      nixLayer: false,
      linked: false,
      parentKey: "layer",
    });
    expect(store.getByKey("container")).toMatchObject({
      hasNixPaths: false,
      kind: Kind.Active,
      parentKey: "plain",
    });
    expect(store.idOf("plain")).toBe(plain);
    expect(store.idOf("nope")).toBeUndefined();

    const full = Object.fromEntries(store.all().map((record) => [record.key, record]));
    for (const key of ["layer", "plain", "container"]) {
      const record = full[key]!;
      const { labels: _labels, nixPaths: _paths, flattened: _flattened, ...rest } = record;
      expect(store.getByKey(key)).toEqual({ ...rest, hasNixPaths: record.nixPaths.length > 0 });
      expect(store.getRecordById(record.id)).toEqual(record);
      expect(store.labelsOf(record.id)).toEqual(record.labels);
      expect(store.nixPathsOf(record.id)).toEqual(record.nixPaths);
      expect(store.flattenedOf(record.id)).toEqual(record.flattened);
      expect(store.info(store.getByKey(key)!)).toEqual({
        kind: record.kind,
        name: record.key,
        parent: record.parentKey,
        labels: record.labels,
        created: record.created,
        updated: record.updated,
      });
    }
    expect(full.layer!.nixPaths).toEqual(paths);
    expect(store.allInfos()).toEqual(
      ["container", "layer", "plain"].map((key) => store.info(store.getByKey(key)!)),
    );
    expect(store.labelsOf(9999)).toEqual({});
    expect(store.nixPathsOf(9999)).toEqual([]);
    expect(store.getRecordById(9999)).toBeUndefined();
    store.close();
  });

  it("never reuses ids and resolves parent chains", () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    const now = new Date();
    const a = store.allocateId();
    store.insert(plainSnapshot(a, "a"), now);
    store.commit(a, "A", {}, { size: 1, inodes: 1 }, ["/p"], now);
    const b = store.allocateId();
    store.insert(plainSnapshot(b, "b", { parentId: a }), now);
    store.commit(b, "B", {}, { size: 1, inodes: 1 }, [], now);
    const c = store.allocateId();
    const record = store.insert(
      plainSnapshot(c, "c", { kind: Kind.View, parentId: b, labels: { x: "1" } }),
      now,
    );
    expect(store.parentIds(record)).toEqual([b, a]);
    expect(store.info(record)).toMatchObject({ name: "c", parent: "B", kind: Kind.View });
    expect(store.flattenedOf(a)).toEqual(["/p"]);
    expect(store.flattenedOf(b)).toEqual([]);
    expect(store.flattenedOf(c)).toBeNull();
    store.delete(c);
    expect(store.allocateId()).toBe(c + 1);
    expect(store.hasChildren(a)).toBe(true);
    expect(store.check()).toEqual([]);
    store.close();
    store.close();
  });

  it("rolls back a transaction that throws", () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    const id = store.allocateId();
    expect(() =>
      store.transaction(() => {
        store.insert(plainSnapshot(id, "a"), new Date());
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(store.getByKey("a")).toBeUndefined();
    store.close();
  });

  it("never reuses an id across reopening, however many of a reserved block were used", () => {
    const path = join(directory, "metadata.db");
    const seen = new Set<number>();
    let highest = 0;
    // Three openings that use a few ids, more than a block, and none.
    for (const count of [3, 150, 0, 1]) {
      const store = new MetadataStore(path);
      for (let index = 0; index < count; index++) {
        const id = store.allocateId();
        expect(seen.has(id)).toBe(false);
        expect(id).toBeGreaterThan(highest);
        seen.add(id);
        highest = id;
      }
      store.close();
    }
    expect(seen.size).toBe(154);
  });

  it("an id reserved inside a rolled-back transaction is handed out again only after re-reading the sequence", () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    let inside = 0;
    expect(() =>
      store.transaction(() => {
        inside = store.allocateId();
        throw new Error("boom");
      }),
    ).toThrow("boom");
    // The reservation rolled back with the transaction: nothing outside the database saw it.
    const after = store.allocateId();
    expect(after).toBe(inside);
    store.insert(plainSnapshot(after, "a"), new Date());
    expect(store.allocateId()).toBe(after + 1);
    store.close();
  });

  it("refuses a parent id that does not exist (foreign key)", () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    expect(() => store.insert(plainSnapshot(5, "a", { parentId: 77 }), new Date())).toThrow(
      /FOREIGN KEY/,
    );
    store.close();
  });

  it("survives kill -9 in the middle of a transaction and between transactions", async () => {
    const path = join(directory, "metadata.db");
    const source = `
      import { MetadataStore } from ${JSON.stringify(metadataModule)};
      const store = new MetadataStore(process.argv[2]);
      let parent = null;
      for (let index = 0; index < 200; index++) {
        store.transaction(() => {
          const id = store.allocateId();
          store.insert({ id, key: "k" + index, kind: "active", parentId: parent, labels: { i: String(index) }, nixPaths: [], nixClosure: null }, new Date());
          store.commit(id, "c" + index, { i: String(index) }, { size: index, inodes: 1 }, [], new Date());
          parent = id;
        });
        console.log("committed " + index);
      }
      // Open a transaction, write, and stay inside it until killed.
      store.transaction(() => {
        const id = store.allocateId();
        store.insert({ id, key: "doomed", kind: "active", parentId: parent, labels: {}, nixPaths: [], nixClosure: null }, new Date());
        console.log("inside");
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
      });
    `;
    const child = await spawnTypeScriptChild(directory, source, [path]);
    await waitForLine(child, /^inside$/);
    await kill9(child);

    const store = new MetadataStore(path);
    expect(store.check()).toEqual([]);
    expect(store.getByKey("doomed")).toBeUndefined();
    const all = store.all();
    expect(all).toHaveLength(200);
    const top = store.getByKey("c199")!;
    expect(store.parentIds(top)).toHaveLength(199);
    expect(all.every((record) => record.kind === Kind.Committed)).toBe(true);
    // The store still takes writes.
    const id = store.allocateId();
    store.insert(plainSnapshot(id, "after", { parentId: top.id }), new Date());
    expect(store.getByKey("after")?.parentId).toBe(top.id);
    store.close();
  });
});

/** A sync held until the test releases it, and every call of it. */
function holdSyncs(store: MetadataStore) {
  const calls: Array<{ path: string; release: () => void; fail: (error: Error) => void }> = [];
  vi.spyOn(store, "syncWal").mockImplementation(
    (path) =>
      new Promise<void>((resolve, reject) => {
        calls.push({ path, release: resolve, fail: reject });
      }),
  );
  return calls;
}

/** Lets pending promise callbacks and I/O callbacks run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("MetadataStore with group commit", () => {
  it("is durable at once without group commit, and syncs nothing itself", async () => {
    const store = new MetadataStore(join(directory, "metadata.db"));
    const syncs = holdSyncs(store);
    store.transaction(() => store.insert(plainSnapshot(store.allocateId(), "a"), new Date()));
    await store.durable();
    expect(syncs).toHaveLength(0);
    expect(store.unsyncedCommits).toBe(0);
    store.close();
  });

  it("resolves durable() only after a sync that started after the commit", async () => {
    const path = join(directory, "metadata.db");
    const store = new MetadataStore(path, { groupCommit: true });
    const syncs = holdSyncs(store);
    store.transaction(() => store.insert(plainSnapshot(store.allocateId(), "a"), new Date()));
    expect(store.unsyncedCommits).toBeGreaterThan(0);
    let first = false;
    const firstWait = store.durable().then(() => {
      first = true;
    });
    await settle();
    expect(syncs).toHaveLength(1);
    expect(syncs[0]!.path).toBe(`${path}-wal`);
    // A commit made while that sync runs is not covered by it.
    store.transaction(() => store.insert(plainSnapshot(store.allocateId(), "b"), new Date()));
    let second = false;
    const secondWait = store.durable().then(() => {
      second = true;
    });
    // Another commit and waiter while the first sync runs: it shares the second sync.
    store.transaction(() => store.insert(plainSnapshot(store.allocateId(), "c"), new Date()));
    let third = false;
    const thirdWait = store.durable().then(() => {
      third = true;
    });
    await settle();
    expect([first, second, third]).toEqual([false, false, false]);
    syncs[0]!.release();
    await firstWait;
    await settle();
    expect([first, second, third]).toEqual([true, false, false]);
    // One sync for both later commits.
    expect(syncs).toHaveLength(2);
    syncs[1]!.release();
    await Promise.all([secondWait, thirdWait]);
    expect(syncs).toHaveLength(2);
    expect(store.unsyncedCommits).toBe(0);
    await store.durable();
    expect(syncs).toHaveLength(2);
    store.close();
  });

  it("holds fresh ids until their block's reservation is durable", async () => {
    const store = new MetadataStore(join(directory, "metadata.db"), { groupCommit: true });
    const syncs = holdSyncs(store);
    store.allocateId();
    let ready = false;
    const wait = store.idsDurable().then(() => {
      ready = true;
    });
    await settle();
    expect(ready).toBe(false);
    syncs[0]!.release();
    await wait;
    // The rest of the block needs no sync.
    store.allocateId();
    await store.idsDurable();
    expect(syncs).toHaveLength(1);
    store.close();
  });

  it("acknowledges nothing after a failed sync", async () => {
    const store = new MetadataStore(join(directory, "metadata.db"), { groupCommit: true });
    const syncs = holdSyncs(store);
    store.transaction(() => store.insert(plainSnapshot(store.allocateId(), "a"), new Date()));
    const wait = store.durable();
    await settle();
    syncs[0]!.fail(new Error("EIO: i/o error, fdatasync"));
    await expect(wait).rejects.toMatchObject({ code: "Unavailable" });
    await expect(store.durable()).rejects.toThrow(/syncing the WAL failed/);
    store.close();
  });

  it("syncs the real WAL file (default sync) and keeps what it acknowledged across kill -9", async () => {
    const path = join(directory, "metadata.db");
    const source = `
      import { MetadataStore } from ${JSON.stringify(metadataModule)};
      const store = new MetadataStore(process.argv[2], { groupCommit: true });
      for (let index = 0; ; index++) {
        const batch = [];
        for (let lane = 0; lane < 4; lane++) {
          store.transaction(() => {
            store.insert({ id: store.allocateId(), key: "k" + index + "-" + lane, kind: "active", parentId: null, labels: {}, nixPaths: [], nixClosure: null }, new Date());
          });
          batch.push(store.durable().then(() => "k" + index + "-" + lane));
        }
        for (const key of await Promise.all(batch)) console.log("acknowledged " + key);
      }
    `;
    const child = await spawnTypeScriptChild(directory, source, [path]);
    const acknowledged: string[] = [];
    let buffer = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      const lines = (buffer + chunk.toString()).split("\n");
      buffer = lines.pop() ?? "";
      for (const line of lines) {
        if (line.startsWith("acknowledged ")) acknowledged.push(line.slice(13));
      }
    });
    await waitForLine(child, /^acknowledged k40-3$/);
    await kill9(child);
    expect(acknowledged.length).toBeGreaterThanOrEqual(164);
    const store = new MetadataStore(path);
    expect(store.check()).toEqual([]);
    for (const key of acknowledged) expect(store.getByKey(key)?.key).toBe(key);
    store.close();
  });
});

describe("MetadataStore checkpoints with group commit", () => {
  it("checkpoints on its thread and keeps the WAL bounded and the data whole", {
    timeout: 90_000,
  }, async () => {
    const path = join(directory, "metadata.db");
    const store = new MetadataStore(path, { groupCommit: true });
    const labels = { note: "x".repeat(300) };
    for (let index = 0; index < 1500; index++) {
      store.transaction(() =>
        store.insert(plainSnapshot(store.allocateId(), `k${index}`, { labels }), new Date()),
      );
      if (index % 3 === 0) await store.durable();
    }
    await store.durable();
    // Checkpoints are asked for after syncs: the thread starts with the first and answers later.
    await vi.waitFor(() => expect(store.checkpointsOffThread).toBeGreaterThan(0), {
      timeout: 30_000,
    });
    // Within the bound of the event loop's own automatic checkpoint (192 pages of 4 KiB, cut
    // back to 832 KiB), with room for the frames of a few commits past it.
    expect((await stat(`${path}-wal`)).size).toBeLessThanOrEqual(224 * 4096);
    expect(store.check()).toEqual([]);
    store.close();
    const again = new MetadataStore(path);
    expect(again.all()).toHaveLength(1500);
    expect(again.check()).toEqual([]);
    again.close();
  });
});
