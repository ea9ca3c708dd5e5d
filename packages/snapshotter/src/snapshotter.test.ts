import {
  lchown,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type LogEntry, recordingLogger } from "@nix-snapshotter/nix-store/testing";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { nanosecondsOf, nowNanoseconds } from "./clock.js";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { nixClosureLabel, nixLayerLabel, nixStorePathLabelPrefix } from "./nix-labels.js";
import { OverlayFilesystem } from "./overlay-filesystem.js";
import { createSnapshotter } from "./snapshotter.js";
import { MetadataStore } from "./storage/metastore.js";
import { FakeNixStore, FakeNixStoreError } from "./testing/fake-nix-store.js";
import { Kind, type MountMode, type Snapshotter } from "./types.js";

let directory: string;
let root: string;
let nix: FakeNixStore;
const open: Snapshotter[] = [];

async function make(mountMode: MountMode = "bind"): Promise<Snapshotter> {
  const snapshotter = await createSnapshotter({
    root,
    mountMode,
    nixStore: nix,
    gcRootOwnerPrefix: "test-",
  });
  open.push(snapshotter);
  // What opening asked of Nix (the start-up sweep of orphaned roots) is not the test's concern.
  nix.calls.length = 0;
  return snapshotter;
}

async function code(promise: Promise<unknown>): Promise<ErrorCode | "ok"> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    if (error instanceof SnapshotterError) return error.code;
    throw error;
  }
}

async function failure(promise: Promise<unknown>): Promise<SnapshotterError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof SnapshotterError) return error;
    throw error;
  }
  throw new Error("expected a failure");
}

function nixLabels(paths: string[]): Record<string, string> {
  const labels: Record<string, string> = { [nixLayerLabel]: "true" };
  paths.forEach((path, index) => {
    labels[`${nixStorePathLabelPrefix}${index}`] = path;
  });
  return labels;
}

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-unit-"));
  root = join(directory, "root");
  await mkdir(join(directory, "store"));
  nix = new FakeNixStore({ storeDir: join(directory, "store") });
});

// Deleting the 10,000 store directories of one test takes over 10 s on a loaded 2-core machine.
afterEach(async () => {
  for (const snapshotter of open.splice(0)) await snapshotter.close();
  await rm(directory, { recursive: true, force: true });
}, 60_000);

describe("createSnapshotter", () => {
  it("lays out metadata.db and snapshots/ in a private root", async () => {
    await make();
    expect((await readdir(root)).sort()).toEqual(
      expect.arrayContaining(["metadata.db", "snapshots"]),
    );
    expect((await stat(root)).mode & 0o777).toBe(0o700);
  });

  it("rejects an unknown mount mode and a store dir that is not absolute", async () => {
    await expect(createSnapshotter({ root, mountMode: "copy" as MountMode })).rejects.toThrow(
      /mount mode/,
    );
    await expect(createSnapshotter({ root, storeDir: "nix/store" })).rejects.toThrow(/store dir/);
  });
});

