import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, lstat, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { createNixStore } from "@nix-snapshotter/nix-store";
import {
  createNixFixtures,
  type LogEntry,
  type NixFixtures,
  nixE2eSkipReason,
  recordingLogger,
  TEST_GC_ROOTS_PARENT,
} from "@nix-snapshotter/nix-store/testing";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { nanosecondsOf } from "../clock.js";
import { ErrorCode, SnapshotterError } from "../errors.js";
import { defaultGcRootOwnerPrefix } from "../gc-root-owner.js";
import { nixStorePortFrom } from "../nix-store-adapter.js";
import type { NixStorePort } from "../nix-store-port.js";
import { createSnapshotter } from "../snapshotter.js";
import { spawnTypeScriptChild } from "../testing/child-process.js";
import {
  buildGoMetastore,
  dumpGoRoot,
  type GoDumpRecord,
  goMetastoreUnavailable,
  runGoMetastore,
} from "../testing/go-metastore.js";
import type { Info } from "../types.js";
import { type MigrationStep, migrateGoRoot, migrationSteps } from "./migrate-go-root.js";

const skipReason = goMetastoreUnavailable() ?? nixE2eSkipReason(["nix-store"]);
const migrateModule = pathToFileURL(join(import.meta.dirname, "migrate-go-root.ts")).href;
const adapterModule = pathToFileURL(join(import.meta.dirname, "..", "nix-store-adapter.ts")).href;
const nixStoreModule = pathToFileURL(
  join(
    import.meta.dirname,
    "..",
    "..",
    "node_modules",
    "@nix-snapshotter",
    "nix-store",
    "dist",
    "index.js",
  ),
).href;

/** Every file and directory under `directory` with its type, size, mode and content hash. */
async function tree(directory: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const walk = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    const name = relative(directory, path) || ".";
    if (stats.isDirectory()) {
      result[name] = `dir ${stats.mode.toString(8)}`;
      for (const entry of await readdir(path)) await walk(join(path, entry));
    } else if (stats.isSymbolicLink()) {
      result[name] = `link ${await readlink(path)}`;
    } else {
      const hash = createHash("sha256")
        .update(await readFile(path))
        .digest("hex");
      result[name] = `file ${stats.mode.toString(8)} ${stats.size} ${hash}`;
    }
  };
  await walk(directory);
  return result;
}

async function isSqlite(path: string): Promise<boolean> {
  const head = await readFile(path).then((bytes) => bytes.subarray(0, 16).toString("latin1"));
  return head === "SQLite format 3\0";
}

