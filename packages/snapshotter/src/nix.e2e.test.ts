import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { createNixStore, type NixStore } from "@nix-snapshotter/nix-store";
import {
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
  startBinaryCache,
  TEST_GC_ROOTS_PARENT,
} from "@nix-snapshotter/nix-store/testing";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { nixClosureLabel, nixLayerLabel, nixStorePathLabelPrefix } from "./nix-labels.js";
import { nixStorePortFrom } from "./nix-store-adapter.js";
import { createSnapshotter } from "./snapshotter.js";
import { kill9, spawnTypeScriptChild, waitForLine } from "./testing/child-process.js";
import { mountAll, unmountAll } from "./testing/mount.js";
import type { Mount, MountMode, Snapshotter } from "./types.js";

const run = promisify(execFile);
// For child processes started from a temporary directory: the workspace package's entry.
const nixStoreModule = pathToFileURL(
  join(
    import.meta.dirname,
    "..",
    "node_modules",
    "@nix-snapshotter",
    "nix-store",
    "dist",
    "index.js",
  ),
).href;
const skipReason = nixE2eSkipReason();

function perPathLabels(paths: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = { [nixLayerLabel]: "true" };
  paths.forEach((path, index) => {
    labels[`${nixStorePathLabelPrefix}${index}`] = path;
  });
  return labels;
}