describe("containerd semantics", () => {
  it("prepares, commits, stats, views and removes with containerd's codes", async () => {
    const s = await make();
    const mounts = await s.prepare("a", "", { labels: { l: "1" } });
    expect(mounts).toHaveLength(1);
    expect(mounts[0]).toMatchObject({ type: "bind", options: ["rw", "rbind"] });
    await writeFile(join(mounts[0]!.source, "file"), "hello");

    const active = await s.stat("a");
    expect(active).toMatchObject({ kind: Kind.Active, name: "a", parent: "", labels: { l: "1" } });
    expect(await code(s.prepare("a", ""))).toBe(ErrorCode.AlreadyExists);
    expect(await code(s.view("a", ""))).toBe(ErrorCode.AlreadyExists);
    expect(await code(s.prepare("b", "a"))).toBe(ErrorCode.InvalidArgument); // parent not committed
    expect(await code(s.prepare("b", "missing"))).toBe(ErrorCode.NotFound);
    expect(await code(s.stat("missing"))).toBe(ErrorCode.NotFound);

    await s.commit("base", "a", { labels: { c: "2" } });
    expect(await code(s.stat("a"))).toBe(ErrorCode.NotFound);
    const committed = await s.stat("base");
    // Commit replaces labels (no inheritance), like containerd.
    expect(committed).toMatchObject({ kind: Kind.Committed, name: "base", labels: { c: "2" } });
    expect(await code(s.mounts("base"))).toBe(ErrorCode.FailedPrecondition);
    expect(await code(s.commit("other", "base"))).toBe(ErrorCode.FailedPrecondition);
    expect(await code(s.commit("x", "missing"))).toBe(ErrorCode.NotFound);

    await s.prepare("c", "base");
    expect(await code(s.commit("base", "c"))).toBe(ErrorCode.AlreadyExists);
    expect(await code(s.remove("base"))).toBe(ErrorCode.FailedPrecondition);
    expect((await s.stat("c")).parent).toBe("base");

    const view = await s.view("v", "base");
    expect(view).toEqual([
      {
        type: "bind",
        source: expect.stringMatching(/snapshots\/1\/fs$/),
        options: ["ro", "rbind"],
      },
    ]);
    expect(await code(s.commit("vv", "v"))).toBe(ErrorCode.FailedPrecondition);

    await s.remove("c");
    await s.remove("v");
    await s.remove("base");
    expect(await code(s.remove("base"))).toBe(ErrorCode.NotFound);
    // The directories go after the answers; Cleanup waits for them.
    await s.cleanup();
    expect(await readdir(join(root, "snapshots"))).toEqual([]);
  });

  it("records usage at commit and measures active snapshots live", async () => {
    const s = await make();
    const [mount] = await s.prepare("a", "");
    const before = await s.usage("a");
    await writeFile(join(mount!.source, "data"), Buffer.alloc(64 * 1024, 1));
    const after = await s.usage("a");
    expect(after.inodes).toBe(before.inodes + 1);
    expect(after.size).toBeGreaterThanOrEqual(before.size + 64 * 1024);
    await s.commit("b", "a");
    expect(await s.usage("b")).toEqual(after);
  });

  it("updates labels by field path and refuses other fields", async () => {
    const s = await make();
    await s.prepare("a", "", { labels: { keep: "1", drop: "2", change: "3" } });
    const info = await s.stat("a");
    const updated = await s.update({ ...info, labels: { change: "30", add: "4", drop: "" } }, [
      "labels.change",
      "labels.add",
      "labels.drop",
    ]);
    expect(updated.labels).toEqual({ keep: "1", change: "30", add: "4" });
    expect(updated.created).toEqual(info.created);
    expect(updated.updated.getTime()).toBeGreaterThanOrEqual(info.updated.getTime());
    expect((await s.update({ ...info, labels: { only: "x" } })).labels).toEqual({ only: "x" });
    expect((await s.update({ ...info, labels: { all: "y" } }, ["labels"])).labels).toEqual({
      all: "y",
    });
    for (const path of ["name", "kind", "parent", "created", "label"]) {
      expect(await code(s.update({ ...info, labels: {} }, [path]))).toBe(ErrorCode.InvalidArgument);
    }
    expect(await code(s.update({ ...info, name: "missing" }))).toBe(ErrorCode.NotFound);
    // The kind and parent given by the caller are ignored.
    expect((await s.update({ ...info, kind: Kind.Committed, parent: "x" })).kind).toBe(Kind.Active);
  });

  it("keeps nanosecond timestamps: created == updated at creation, within the caller's clock", async () => {
    const s = await make();
    const t1 = nowNanoseconds();
    await s.prepare("a", "");
    const t2 = nowNanoseconds();
    const info = await s.stat("a");
    const created = nanosecondsOf(info.created);
    expect(created >= t1 && created <= t2).toBe(true);
    expect(nanosecondsOf(info.updated)).toBe(created);
    const walked: bigint[] = [];
    await s.walk((entry) => {
      walked.push(nanosecondsOf(entry.created));
    });
    expect(walked).toEqual([created]);
    const updated = await s.update({ ...info, labels: { x: "1" } });
    expect(nanosecondsOf(updated.created)).toBe(created);
    expect(nanosecondsOf(updated.updated) > created).toBe(true);
  });

  it("refuses a label larger than 4096 bytes", async () => {
    const s = await make();
    expect(await code(s.prepare("a", "", { labels: { k: "v".repeat(4096) } }))).toBe(
      ErrorCode.InvalidArgument,
    );
    expect(await readdir(join(root, "snapshots"))).toEqual([]);
  });

  it("walks with filters and lets Stat run inside the walk", async () => {
    const s = await make();
    await s.prepare("a", "", { labels: { "x.y": "1" } });
    await s.commit("base", "a", { labels: { "x.y": "1" } });
    await s.prepare("b", "base", { labels: { "x.y": "2" } });
    await s.view("v", "base");
    const seen: string[] = [];
    await s.walk(async (info) => {
      seen.push(info.name);
      expect((await s.stat(info.name)).kind).toBe(info.kind);
    });
    expect(seen.sort()).toEqual(["b", "base", "v"]);
    const names = async (filters: string[]) => {
      const found: string[] = [];
      for await (const info of s.list(filters)) found.push(info.name);
      return found.sort();
    };
    expect(await names(['labels."x.y"==2'])).toEqual(["b"]);
    expect(await names(["kind==view", "kind==committed"])).toEqual(["base", "v"]);
    expect(await names(["parent==base,kind==active"])).toEqual(["b"]);
    expect(await code(s.walk(() => {}, ["name=="]))).toBe(ErrorCode.InvalidArgument);
  });

  it("builds the lowerdir chain parent first for deep chains", async () => {
    const s = await make();
    let parent = "";
    for (let index = 0; index < 5; index++) {
      await s.prepare(`k${index}`, parent);
      await s.commit(`c${index}`, `k${index}`);
      parent = `c${index}`;
    }
    const [mount] = await s.prepare("top", parent);
    const lowerdir = mount!.options.find((option) => option.startsWith("lowerdir="))!;
    const ids = lowerdir
      .slice("lowerdir=".length)
      .split(":")
      .map((dir) => Number(/snapshots\/(\d+)\/fs$/.exec(dir)![1]));
    expect(ids).toEqual([5, 4, 3, 2, 1]);
    expect(mount!.options).toContain(`upperdir=${join(root, "snapshots", "6", "fs")}`);
    expect(await s.mounts("top")).toEqual([mount]);
  });

  it("closes twice without error and refuses calls after close", async () => {
    const s = await make();
    await s.close();
    await s.close();
    expect(await code(s.stat("x"))).toBe(ErrorCode.Unavailable);
  });

  it("keeps data across reopening", async () => {
    const s = await make();
    await s.prepare("a", "", { labels: { l: "1" } });
    await s.commit("base", "a");
    await s.close();
    const again = await make();
    expect((await again.stat("base")).kind).toBe(Kind.Committed);
    await again.prepare("b", "base");
    expect((await again.stat("b")).parent).toBe("base");
  });

  // What power loss can leave: rows whose directories' creation never reached the disk.
  it("makes lost directories of active snapshots and views again at start, reports committed ones", async () => {
    const s = await make("none");
    await s.prepare("a", "");
    await s.commit("base", "a");
    const idOf = (key: string): number => {
      const database = new DatabaseSync(join(root, "metadata.db"), { readOnly: true });
      try {
        const row = database.prepare("SELECT id FROM snapshots WHERE key = ?").get(key);
        return Number((row as { id: number }).id);
      } finally {
        database.close();
      }
    };
    await lchown(join(root, "snapshots", String(idOf("base")), "fs"), 1234, 5678);
    await s.prepare("active", "base");
    await s.view("view", "base");
    await s.prepare("kept", "base");
    await s.prepare("lost-base-key", "");
    await s.commit("lost-base", "lost-base-key");
    const dir = (key: string): string => join(root, "snapshots", String(idOf(key)));
    const dirs = new Map(["active", "view", "kept", "lost-base"].map((key) => [key, dir(key)]));
    await s.close();
    open.splice(open.indexOf(s), 1);
    for (const key of ["active", "view", "lost-base"])
      await rm(dirs.get(key)!, { recursive: true });
    await writeFile(join(dirs.get("kept")!, "fs", "mine"), "y");

    const logged: LogEntry[] = [];
    const logger = recordingLogger(logged);
    const again = await createSnapshotter({ root, mountMode: "none", logger });
    open.push(again);
    const active = dirs.get("active")!;
    expect((await stat(join(active, "fs"))).mode & 0o7777).toBe(0o755);
    expect((await stat(join(active, "work"))).isDirectory()).toBe(true);
    expect(await readdir(join(active, "fs"))).toEqual([]);
    // Owned like its parent's upper directory, as at Prepare.
    expect((await stat(join(active, "fs"))).uid).toBe(1234);
    const view = dirs.get("view")!;
    expect(await readdir(view)).toEqual(["fs"]);
    // Untouched: a snapshot whose directory is there, and a committed one whose directory is not.
    expect(await readdir(join(dirs.get("kept")!, "fs"))).toEqual(["mine"]);
    await expect(stat(dirs.get("lost-base")!)).rejects.toThrow(/ENOENT/);
    expect(logged.filter((entry) => entry.level === "warn")).toEqual([
      expect.objectContaining({ object: { count: 2, keys: ["active", "view"] } }),
    ]);
    expect(logged.filter((entry) => entry.level === "error")).toEqual([
      expect.objectContaining({
        object: { count: 1, keys: ["lost-base"] },
        message: expect.stringMatching(/committed snapshots without their directory/),
      }),
    ]);
    // Mounts again as before, and the lost layer can be removed.
    const [mount] = await again.mounts("active");
    expect(mount!.options).toContain(`upperdir=${join(active, "fs")}`);
    await again.remove("lost-base");
    await again.remove("active");
    await again.remove("view");
    await again.cleanup();
    // A third start finds nothing to restore.
    logged.length = 0;
    await again.close();
    open.splice(open.indexOf(again), 1);
    open.push(await createSnapshotter({ root, mountMode: "none", logger }));
    expect(logged.filter((entry) => entry.level === "warn" || entry.level === "error")).toEqual([]);
  });
});

