import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createGcRoots } from "@nix-snapshotter/nix-store";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { crashPointEnv } from "./crash-point.js";
import { nixStorePathLabelPrefix } from "./nix-labels.js";
import { createSnapshotter } from "./snapshotter.js";
import { MetadataStore } from "./storage/metastore.js";
import { exitOf, spawnTypeScriptChild } from "./testing/child-process.js";
import { gcRootsPort } from "./testing/gc-roots-port.js";
import { Kind } from "./types.js";

const url = (path: string) => pathToFileURL(join(import.meta.dirname, path)).href;
const gcRootsModule = pathToFileURL(
  join(import.meta.dirname, "..", "..", "nix-store", "src", "gc-roots.ts"),
).href;

let directory: string;
let root: string;
let storeDir: string;
let gcRootsDir: string;
const paths = ["a", "b", "c"].map((letter) => `${letter.repeat(32)}-${letter}`);

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-crash-points-"));
  root = join(directory, "root");
  storeDir = join(directory, "store");
  gcRootsDir = join(directory, "gcroots");
  for (const path of paths) await mkdir(join(storeDir, path), { recursive: true });
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** The child: `setup` makes the starting state, `act` runs the steps a crash point interrupts. */
const childSource = `
  import { createGcRoots } from ${JSON.stringify(gcRootsModule)};
  import { createSnapshotter } from ${JSON.stringify(url("snapshotter.ts"))};
  import { gcRootsPort } from ${JSON.stringify(url("testing/gc-roots-port.ts"))};
  const [root, storeDir, gcRootsDir, phase] = process.argv.slice(2);
  const nixStore = gcRootsPort(storeDir, createGcRoots(gcRootsDir));
  const s = await createSnapshotter({ root, mountMode: "bind", nixStore, gcRootOwnerPrefix: "crash-" });
  const labels = (names) => ({
    "containerd.io/snapshot/nix-layer": "true",
    ...Object.fromEntries(names.map((name, i) => ["${nixStorePathLabelPrefix}" + i, storeDir + "/" + name])),
  });
  if (phase === "setup") {
    await s.prepare("base-key", "");
    await s.commit("base", "base-key");
    await s.prepare("old-key", "", { labels: labels(${JSON.stringify(paths.slice(0, 2))}) });
    await s.commit("old", "old-key");
    await s.prepare("kept-key", "", { labels: labels(${JSON.stringify(paths.slice(1))}) });
    await s.commit("kept", "kept-key");
    await s.prepare("container", "kept");
  } else if (phase === "act-container") {
    // A snapshot without roots: its directory is deleted after the answer.
    await s.remove("container");
    console.error("removed: answered");
  } else {
    await s.prepare("new", "base", { labels: labels(${JSON.stringify(paths)}) });
    await s.commit("c-new", "new");
    await s.remove("old");
  }
  await s.close();
  console.log("done");
`;

async function runChild(phase: "setup" | "act" | "act-container", crashPoint?: string) {
  const env = { ...process.env };
  if (crashPoint === undefined) delete env[crashPointEnv];
  else env[crashPointEnv] = crashPoint;
  const child = await spawnTypeScriptChild(
    directory,
    childSource,
    [root, storeDir, gcRootsDir, phase],
    env,
  );
  return exitOf(child);
}

/** Where each crash point lies: the state a restart must find (old or new, never between). */
const points = [
  { point: "prepare:directory", state: "before" },
  { point: "gc-roots:add:staged", state: "before", leftover: "staged" },
  { point: "gc-roots:add:linked", state: "before", leftover: "staged" },
  { point: "gc-roots:add:renamed", state: "before" },
  { point: "prepare:realised", state: "before" },
  { point: "prepare:committed", state: "prepared" },
  { point: "commit:prepared", state: "prepared" },
  { point: "remove:committed", state: "removed" },
  { point: "remove:durable", state: "removed" },
  { point: "remove:deleted", state: "removed" },
  // After the answer to a Remove of a snapshot without roots, before its directory goes.
  { point: "remove:answered", state: "container-removed", act: "act-container" },
  { point: "gc-roots:remove:renamed", state: "removed", leftover: "removing" },
] as const;