describe.skipIf(skipReason !== undefined)(
  `taking over a Go nix-snapshotter root${skipReason ? ` (skipped: ${skipReason})` : ""}`,
  () => {
    let fixtures: NixFixtures;
    let storePaths: string[];
    let directory: string;
    let gcRootsDir: string;
    let nixStore: NixStorePort;

    beforeAll(async () => {
      await buildGoMetastore();
      fixtures = await createNixFixtures({ label: "migration" });
      const script = await fixtures.script();
      const busybox = await fixtures.busybox();
      storePaths = [script.storePath, busybox.storePath];
    }, 600_000);

    afterAll(async () => {
      await fixtures?.cleanup();
    });

    beforeEach(async () => {
      directory = await mkdtemp(join(tmpdir(), "migrate-go-root-"));
      gcRootsDir = join(TEST_GC_ROOTS_PARENT, `migration-${randomBytes(6).toString("hex")}`);
      nixStore = nixStorePortFrom(createNixStore({ gcRootsDir }));
    });

    afterEach(async () => {
      await rm(directory, { recursive: true, force: true });
      await rm(gcRootsDir, { recursive: true, force: true });
    });

    /** A Go root: plain layer, nix layer with Go GC roots, active container, view. */
    async function goRoot(): Promise<{ root: string; before: GoDumpRecord[] }> {
      const root = join(directory, "root");
      await runGoMetastore(["root", root, ...storePaths]);
      return { root, before: await dumpGoRoot(root) };
    }

    /** Checks a root after migration against what the Go MetaStore held before. */
    async function expectMigrated(root: string, before: GoDumpRecord[]): Promise<void> {
      expect(await isSqlite(join(root, "metadata.db"))).toBe(true);
      expect(existsSync(join(root, "gcroots"))).toBe(false);
      expect(existsSync(join(root, "metadata.go.db"))).toBe(false);
      expect(existsSync(join(root, "metadata.db.migrating"))).toBe(false);
      const snapshotter = await createSnapshotter({ root, nixStore });
      try {
        const infos: Info[] = [];
        for await (const info of snapshotter.list()) infos.push(info);
        expect(infos.map((info) => info.name).sort()).toEqual(before.map((r) => r.key).sort());
        for (const record of before) {
          const info = infos.find((candidate) => candidate.name === record.key)!;
          expect(info.kind).toBe(record.kind.toLowerCase());
          expect(info.parent).toBe(record.parent);
          expect(info.labels).toEqual(record.labels);
          expect(String(nanosecondsOf(info.created))).toBe(record.created);
          expect(String(nanosecondsOf(info.updated))).toBe(record.updated);
          if (record.kind === "Committed") {
            expect(await snapshotter.usage(record.key)).toEqual({
              size: record.size,
              inodes: record.inodes,
            });
          }
        }
        // Directories are kept: the container's data is in its upper directory.
        const container = before.find((record) => record.key === "container-1")!;
        const mounts = await snapshotter.mounts("container-1");
        const overlay = mounts[0]!;
        expect(overlay.options).toContain(
          `upperdir=${join(root, "snapshots", container.id, "fs")}`,
        );
        expect(
          await readFile(join(root, "snapshots", container.id, "fs/data/state.txt"), "utf8"),
        ).toBe("container state\n");
        const layer1 = before.find((record) => record.key === "sha256:aaa")!;
        expect(overlay.options.find((option) => option.startsWith("lowerdir="))).toContain(
          join(root, "snapshots", layer1.id, "fs"),
        );
        // Store paths of the nix layer are bind-mounted into the container and the view.
        for (const key of ["container-1", "view-1"]) {
          const targets = (await snapshotter.mounts(key))
            .filter((mount) => mount.type === "bind")
            .map((mount) => mount.source);
          expect(targets).toEqual(storePaths);
        }
        // Our GC roots hold the nix layer's paths.
        const nixLayer = before.find((record) => record.key === "sha256:bbb")!;
        const owner = `${defaultGcRootOwnerPrefix(root)}${nixLayer.id}`;
        expect(await nixStore.listRootOwners()).toEqual([owner]);
        const links = await readdir(join(gcRootsDir, owner));
        expect(links.sort()).toEqual(
          storePaths.map((path) => path.slice("/nix/store/".length)).sort(),
        );
        // Cleanup keeps everything; new ids do not collide with the Go ones.
        await snapshotter.cleanup();
        for (const record of before)
          expect(existsSync(join(root, "snapshots", record.id))).toBe(true);
        expect(await nixStore.listRootOwners()).toEqual([owner]);
        await snapshotter.prepare("new-after-migration", "sha256:bbb");
        const ids = (await readdir(join(root, "snapshots"))).map(Number);
        expect(ids).toHaveLength(before.length + 1);
        expect(Math.max(...ids)).toBeGreaterThan(Math.max(...before.map((r) => Number(r.id))));
        // Removing everything releases every root.
        for (const key of [
          "new-after-migration",
          "container-1",
          "view-1",
          "sha256:bbb",
          "sha256:aaa",
        ]) {
          await snapshotter.remove(key);
        }
        expect(await nixStore.listRootOwners()).toEqual([]);
      } finally {
        await snapshotter.close();
      }
    }

    it("takes over every snapshot in place, with a log line", async () => {
      const { root, before } = await goRoot();
      expect(before).toHaveLength(4);
      // The Go daemon's roots: <root>/gcroots/<id>/<hash>-<name>, each a link to a store path.
      const nixLayer = before.find((record) => record.key === "sha256:bbb")!;
      expect((await readdir(join(root, "gcroots", nixLayer.id))).sort()).toEqual(
        storePaths.map((path) => path.slice("/nix/store/".length)).sort(),
      );
      const entries: LogEntry[] = [];
      const result = await migrateGoRoot({ root, nixStore, logger: recordingLogger(entries) });
      expect(result).toMatchObject({
        outcome: "migrated",
        snapshots: 4,
        committed: 2,
        active: 1,
        view: 1,
        nixLayers: 1,
        gcRoots: 2,
      });
      const line = entries.find(
        (entry) => entry.level === "info" && entry.message?.startsWith("migrated"),
      );
      expect(line?.message).toMatch(
        /4 snapshots \(2 committed, 1 active, 1 view\), 1 nix layers with 2 GC roots/,
      );
      await expectMigrated(root, before);
      // A second start has nothing to do.
      expect(await migrateGoRoot({ root, nixStore })).toBeUndefined();
    });

    it("takes over a root with hundreds of snapshots, keeping ids and the id sequence", async () => {
      const root = join(directory, "many");
      await runGoMetastore(["many", root, "150"]);
      const before = await dumpGoRoot(root);
      expect(before).toHaveLength(300);
      const result = await migrateGoRoot({ root, nixStore });
      expect(result).toMatchObject({ snapshots: 300, committed: 150, view: 150, nixLayers: 0 });
      const snapshotter = await createSnapshotter({ root, nixStore });
      try {
        const infos = new Map<string, Info>();
        for await (const info of snapshotter.list()) infos.set(info.name, info);
        for (const record of before) {
          const info = infos.get(record.key)!;
          expect({ kind: info.kind, parent: info.parent, labels: info.labels }).toEqual({
            kind: record.kind.toLowerCase(),
            parent: record.parent,
            labels: record.labels,
          });
        }
        // The Go sequence went one past the last snapshot (a removed one): ours continues after it.
        await snapshotter.prepare("next", "");
        const names = await readdir(join(root, "snapshots"));
        const newest = Math.max(...names.map(Number));
        expect(newest).toBeGreaterThan(301);
        await snapshotter.cleanup();
        expect(await readdir(join(root, "snapshots"))).toHaveLength(301);
      } finally {
        await snapshotter.close();
      }
    });

    describe("refuses, changing nothing on disk", () => {
      async function expectRefusal(root: string, pattern: RegExp): Promise<SnapshotterError> {
        const state = await tree(root);
        const error = await migrateGoRoot({ root, nixStore }).catch((caught: unknown) => caught);
        expect(error).toBeInstanceOf(SnapshotterError);
        expect((error as Error).message).toMatch(pattern);
        expect(await tree(root)).toEqual(state);
        expect(await nixStore.listRootOwners()).toEqual([]);
        return error as SnapshotterError;
      }

      it("a corrupt bolt database", async () => {
        const { root } = await goRoot();
        const database = join(root, "metadata.db");
        const bytes = await readFile(database);
        // Zero the data pages: the meta pages still say there is data there.
        bytes.fill(0, 2 * 4096, bytes.length);
        await writeFile(database, bytes);
        const error = await expectRefusal(
          root,
          /metadata\.db.*Nothing was changed\. Restore .*metadata\.db from a backup/s,
        );
        expect(error.code).toBe(ErrorCode.DataLoss);
      });

      it("a truncated bolt database", async () => {
        const { root } = await goRoot();
        const database = join(root, "metadata.db");
        await writeFile(database, (await readFile(database)).subarray(0, 4096 + 100));
        await expectRefusal(root, /metadata\.db.*(truncated|meta page)/s);
      });

      it("an unknown bolt version", async () => {
        const { root } = await goRoot();
        const database = join(root, "metadata.db");
        const bytes = await readFile(database);
        for (const page of [0, 4096]) bytes.writeUInt32LE(7, page + 20);
        await writeFile(database, bytes);
        const error = await expectRefusal(root, /unknown bolt data file version/);
        expect(error.code).toBe(ErrorCode.FailedPrecondition);
      });

      it("a root that is both Go's and ours", async () => {
        const { root } = await goRoot();
        // Our database (SQLite) with the Go gcroots/ tree beside it.
        const ours = join(directory, "ours");
        await (await createSnapshotter({ root: ours })).close();
        await rm(join(root, "metadata.db"));
        await cp(join(ours, "metadata.db"), join(root, "metadata.db"));
        await expectRefusal(root, /both the Go nix-snapshotter and this one/);
      });

      it("a Go root whose database was deleted", async () => {
        const { root } = await goRoot();
        await rm(join(root, "metadata.db"));
        await expectRefusal(
          root,
          /4 snapshot directories and a Go gcroots\/ tree but no .*metadata\.db/,
        );
      });
    });

    describe("a crash at any step", () => {
      it.each(migrationSteps.filter((step) => step !== "done"))(
        "after %s leaves a root that the next start migrates or uses",
        async (killAt: MigrationStep) => {
          const { root, before } = await goRoot();
          const source = `
            import { createNixStore } from ${JSON.stringify(nixStoreModule)};
            import { nixStorePortFrom } from ${JSON.stringify(adapterModule)};
            import { migrateGoRoot } from ${JSON.stringify(migrateModule)};
            const nixStore = nixStorePortFrom(createNixStore({ gcRootsDir: process.argv[3] }));
            await migrateGoRoot({
              root: process.argv[2],
              nixStore,
              onStep(step) {
                console.log("step " + step);
                if (step === process.argv[4]) process.kill(process.pid, "SIGKILL");
              },
            });
            console.log("finished");
          `;
          const child = await spawnTypeScriptChild(directory, source, [root, gcRootsDir, killAt]);
          let stdout = "";
          let stderr = "";
          child.stdout?.on("data", (chunk: Buffer) => {
            stdout += chunk.toString();
          });
          child.stderr?.on("data", (chunk: Buffer) => {
            stderr += chunk.toString();
          });
          const signal = await new Promise<NodeJS.Signals | null>((resolve) =>
            child.once("exit", (_code, exitSignal) => resolve(exitSignal)),
          );
          expect(signal, stderr).toBe("SIGKILL");
          expect(stdout).toContain(`step ${killAt}`);
          expect(stdout).not.toContain("finished");

          // Never a half state: the database is the Go one, unchanged, or ours.
          if (await isSqlite(join(root, "metadata.db"))) {
            expect(migrationSteps.indexOf(killAt)).toBeGreaterThanOrEqual(
              migrationSteps.indexOf("committed"),
            );
          } else {
            expect(await dumpGoRoot(root)).toEqual(before);
          }
          // Until the Go roots are released, every store path keeps a root of one kind or another.
          const nixLayer = before.find((record) => record.key === "sha256:bbb")!;
          const goLinks = existsSync(join(root, "gcroots", nixLayer.id))
            ? await readdir(join(root, "gcroots", nixLayer.id))
            : [];
          const ourLinks = existsSync(gcRootsDir)
            ? await readdir(gcRootsDir, { recursive: true })
            : [];
          for (const path of storePaths) {
            const base = path.slice("/nix/store/".length);
            expect(
              goLinks.includes(base) || ourLinks.some((link) => String(link).endsWith(base)),
            ).toBe(true);
          }

          const result = await migrateGoRoot({ root, nixStore });
          if (migrationSteps.indexOf(killAt) < migrationSteps.indexOf("committed")) {
            expect(result?.outcome).toBe("migrated");
          } else if (killAt === "committed") {
            expect(result?.outcome).toBe("finished");
          }
          await expectMigrated(root, before);
        },
      );
    });
  },
);