describe("acknowledgement after the sync (group commit)", () => {
  /** Holds every WAL sync of every store until `releaseAll`; counts them. */
  function holdSyncs() {
    const held: Array<() => void> = [];
    let count = 0;
    const spy = vi.spyOn(MetadataStore.prototype, "syncWal").mockImplementation(
      () =>
        new Promise<void>((resolve) => {
          count++;
          held.push(resolve);
        }),
    );
    return {
      get count() {
        return count;
      },
      get waiting() {
        return held.length;
      },
      async releaseAll() {
        while (held.length > 0) {
          held.shift()!();
          await new Promise((resolve) => setImmediate(resolve));
        }
      },
      restore: () => spy.mockRestore(),
    };
  }

  const settle = async () => {
    for (let index = 0; index < 5; index++) await new Promise((resolve) => setImmediate(resolve));
  };

  function tracked<T>(promise: Promise<T>) {
    const state = { done: false, promise };
    promise.then(
      () => {
        state.done = true;
      },
      () => {
        state.done = true;
      },
    );
    return state;
  }

  it("answers no mutation, and no read of one, before its commit's sync", async () => {
    const s = await make("none");
    const syncs = holdSyncs();
    try {
      const prepare = tracked(s.prepare("a", ""));
      await vi.waitFor(() => expect(syncs.waiting).toBeGreaterThan(0), { timeout: 20_000 });
      await settle();
      expect(prepare.done).toBe(false);
      // Release syncs one at a time: the answer comes only once none is held.
      while (!prepare.done) {
        await vi.waitFor(() => expect(syncs.waiting > 0 || prepare.done).toBe(true), {
          timeout: 20_000,
        });
        if (prepare.done) break;
        // Still unanswered while a sync is held.
        await settle();
        expect(prepare.done).toBe(false);
        await syncs.releaseAll();
        await settle();
      }
      await prepare.promise;

      const commit = tracked(s.commit("base", "a"));
      await vi.waitFor(() => expect(syncs.waiting).toBe(1), { timeout: 20_000 });
      await settle();
      expect(commit.done).toBe(false);
      // A Stat while the commit waits for its sync sees the committed row: it waits too.
      const stat = tracked(s.stat("base"));
      await settle();
      expect(stat.done).toBe(false);
      await syncs.releaseAll();
      expect((await stat.promise).kind).toBe(Kind.Committed);
      await commit.promise;
    } finally {
      await syncs.releaseAll();
      syncs.restore();
    }
  });

  it("deletes a removed snapshot's directory after the answer; Cleanup and close wait for it", async () => {
    const s = await make("none");
    await s.prepare("a", "");
    await s.view("v", "");
    const before = (await readdir(join(root, "snapshots"))).sort();
    expect(before).toHaveLength(2);
    const held: Array<() => void> = [];
    const original = OverlayFilesystem.prototype.removeDirectory;
    const spy = vi
      .spyOn(OverlayFilesystem.prototype, "removeDirectory")
      .mockImplementation(async function (this: OverlayFilesystem, ...args) {
        await new Promise<void>((resolve) => held.push(resolve));
        return original.apply(this, args);
      });
    try {
      // Both answered while their directories are still there (the deletions are held).
      await s.remove("a");
      await s.remove("v");
      expect(await code(s.stat("a"))).toBe(ErrorCode.NotFound);
      await vi.waitFor(() => expect(held).toHaveLength(2), { timeout: 20_000 });
      expect((await readdir(join(root, "snapshots"))).sort()).toEqual(before);
      // Cleanup meanwhile neither claims nor deletes them (no rm-* name, no double delete): it
      // waits for the deletions, and so does close().
      const cleanup = tracked(s.cleanup());
      const close = tracked(s.close());
      await settle();
      expect(cleanup.done || close.done).toBe(false);
      expect((await readdir(join(root, "snapshots"))).sort()).toEqual(before);
      for (const release of held.splice(0)) release();
      await cleanup.promise;
      await close.promise;
      expect(await readdir(join(root, "snapshots"))).toEqual([]);
      expect(spy).toHaveBeenCalledTimes(2);
    } finally {
      for (const release of held.splice(0)) release();
      spy.mockRestore();
    }
  });

  it("a Prepare out of space while a removed snapshot's directory is being deleted waits for it and tries once more", async () => {
    const s = await make("none");
    await s.prepare("a", "");
    const held: Array<() => void> = [];
    const removal = OverlayFilesystem.prototype.removeDirectory;
    const removeSpy = vi
      .spyOn(OverlayFilesystem.prototype, "removeDirectory")
      .mockImplementation(async function (this: OverlayFilesystem, ...args) {
        await new Promise<void>((resolve) => held.push(resolve));
        return removal.apply(this, args);
      });
    const creation = OverlayFilesystem.prototype.createDirectory;
    let full = true;
    const createSpy = vi
      .spyOn(OverlayFilesystem.prototype, "createDirectory")
      .mockImplementation(async function (this: OverlayFilesystem, ...args) {
        if (full) {
          full = false;
          throw Object.assign(new Error("no space left on device"), { code: "ENOSPC" });
        }
        return creation.apply(this, args);
      });
    try {
      await s.remove("a");
      await vi.waitFor(() => expect(held).toHaveLength(1), { timeout: 20_000 });
      const prepare = tracked(s.prepare("b", ""));
      await settle();
      // The first try failed for space; the second waits for the deletion.
      expect(createSpy).toHaveBeenCalledTimes(1);
      expect(prepare.done).toBe(false);
      for (const release of held.splice(0)) release();
      expect(await prepare.promise).toHaveLength(1);
      expect(createSpy).toHaveBeenCalledTimes(2);
      expect(await code(s.stat("a"))).toBe(ErrorCode.NotFound);
      expect((await s.stat("b")).kind).toBe(Kind.Active);
      // Without a deletion running, running out of space is the caller's error at once.
      full = true;
      expect(await code(s.prepare("c", ""))).toBe(ErrorCode.ResourceExhausted);
      expect(createSpy).toHaveBeenCalledTimes(3);
    } finally {
      for (const release of held.splice(0)) release();
      removeSpy.mockRestore();
      createSpy.mockRestore();
    }
  });

  it("removes a snapshot's directory only after the deletion is durable", async () => {
    const s = await make("none");
    await s.prepare("a", "");
    const before = await readdir(join(root, "snapshots"));
    expect(before).toHaveLength(1);
    const syncs = holdSyncs();
    try {
      const remove = tracked(s.remove("a"));
      await vi.waitFor(() => expect(syncs.waiting).toBe(1), { timeout: 20_000 });
      expect(await readdir(join(root, "snapshots"))).toEqual(before);
      // Cleanup meanwhile leaves the directory alone (it waits for the same sync).
      const cleanup = tracked(s.cleanup());
      await settle();
      expect(await readdir(join(root, "snapshots"))).toEqual(before);
      expect(remove.done || cleanup.done).toBe(false);
      await syncs.releaseAll();
      await remove.promise;
      await cleanup.promise;
      expect(await readdir(join(root, "snapshots"))).toEqual([]);
      expect(await code(s.stat("a"))).toBe(ErrorCode.NotFound);
    } finally {
      await syncs.releaseAll();
      syncs.restore();
    }
  });

  it("shares one sync among concurrent calls", async () => {
    const s = await make("none");
    await s.prepare("warm", "");
    const syncs = holdSyncs();
    try {
      const calls = Array.from({ length: 8 }, (_, index) => tracked(s.prepare(`k${index}`, "")));
      // Every Prepare commits its row (seen by a second connection: committed, not synced)
      // while the first sync is held; none is answered; then one more sync covers all the rest.
      const reader = new DatabaseSync(join(root, "metadata.db"));
      try {
        await vi.waitFor(
          () =>
            expect(reader.prepare("SELECT count(*) AS n FROM snapshots").get()).toEqual({ n: 9 }),
          { timeout: 20_000, interval: 20 },
        );
      } finally {
        reader.close();
      }
      expect(syncs.count).toBe(1);
      expect(calls.some((call) => call.done)).toBe(false);
      await syncs.releaseAll();
      await Promise.all(calls.map((call) => call.promise));
      expect(syncs.count).toBeLessThanOrEqual(2);
    } finally {
      await syncs.releaseAll();
      syncs.restore();
    }
  });
});