describe("kill -9 at each step of Prepare, Commit, Remove and of GC root creation and removal", () => {
  it.each(points)("$point leaves the old or the new state, and exactly its roots", async (row) => {
    const setup = await runChild("setup");
    expect(setup, setup.stderr).toMatchObject({ code: 0, signal: null });
    const crashed = await runChild("act" in row ? row.act : "act", row.point);
    // The child reached the step and died there.
    expect(crashed.signal, crashed.stderr).toBe("SIGKILL");
    if (row.state === "container-removed") {
      // Killed after the Remove was answered, with the directory still there.
      expect(crashed.stderr).toContain("removed: answered");
      expect(await readdir(join(root, "snapshots"))).toHaveLength(4);
    }
    const roots = createGcRoots(gcRootsDir);
    if ("leftover" in row) {
      expect((await roots.leftovers()).map((leftover) => leftover.state)).toEqual([row.leftover]);
    }

    const s = await createSnapshotter({
      root,
      mountMode: "bind",
      nixStore: gcRootsPort(storeDir, roots),
      gcRootOwnerPrefix: "crash-",
    });
    try {
      await s.cleanup();
      const names = new Map<string, string>();
      for await (const info of s.list()) names.set(info.name, info.kind);
      const expected: Record<string, string> = {
        base: Kind.Committed,
        old: Kind.Committed,
        kept: Kind.Committed,
        container: Kind.Active,
      };
      if (row.state === "prepared") expected.new = Kind.Active;
      if (row.state === "container-removed") delete expected.container;
      if (row.state === "removed") {
        delete expected.old;
        expected["c-new"] = Kind.Committed;
      }
      expect(Object.fromEntries(names)).toEqual(expected);
      for (const name of names.keys()) {
        if (names.get(name) !== Kind.Committed)
          expect((await s.mounts(name)).length).toBeGreaterThan(0);
      }

      const store = new MetadataStore(join(root, "metadata.db"));
      let records: ReturnType<MetadataStore["all"]>;
      try {
        expect(store.check()).toEqual([]);
        records = store.all();
      } finally {
        store.close();
      }
      // Directories: exactly one per snapshot, each complete.
      const directories = (await readdir(join(root, "snapshots"))).sort();
      expect(directories).toEqual(records.map((record) => String(record.id)).sort());
      for (const record of records) {
        expect((await stat(join(root, "snapshots", String(record.id), "fs"))).isDirectory()).toBe(
          true,
        );
      }
      // Roots: exactly those of the nix layers that exist, nothing hidden left.
      expect(await roots.leftovers()).toEqual([]);
      const nixRecords = records.filter((record) => record.nixPaths.length > 0);
      expect(await roots.owners()).toEqual(nixRecords.map((record) => `crash-${record.id}`).sort());
      for (const record of nixRecords) {
        expect(await roots.list(`crash-${record.id}`)).toEqual([...record.nixPaths].sort());
      }
      expect((await readdir(gcRootsDir)).sort()).toEqual(
        nixRecords.map((record) => `crash-${record.id}`).sort(),
      );

      // And it keeps working: the interrupted change can be made again.
      if (row.state !== "removed") {
        if (row.state === "before" || row.state === "container-removed") {
          await s.prepare("new", "base");
        }
        await s.commit("c-new", "new");
        await s.remove("old");
      }
      if (row.state !== "container-removed") await s.remove("container");
      await s.remove("kept");
      await s.remove("c-new");
      expect(await roots.owners()).toEqual([]);
    } finally {
      await s.close();
    }
  });

  it("completes without a crash point (the child's steps run to the end)", async () => {
    expect(await runChild("setup")).toMatchObject({ code: 0, signal: null });
    expect(await runChild("act")).toMatchObject({ code: 0, signal: null });
    expect(await runChild("act-container")).toMatchObject({ code: 0, signal: null });
  });
});