describe.skipIf(skipReason !== undefined)(
  `nix layers with real Nix and real mounts${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    let fixtures: NixFixtures;
    let script: { storePath: string; executable: string; closure: string[] };
    let busybox: { storePath: string; closure: string[] };
    let directory: string;
    let gcRootsDir: string;
    let nixStore: NixStore;
    let snapshotter: Snapshotter;
    const mounted: string[] = [];

    beforeAll(async () => {
      fixtures = await createNixFixtures({ label: "snapshotter" });
      script = await fixtures.script();
      busybox = await fixtures.busybox();
    });

    afterAll(async () => {
      await fixtures?.cleanup();
    });

    beforeEach(async () => {
      directory = await mkdtemp(join(tmpdir(), "snapshotter-nix-"));
      gcRootsDir = join(TEST_GC_ROOTS_PARENT, `snapshotter-${randomBytes(6).toString("hex")}`);
      nixStore = createNixStore({ gcRootsDir });
    });

    afterEach(async () => {
      for (const path of mounted.splice(0).reverse()) await unmountAll(path).catch(() => {});
      await snapshotter?.close();
      await rm(directory, { recursive: true, force: true });
      await rm(gcRootsDir, { recursive: true, force: true });
    });

    async function open(mountMode: MountMode): Promise<Snapshotter> {
      snapshotter = await createSnapshotter({
        root: join(directory, "root"),
        mountMode,
        nixStore: nixStorePortFrom(nixStore),
        gcRootOwnerPrefix: "snapshot-",
      });
      return snapshotter;
    }

    async function mountAt(mounts: Mount[]): Promise<string> {
      const path = await mkdtemp(join(directory, "mnt-"));
      await mountAll(mounts, path);
      mounted.push(path);
      return path;
    }

    async function unmount(path: string): Promise<void> {
      await unmountAll(path);
      mounted.splice(mounted.indexOf(path), 1);
    }

    /** What containerd's unpacker does for a layer: Prepare, apply, Commit with the same labels. */
    async function unpack(
      name: string,
      parent: string,
      labels: Record<string, string>,
      apply: (root: string) => Promise<void>,
    ): Promise<void> {
      const key = `extract-${name}`;
      const mounts = await snapshotter.prepare(key, parent, { labels });
      // The layer being unpacked is the plain snapshot: no store mounts yet.
      expect(mounts.every((mount) => mount.target === undefined)).toBe(true);
      const root = await mountAt(mounts);
      await apply(root);
      await unmount(root);
      await snapshotter.commit(name, key, { labels });
    }

    /** The mountpoint layer of a nix image: an empty directory per store path. */
    function mountpoints(paths: readonly string[]) {
      return async (root: string) => {
        for (const path of paths) await mkdir(join(root, path), { recursive: true });
      };
    }

    async function runInContainer(mounts: Mount[], command: string[]): Promise<string> {
      const root = await mountAt(mounts);
      try {
        const { stdout } = await run("chroot", [root, ...command]);
        return stdout;
      } finally {
        await unmount(root);
      }
    }

    for (const mode of ["bind", "hardlink"] as const) {
      it(`${mode}: ordinary and two nix layers interleave; the store binary runs`, async () => {
        await open(mode);
        await unpack("ordinary", "", {}, async (root) => {
          await mkdir(join(root, "etc"));
          await writeFile(join(root, "etc", "motd"), "from the ordinary layer\n");
        });
        await unpack(
          "nix-1",
          "ordinary",
          perPathLabels(busybox.closure),
          mountpoints(busybox.closure),
        );
        await unpack("nix-2", "nix-1", perPathLabels(script.closure), mountpoints(script.closure));

        const container = await snapshotter.prepare("container", "nix-2");
        const binds = container.filter((mount) => mount.target !== undefined);
        if (mode === "bind") {
          expect(binds.map((mount) => mount.target).sort()).toEqual(
            [...new Set([...busybox.closure, ...script.closure])].sort(),
          );
        } else {
          expect(binds).toEqual([]);
        }
        expect(await snapshotter.mounts("container")).toEqual(container);
        expect(await runInContainer(container, [script.executable])).toBe("hello from nix store\n");
        expect(
          await runInContainer(container, [`${busybox.storePath}/bin/busybox`, "cat", "/etc/motd"]),
        ).toBe("from the ordinary layer\n");

        if (mode === "hardlink") {
          // The layer holds hard links to the store's own files.
          const layerRoot = join(directory, "root", "snapshots");
          const ids = await readdir(layerRoot);
          let linked = false;
          for (const id of ids) {
            const copy = join(layerRoot, id, "fs", script.executable);
            const info = await stat(copy).catch(() => undefined);
            if (info !== undefined) {
              expect(info.ino).toBe((await stat(script.executable)).ino);
              linked = true;
            }
          }
          expect(linked).toBe(true);
        }

        // Roots: one owner per nix layer; removing the snapshots releases them.
        const owners = await nixStore.listRootOwners();
        expect(owners).toHaveLength(2);
        for (const owner of owners)
          expect((await nixStore.listRoots(owner)).length).toBeGreaterThan(0);
        await snapshotter.remove("container");
        await snapshotter.remove("nix-2");
        await snapshotter.remove("nix-1");
        expect(await nixStore.listRootOwners()).toEqual([]);
      });
    }

    it("hardlink: a container writing or chmod-ing a linked store file never changes the store", async () => {
      await open("hardlink");
      await unpack("nix", "", perPathLabels(script.closure), mountpoints(script.closure));
      const target = script.executable;
      const before = await stat(target);
      const original = await readFile(target);
      const root = await mountAt(await snapshotter.prepare("container", "nix"));
      try {
        const inContainer = join(root, target);
        expect(await readFile(inContainer)).toEqual(original);
        await chmod(inContainer, 0o777);
        await writeFile(inContainer, "overwritten by a container\n");
        expect(await readFile(inContainer, "utf8")).toBe("overwritten by a container\n");
      } finally {
        await unmount(root);
      }
      const after = await stat(target);
      expect(await readFile(target)).toEqual(original);
      expect(after.mode).toBe(before.mode);
      expect(after.ino).toBe(before.ino);
      // The copy went to the container's own upper directory.
      const layers = join(directory, "root", "snapshots");
      const copies = [];
      for (const id of await readdir(layers)) {
        const candidate = join(layers, id, "fs", target);
        const info = await stat(candidate).catch(() => undefined);
        if (info !== undefined && info.ino !== before.ino) copies.push(id);
      }
      expect(copies).toHaveLength(1);
    });

    it("closure form: the closure-info root keeps the paths alive until Remove", async () => {
      await open("bind");
      const closure = await fixtures.syntheticClosure({ count: 20, name: "snapshotter-gc" });
      const closureInfo = closure.closureInfo!;
      await unpack("nix", "", { [nixClosureLabel]: closureInfo }, mountpoints(closure.paths));
      const view = await snapshotter.view("view", "nix");
      expect(
        view
          .slice(1)
          .map((mount) => mount.source)
          .sort(),
      ).toEqual([...closure.paths].sort());
      expect(await nixStore.listRoots("snapshot-1")).toEqual([closureInfo]);

      // Without the fixture's roots, only the snapshot keeps the paths alive.
      await closure.release();
      const victim = closure.paths[0]!;
      await expect(run("nix-store", ["--delete", victim])).rejects.toThrow(/alive/);
      await snapshotter.remove("view");
      await snapshotter.remove("nix");
      await fixtures.deletePaths([closureInfo, ...[...closure.paths].reverse()]);
      expect(await nixStore.isValid(victim)).toBe(false);
    });

    it.each([
      ["/etc", `${nixStorePathLabelPrefix}1`],
      ["/nix/store/../etc", `${nixStorePathLabelPrefix}1`],
      ["/nix/store/x", `${nixStorePathLabelPrefix}1`],
    ])("hostile label value %j is refused naming %s", async (value, label) => {
      await open("bind");
      let caught: unknown;
      try {
        await snapshotter.prepare("extract", "", {
          labels: { ...perPathLabels([script.storePath]), [label]: value },
        });
      } catch (error) {
        caught = error;
      }
      expect(SnapshotterError.is(caught, ErrorCode.InvalidArgument)).toBe(true);
      expect((caught as Error).message).toContain(label);
      expect(await readdir(join(directory, "root", "snapshots"))).toEqual([]);
      expect(await nixStore.listRootOwners()).toEqual([]);
    });

    it("a closure file listing /etc is refused and leaves no roots", async () => {
      await open("hardlink");
      const source = join(directory, "hostile-closure-info");
      await mkdir(source);
      await writeFile(join(source, "store-paths"), `${script.storePath}\n/etc\n`);
      const { stdout } = await run("nix-store", ["--add", source]);
      const hostile = stdout.trim();
      await fixtures.root("hostile-closure", [hostile]);
      let caught: unknown;
      try {
        await snapshotter.prepare("extract", "", { labels: { [nixClosureLabel]: hostile } });
      } catch (error) {
        caught = error;
      }
      expect(SnapshotterError.is(caught, ErrorCode.InvalidArgument)).toBe(true);
      expect((caught as Error).message).toContain(nixClosureLabel);
      expect(await readdir(join(directory, "root", "snapshots"))).toEqual([]);
      expect(await nixStore.listRootOwners()).toEqual([]);
      await fixtures.unroot("hostile-closure");
    });

    it("a missing store path fails Prepare and leaves nothing behind", async () => {
      await open("bind");
      const missing = "/nix/store/00000000000000000000000000000000-not-in-any-cache";
      let caught: unknown;
      try {
        await snapshotter.prepare("extract", "", {
          labels: perPathLabels([missing]),
        });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(SnapshotterError);
      expect((caught as Error).message).toContain('snapshot "extract"');
      expect(await readdir(join(directory, "root", "snapshots"))).toEqual([]);
      expect(await nixStore.listRootOwners()).toEqual([]);
      await expect(snapshotter.stat("extract")).rejects.toMatchObject({ code: ErrorCode.NotFound });
    });

    it("realises missing store paths from a binary cache during Prepare", async () => {
      const closure = await fixtures.syntheticClosure({
        count: 12,
        name: "snapshotter-cache",
        closureInfo: false,
      });
      const cache = await startBinaryCache({ paths: closure.paths });
      try {
        await closure.release();
        await fixtures.deletePaths([...closure.paths].reverse());
        expect(await nixStore.queryValidPaths(closure.paths)).toEqual([]);
        nixStore = createNixStore({ gcRootsDir, nixOptions: cache.nixOptions });
        await open("hardlink");
        await unpack("nix", "", perPathLabels(closure.tops), mountpoints(closure.tops));
        // The whole closure came back from the cache, and the layer's roots hold it.
        expect(await nixStore.queryValidPaths(closure.paths)).toEqual(closure.paths);
        expect(cache.requests()).toBeGreaterThan(0);
        expect(await nixStore.listRoots("snapshot-1")).toEqual([...closure.tops].sort());
        await snapshotter.remove("nix");
        expect(await nixStore.listRootOwners()).toEqual([]);
      } finally {
        await cache.close();
      }
    });

    it("kill -9 during realisation leaves roots that Cleanup removes", async () => {
      const closure = await fixtures.syntheticClosure({
        count: 5,
        name: "snapshotter-crash",
        closureInfo: false,
      });
      const cache = await startBinaryCache({ paths: closure.paths, latencyMs: 60_000 });
      const root = join(directory, "root");
      try {
        await closure.release();
        await fixtures.deletePaths([...closure.paths].reverse());
        const source = `
          import { createNixStore } from ${JSON.stringify(nixStoreModule)};
          import { createSnapshotter } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, "snapshotter.ts")).href)};
          import { nixStorePortFrom } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, "nix-store-adapter.ts")).href)};
          const [root, gcRootsDir, options, labels] = process.argv.slice(2);
          const nixStore = createNixStore({ gcRootsDir, nixOptions: JSON.parse(options) });
          const s = await createSnapshotter({ root, nixStore: nixStorePortFrom(nixStore), gcRootOwnerPrefix: "snapshot-" });
          console.log("preparing");
          await s.prepare("extract", "", { labels: JSON.parse(labels) });
          console.log("prepared");
        `;
        const child = await spawnTypeScriptChild(directory, source, [
          root,
          gcRootsDir,
          JSON.stringify(cache.nixOptions),
          JSON.stringify(perPathLabels(closure.tops)),
        ]);
        await waitForLine(child, /^preparing$/);
        // Roots come first, then Nix waits on the slow cache: kill the daemon there.
        while ((await nixStore.listRootOwners()).length === 0) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        // Nix is substituting from the slow cache: find its process.
        let realising: number[] = [];
        while (realising.length === 0) {
          const { stdout } = await run("pgrep", ["-a", "-P", String(child.pid)]).catch(() => ({
            stdout: "",
          }));
          realising = stdout
            .split("\n")
            .filter((line) => line.includes("--realise"))
            .map((line) => Number(line.split(" ")[0]));
          if (realising.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
        }
        // The daemon dies: its nix-store dies with it, by itself (nobody kills it here).
        await kill9(child);
        const running = async (pid: number) => {
          const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
          return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2).charAt(0) !== "Z";
        };
        const orphans: number[] = [];
        for (const pid of realising) {
          let alive = true;
          for (let index = 0; index < 400 && alive; index++) {
            alive = await running(pid);
            if (alive) await new Promise((resolve) => setTimeout(resolve, 25));
          }
          if (alive) {
            orphans.push(pid);
            process.kill(pid, "SIGKILL");
          }
        }
        expect(orphans).toEqual([]);
        // The Prepare's directory, made under its id before the row (which never committed).
        expect(await readdir(join(root, "snapshots"))).toEqual([expect.stringMatching(/^[0-9]+$/)]);

        await open("bind");
        await expect(snapshotter.stat("extract")).rejects.toMatchObject({
          code: ErrorCode.NotFound,
        });
        await snapshotter.cleanup();
        expect(await nixStore.listRootOwners()).toEqual([]);
        expect(await readdir(join(root, "snapshots"))).toEqual([]);
      } finally {
        await cache.close();
      }
    });

    it("cleanup removes roots whose snapshot is gone", async () => {
      await open("bind");
      await nixStore.addRoots("snapshot-77", [script.storePath]);
      await nixStore.addRoots("someone-else", [script.storePath]);
      await snapshotter.cleanup();
      expect(await nixStore.listRootOwners()).toEqual(["someone-else"]);
    });
  },
);