describe("nix layers", () => {
  it("roots and realises in one batch, then mounts ancestors' paths for descendants only", async () => {
    const s = await make("bind");
    const [p1, p2, p3] = [nix.path("one"), nix.path("two"), nix.path("three")];
    nix.substitutable.add(p1);
    nix.substitutable.add(p2);
    await nix.add(p3);

    await s.prepare("base-key", "");
    await s.commit("base", "base-key");
    const own = await s.prepare("nix-key", "base", { labels: nixLabels([p1, p2]) });
    // The nix layer itself gets the plain overlay: the differ writes into it.
    expect(own.map((mount) => mount.type)).toEqual(["overlay"]);
    const realises = nix.calls.filter((call) => call.method === "realise");
    expect(realises).toEqual([{ method: "realise", args: [[p1, p2], { owner: "test-2" }] }]);
    expect([...(nix.roots.get("test-2") ?? [])].sort()).toEqual([p1, p2].sort());
    await s.commit("nix1", "nix-key", { labels: nixLabels([p1, p2]) });

    // A nix layer on top of another gets no store mounts either (its unpack writes there).
    const second = await s.prepare("nix2-key", "nix1", { labels: nixLabels([p2, p3]) });
    expect(second.map((mount) => mount.type)).toEqual(["overlay"]);
    expect(await s.mounts("nix2-key")).toEqual(second);
    await s.commit("nix2", "nix2-key");
    // An ordinary layer unpacked on top (labelled with its chain id by containerd's unpacker)
    // gets no store mounts either; a container does.
    const ordinary = await s.prepare("ordinary-key", "nix2", {
      labels: { "containerd.io/snapshot.ref": "sha256:abc" },
    });
    expect(ordinary.map((mount) => mount.type)).toEqual(["overlay"]);
    expect(await s.mounts("ordinary-key")).toEqual(ordinary);
    await s.remove("ordinary-key");
    const container = await s.prepare("container", "nix2");
    expect(container[0]?.type).toBe("overlay");
    expect(container.slice(1)).toEqual(
      [p1, p2, p3].map((path) => ({
        type: "bind",
        source: path,
        target: path,
        options: ["ro", "rbind"],
      })),
    );
    const view = await s.view("look", "nix2");
    expect(view.slice(1).map((mount) => mount.target)).toEqual([p1, p2, p3]);

    await s.remove("container");
    await s.remove("look");
    await s.remove("nix2");
    expect(nix.roots.has("test-3")).toBe(false);
    expect(nix.roots.has("test-2")).toBe(true);
  });

  it("answers NotFound naming the path when one vanished while Nix worked, whatever Nix said", async () => {
    const s = await make("bind");
    const [kept, vanishing] = [await nix.add(nix.path("kept")), await nix.add(nix.path("gone"))];
    for (const code of [ErrorCode.Unavailable, ErrorCode.Internal, ErrorCode.NotFound]) {
      nix.valid.add(vanishing);
      nix.realiseFailures.push({
        error: new FakeNixStoreError(code, "realise of 2 store path(s) failed"),
        during: () => nix.valid.delete(vanishing),
      });
      const error = await failure(
        s.prepare(`k-${code}`, "", { labels: nixLabels([kept, vanishing]) }),
      );
      expect(error.code, error.message).toBe(ErrorCode.NotFound);
      expect(error.message).toContain(`store path "${vanishing}"`);
      expect(error.message).toContain(`${nixStorePathLabelPrefix}1`);
    }
    expect(nix.roots.size).toBe(0);
    expect(await readdir(join(root, "snapshots"))).toEqual([]);
  });

  it("tries once more when Nix failed but every path is valid now (one came back)", async () => {
    const s = await make("bind");
    const path = await nix.add(nix.path("back"));
    nix.realiseFailures.push({
      error: new FakeNixStoreError("Internal", "realise failed; 0 path(s) not valid"),
    });
    await s.prepare("k", "", { labels: nixLabels([path]) });
    expect(nix.calls.filter((call) => call.method === "realise")).toHaveLength(2);
    // Twice: a clear FailedPrecondition, never Internal.
    for (let index = 0; index < 2; index++) {
      nix.realiseFailures.push({
        error: new FakeNixStoreError("Internal", "realise failed; 0 path(s) not valid"),
      });
    }
    const error = await failure(s.prepare("k2", "", { labels: nixLabels([path]) }));
    expect(error.code, error.message).toBe(ErrorCode.FailedPrecondition);
    expect(error.message).toContain('snapshot "k2"');
  });

  it("leaves nothing behind when realisation fails", async () => {
    const s = await make("bind");
    const missing = nix.path("missing");
    const error = await failure(s.prepare("k", "", { labels: nixLabels([missing]) }));
    expect(error.code).toBe(ErrorCode.NotFound);
    expect(error.message).toContain('snapshot "k"');
    expect(nix.roots.size).toBe(0);
    expect(await readdir(join(root, "snapshots"))).toEqual([]);
    expect(await code(s.stat("k"))).toBe(ErrorCode.NotFound);
  });

  it("cancels a slow realisation when the caller aborts, leaving nothing", async () => {
    const s = await make("bind");
    const slow = nix.path("slow");
    nix.substitutable.add(slow);
    nix.realiseGate = new Promise(() => {});
    const controller = new AbortController();
    const pending = failure(
      s.prepare("k", "", { labels: nixLabels([slow]), signal: controller.signal }),
    );
    while (!nix.calls.some((call) => call.method === "realise"))
      await new Promise((r) => setImmediate(r));
    controller.abort();
    const error = await pending;
    expect(error.code).toBe(ErrorCode.Canceled);
    expect(error.message).toContain('snapshot "k"');
    expect(nix.roots.size).toBe(0);
    expect(await readdir(join(root, "snapshots"))).toEqual([]);
    expect(await code(s.stat("k"))).toBe(ErrorCode.NotFound);
  });

  it("fails with DeadlineExceeded when realising exceeds realiseTimeoutMs", async () => {
    const s = await createSnapshotter({ root, nixStore: nix, realiseTimeoutMs: 50 });
    open.push(s);
    const slow = nix.path("slow");
    nix.substitutable.add(slow);
    nix.realiseGate = new Promise(() => {});
    const error = await failure(s.prepare("k", "", { labels: nixLabels([slow]) }));
    expect(error.code).toBe(ErrorCode.DeadlineExceeded);
    expect(nix.roots.size).toBe(0);
  });

  it.each(["/etc", "/nix/store/../etc", "/nix/store/x"])(
    "refuses the hostile store-path label %j before calling Nix",
    async (value) => {
      const s = await make("bind");
      const good = await nix.add(nix.path("good"));
      const error = await failure(
        s.prepare("k", "", {
          labels: { ...nixLabels([good]), [`${nixStorePathLabelPrefix}1`]: value },
        }),
      );
      expect(error.code).toBe(ErrorCode.InvalidArgument);
      expect(error.message).toContain(`${nixStorePathLabelPrefix}1`);
      expect(nix.calls).toEqual([]);
      expect(await readdir(join(root, "snapshots"))).toEqual([]);
    },
  );

  it("refuses a closure file listing a path outside the store and removes the roots", async () => {
    const s = await make("bind");
    const closure = await nix.add(nix.path("closure-info"));
    const good = await nix.add(nix.path("good"));
    nix.closureInfos.set(closure, [good, "/etc", ""]);
    const error = await failure(s.prepare("k", "", { labels: { [nixClosureLabel]: closure } }));
    expect(error.code).toBe(ErrorCode.InvalidArgument);
    expect(error.message).toContain(nixClosureLabel);
    expect(error.message).toContain('"/etc"');
    expect(nix.roots.size).toBe(0);
    expect(await readdir(join(root, "snapshots"))).toEqual([]);
  });

  it("refuses a closure listing a path that is not valid, naming the label", async () => {
    const s = await make("bind");
    const closure = await nix.add(nix.path("closure-info"));
    const gone = nix.path("gone");
    nix.closureInfos.set(closure, [gone]);
    const error = await failure(s.prepare("k", "", { labels: { [nixClosureLabel]: closure } }));
    expect(error.code).toBe(ErrorCode.FailedPrecondition);
    expect(error.message).toContain(nixClosureLabel);
    expect(error.message).toContain(gone);
  });

  it("mounts the paths a closure lists, with one root for the closure", async () => {
    const s = await make("bind");
    const [a, b] = [await nix.add(nix.path("a")), await nix.add(nix.path("b"))];
    const closure = await nix.add(nix.path("closure-info"));
    nix.closureInfos.set(closure, [b, a]);
    await s.prepare("k", "", { labels: { [nixClosureLabel]: closure } });
    expect([...(nix.roots.get("test-1") ?? [])]).toEqual([closure]);
    await s.commit("layer", "k");
    const mounts = await s.view("v", "layer");
    expect(mounts.slice(1).map((mount) => mount.source)).toEqual([b, a]);
  });

  it("refuses a store path that is a symlink in bind mode", async () => {
    const s = await make("bind");
    const link = await nix.add(nix.path("link"), (path) => symlink("/etc", path));
    const error = await failure(s.prepare("k", "", { labels: nixLabels([link]) }));
    expect(error.code).toBe(ErrorCode.InvalidArgument);
    expect(error.message).toContain("symbolic link");
    expect(nix.roots.size).toBe(0);
  });

  it("ignores nix labels in mount mode none", async () => {
    const s = await make("none");
    await s.prepare("k", "", { labels: { [`${nixStorePathLabelPrefix}0`]: "/etc" } });
    expect(nix.calls).toEqual([]);
  });

  it("hard-links store files into the layer at commit, replacing planted symlinks", async () => {
    const s = await make("hardlink");
    const target = join(directory, "host-etc");
    await mkdir(target);
    const pkg = await nix.add(nix.path("pkg"), async (path) => {
      await mkdir(join(path, "bin"), { recursive: true });
      await writeFile(join(path, "bin", "tool"), "#!/bin/sh\n", { mode: 0o555 });
      await symlink("tool", join(path, "bin", "alias"));
    });
    const single = await nix.add(nix.path("single-file"), (path) => writeFile(path, "data"));
    const [mount] = await s.prepare("k", "", { labels: nixLabels([pkg, single]) });
    const upper = mount!.source;
    // Hostile layer content: the store dir inside the layer is a symlink to a host directory.
    const storeInLayer = join(upper, nix.storeDir);
    await mkdir(join(storeInLayer, ".."), { recursive: true });
    await symlink(target, storeInLayer);
    await s.commit("layer", "k");

    expect(await readdir(target)).toEqual([]);
    expect((await lstat(storeInLayer)).isDirectory()).toBe(true);
    const linked = join(upper, pkg, "bin", "tool");
    expect((await stat(linked)).ino).toBe((await stat(join(pkg, "bin", "tool"))).ino);
    expect((await lstat(join(upper, pkg, "bin", "alias"))).isSymbolicLink()).toBe(true);
    expect(await readFile(join(upper, single), "utf8")).toBe("data");
    // Containers get one plain overlay, no bind mounts.
    expect((await s.prepare("c", "layer")).map((m) => m.type)).toEqual(["overlay"]);
  });

  it("links layers committed in bind mode when reopened in hardlink mode", async () => {
    const pkg = await nix.add(nix.path("pkg"));
    const bind = await make("bind");
    await bind.prepare("k", "", { labels: nixLabels([pkg]) });
    await bind.commit("layer", "k");
    const [view] = await bind.view("v", "layer");
    expect(view?.source).toMatch(/snapshots\/1\/fs$/);
    const file = join(view!.source, pkg, "bin", pkg.split("/").pop()!);
    await expect(stat(file)).rejects.toMatchObject({ code: "ENOENT" });
    await bind.close();

    const hardlink = await make("hardlink");
    const mounts = await hardlink.prepare("c", "layer");
    expect(mounts.map((mount) => mount.type)).toEqual(["overlay"]);
    expect((await stat(file)).ino).toBe((await stat(join(pkg, "bin", pkg.split("/").pop()!))).ino);
    // Linked once: a second container does not redo it (redoing would drop this marker).
    const marker = join(view!.source, pkg, "marker");
    await writeFile(marker, "x");
    await hardlink.prepare("c2", "layer");
    expect(await readFile(marker, "utf8")).toBe("x");
  });

  it("deduplicates and orders 10,000 store paths across a chain", async () => {
    const s = await make("bind");
    const paths: string[] = [];
    for (let index = 0; index < 10_000; index++) {
      const path = nix.path(`p${index}`, `seed-${index}`);
      nix.valid.add(path);
      paths.push(path);
    }
    await mkdir(nix.storeDir, { recursive: true });
    for (const path of paths) await mkdir(path);
    await s.prepare("k1", "", { labels: nixLabels(paths.slice(0, 6000)) });
    await s.commit("l1", "k1");
    await s.prepare("k2", "l1", { labels: nixLabels(paths.slice(4000)) });
    await s.commit("l2", "k2");
    const mounts = await s.prepare("c", "l2");
    expect(mounts.slice(1).map((mount) => mount.source)).toEqual(paths);
  });
});

describe("crash safety and cleanup", () => {
  it("removes orphaned directories and roots, keeping live ones", async () => {
    const s = await make("bind");
    const path = await nix.add(nix.path("kept"));
    await s.prepare("live", "", { labels: nixLabels([path]) });
    await mkdir(join(root, "snapshots", "new-99-dead"), { recursive: true });
    await mkdir(join(root, "snapshots", "rm-dead"), { recursive: true });
    await mkdir(join(root, "snapshots", "42", "fs"), { recursive: true });
    await nix.addRoots("test-42", [path]);
    await nix.addRoots("someone-else-1", [path]);
    await s.cleanup();
    expect(await readdir(join(root, "snapshots"))).toEqual(["1"]);
    expect([...nix.roots.keys()].sort()).toEqual(["someone-else-1", "test-1"]);
  });

  it("resolves staged and half-removed root directories at start and in Cleanup", async () => {
    const path = await nix.add(nix.path("kept"));
    let s = await make("bind");
    await s.prepare("live", "", { labels: nixLabels([path]) });
    await s.close();
    // A kill while creating roots for a Prepare (id 70) and while removing those of id 71, of
    // the live snapshot 1 (a second add to its owner), and another snapshotter's leftover.
    nix.leftovers.set(".new-test-70-aaaaaaaaaaaa", { owner: "test-70", state: "staged" });
    nix.leftovers.set(".removing-test-71-bbbbbbbbbbbb", { owner: "test-71", state: "removing" });
    nix.leftovers.set(".new-test-1-cccccccccccc", { owner: "test-1", state: "staged" });
    nix.leftovers.set(".new-other-5-dddddddddddd", { owner: "other-5", state: "staged" });
    s = await make("bind");
    expect([...nix.leftovers.keys()]).toEqual([".new-other-5-dddddddddddd"]);
    expect([...nix.roots.keys()]).toEqual(["test-1"]);
    // Cleanup resolves the same ones when they appear while running.
    nix.leftovers.set(".removing-test-1-eeeeeeeeeeee", { owner: "test-1", state: "removing" });
    await s.cleanup();
    expect([...nix.leftovers.keys()]).toEqual([".new-other-5-dddddddddddd"]);
    expect([...nix.roots.keys()]).toEqual(["test-1"]);
    expect((await s.mounts("live")).length).toBeGreaterThan(0);
  });

  it("Cleanup in a loop beside Prepares of nix and plain layers removes nothing they own", async () => {
    const s = await make("bind");
    const paths = await Promise.all(
      Array.from({ length: 4 }, (_, index) => nix.add(nix.path(`p${index}`))),
    );
    await s.prepare("base-key", "");
    await s.commit("base", "base-key");
    let stop = false;
    let cleanups = 0;
    const cleaner = (async () => {
      while (!stop) {
        await s.cleanup();
        cleanups++;
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();
    const prepared: string[] = [];
    await Promise.all(
      Array.from({ length: 4 }, async (_, lane) => {
        for (let index = 0; index < 30; index++) {
          const key = `k-${lane}-${index}`;
          const nixLayer = index % 2 === 0;
          await s.prepare(
            key,
            nixLayer ? "" : "base",
            nixLayer ? { labels: nixLabels([paths[(lane + index) % paths.length]!]) } : {},
          );
          prepared.push(key);
          if (index % 3 === 0) await s.commit(`c-${key}`, key);
          if (index % 5 === 0) await s.remove(index % 3 === 0 ? `c-${key}` : key);
        }
      }),
    );
    stop = true;
    await cleaner;
    await s.cleanup();
    expect(cleanups).toBeGreaterThan(0);
    const store = new MetadataStore(join(root, "metadata.db"));
    try {
      const records = store.all();
      expect(records.length).toBe(1 + 4 * 30 - 4 * 6);
      // Every snapshot keeps its directory, every nix layer its roots; nothing else is left.
      const directories = (await readdir(join(root, "snapshots"))).sort();
      expect(directories).toEqual(records.map((record) => String(record.id)).sort());
      for (const record of records) {
        expect((await stat(join(root, "snapshots", String(record.id), "fs"))).isDirectory()).toBe(
          true,
        );
      }
      const expectedOwners = records
        .filter((record) => record.nixPaths.length > 0)
        .map((record) => `test-${record.id}`)
        .sort();
      expect(expectedOwners.length).toBe(4 * 15 - 4 * 3);
      expect([...nix.roots.keys()].sort()).toEqual(expectedOwners);
    } finally {
      store.close();
    }
  });
});
