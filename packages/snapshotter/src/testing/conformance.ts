import {
  chmod,
  chown,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CodedError, codeFromGrpcStatus } from "@nix-snapshotter/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode } from "../errors.js";
import { type Info, Kind, type Mount, type Snapshotter } from "../types.js";
import { mountAll, unmountAll } from "./mount.js";

/** What the suite drives: a snapshotter (in process or a gRPC client) and its teardown. */
export interface ConformanceTarget {
  snapshotter: Snapshotter;
  /** Stops whatever the factory started (a daemon, a server); called after close(). */
  cleanup?: () => Promise<void>;
}

export interface ConformanceContext {
  /** A fresh empty directory for this test (e.g. for the snapshotter root). */
  directory: string;
}

export type ConformanceFactory = (context: ConformanceContext) => Promise<ConformanceTarget>;

export interface ConformanceOptions {
  /** Mounts returned mounts onto a directory; default mount(8) (root). */
  mount?: (mounts: readonly Mount[], target: string) => Promise<void>;
  unmount?: (target: string) => Promise<void>;
  /** Skip the whole suite with this reason (default: skip unless running as root). */
  skip?: string | false;
}

/** The code of a rejected call (a SnapshotterError, or a ConnectError's gRPC status). */
async function codeOf(promise: Promise<unknown>): Promise<ErrorCode | "ok"> {
  try {
    await promise;
    return "ok";
  } catch (error) {
    if (CodedError.is(error)) return error.code;
    const code = (error as { code?: unknown } | null)?.code;
    if (typeof code === "number") return codeFromGrpcStatus(code);
    throw error;
  }
}

type Entry =
  | { path: string; file: string; mode?: number }
  | { path: string; directory: true; mode?: number }
  | { path: string; remove: true }
  | { path: string; renameTo: string };

async function apply(root: string, entries: readonly Entry[]): Promise<void> {
  for (const entry of entries) {
    const path = join(root, entry.path);
    if ("file" in entry) {
      await writeFile(path, entry.file);
      await chmod(path, entry.mode ?? 0o644);
    } else if ("directory" in entry) {
      await mkdir(path, { recursive: true });
      await chmod(path, entry.mode ?? 0o755);
    } else if ("remove" in entry) {
      await rm(path, { recursive: true });
    } else {
      try {
        await rename(path, join(root, entry.renameTo));
      } catch (error) {
        // Without redirect_dir, overlayfs refuses to rename a merged directory (EXDEV);
        // mv(1) copies then, and so does this helper.
        if ((error as NodeJS.ErrnoException).code !== "EXDEV") throw error;
        await copyTree(path, join(root, entry.renameTo));
        await rm(path, { recursive: true });
      }
    }
  }
}

async function copyTree(source: string, destination: string): Promise<void> {
  const info = await lstat(source);
  if (info.isDirectory()) {
    await mkdir(destination);
    for (const name of await readdir(source)) {
      await copyTree(join(source, name), join(destination, name));
    }
    await chmod(destination, info.mode & 0o7777);
  } else {
    await writeFile(destination, await readFile(source));
    await chmod(destination, info.mode & 0o7777);
  }
}

/** Every path below root (relative, sorted) with "dir", or the file's content. */
async function tree(root: string): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const walk = async (directory: string, prefix: string) => {
    for (const name of (await readdir(directory)).sort()) {
      const path = join(directory, name);
      const info = await lstat(path);
      const key = `${prefix}${name}`;
      if (info.isDirectory()) {
        result[`${key}/`] = "dir";
        await walk(path, `${key}/`);
      } else {
        result[key] = await readFile(path, "utf8");
      }
    }
  };
  await walk(root, "/");
  return result;
}

/**
 * containerd's snapshotter behaviour as tests (its snapshots/testsuite is the model): run it
 * with a factory giving a fresh snapshotter per test. Needs root and real mounts.
 */
export function runConformanceSuite(
  name: string,
  factory: ConformanceFactory,
  options: ConformanceOptions = {},
): void {
  const mount = options.mount ?? mountAll;
  const unmount = options.unmount ?? unmountAll;
  const skip = options.skip ?? (process.getuid?.() === 0 ? false : "needs root for real mounts");

  describe.skipIf(skip !== false)(
    `${name}: snapshotter conformance${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      let directory: string;
      let target: ConformanceTarget;
      let snapshotter: Snapshotter;
      let mounted: string[] = [];
      let counter = 0;

      beforeEach(async () => {
        directory = await mkdtemp(join(tmpdir(), "snapshotter-conformance-"));
        await chmod(directory, 0o755);
        target = await factory({ directory: join(directory, "target") });
        snapshotter = target.snapshotter;
        mounted = [];
      });

      afterEach(async () => {
        for (const path of mounted.reverse()) await unmount(path).catch(() => {});
        await snapshotter.close();
        await target.cleanup?.();
        await rm(directory, { recursive: true, force: true });
      });

      /** Mounts `mounts` on a fresh directory, runs fn, unmounts. */
      async function withMounted<T>(mounts: Mount[], fn: (root: string) => Promise<T>): Promise<T> {
        const path = join(directory, `mnt-${counter++}`);
        await mkdir(path);
        await mount(mounts, path);
        mounted.push(path);
        try {
          return await fn(path);
        } finally {
          await unmount(path);
          mounted.splice(mounted.indexOf(path), 1);
        }
      }

      /** Prepare on parent, apply entries, commit as name. */
      async function layer(name: string, parent: string, entries: readonly Entry[]): Promise<void> {
        const key = `${name}-active`;
        const mounts = await snapshotter.prepare(key, parent);
        await withMounted(mounts, (root) => apply(root, entries));
        await snapshotter.commit(name, key);
      }

      async function viewTree(parent: string): Promise<Record<string, string>> {
        const key = `view-${counter++}`;
        const mounts = await snapshotter.view(key, parent);
        const result = await withMounted(mounts, tree);
        await snapshotter.remove(key);
        return result;
      }

      it("basic workflow: prepare, write, commit, prepare on top, view, walk, remove", async () => {
        const first = await snapshotter.prepare("preparing", "");
        await withMounted(first, (root) =>
          apply(root, [
            { path: "/a", directory: true },
            { path: "/a/b", file: "hello" },
            { path: "/c", file: "c" },
          ]),
        );
        await snapshotter.commit("committed", "preparing");
        expect(await snapshotter.stat("committed")).toMatchObject({
          kind: Kind.Committed,
          name: "committed",
          parent: "",
        });
        expect(await codeOf(snapshotter.stat("preparing"))).toBe(ErrorCode.NotFound);

        const next = await snapshotter.prepare("next", "committed");
        await withMounted(next, async (root) => {
          expect(await tree(root)).toEqual({ "/a/": "dir", "/a/b": "hello", "/c": "c" });
          await apply(root, [
            { path: "/a/b", file: "changed" },
            { path: "/a/d", file: "d" },
            { path: "/c", remove: true },
          ]);
        });
        await snapshotter.commit("next-committed", "next");
        expect((await snapshotter.stat("next-committed")).parent).toBe("committed");

        const view = await snapshotter.view("view", "next-committed");
        await withMounted(view, async (root) => {
          expect(await tree(root)).toEqual({ "/a/": "dir", "/a/b": "changed", "/a/d": "d" });
        });
        expect((await snapshotter.stat("view")).kind).toBe(Kind.View);

        const names: string[] = [];
        await snapshotter.walk((info) => {
          names.push(info.name);
        });
        expect(names.sort()).toEqual(["committed", "next-committed", "view"]);

        await snapshotter.remove("view");
        await snapshotter.remove("next-committed");
        await snapshotter.remove("committed");
        const left: Info[] = [];
        await snapshotter.walk((info) => {
          left.push(info);
        });
        expect(left).toEqual([]);
      });

      it("stat of an active snapshot", async () => {
        const mounts = await snapshotter.prepare("active", "", { labels: { a: "1" } });
        await withMounted(mounts, (root) => apply(root, [{ path: "/f", file: "x" }]));
        const info = await snapshotter.stat("active");
        expect(info).toMatchObject({
          kind: Kind.Active,
          name: "active",
          parent: "",
          labels: { a: "1" },
        });
        expect(info.created.getTime()).toBeGreaterThan(0);
      });

      it("stat of a committed snapshot", async () => {
        await layer("base", "", [{ path: "/f", file: "x" }]);
        await layer("top", "base", [{ path: "/g", file: "y" }]);
        expect(await snapshotter.stat("top")).toMatchObject({
          kind: Kind.Committed,
          name: "top",
          parent: "base",
        });
      });

      it("transitivity: a snapshot sees every ancestor's files", async () => {
        await layer("l1", "", [{ path: "/one", file: "1" }]);
        await layer("l2", "l1", [{ path: "/two", file: "2" }]);
        await layer("l3", "l2", [{ path: "/three", file: "3" }]);
        expect(await viewTree("l3")).toEqual({ "/one": "1", "/three": "3", "/two": "2" });
        expect(await viewTree("l2")).toEqual({ "/one": "1", "/two": "2" });
      });

      it("prepare and view conflicts", async () => {
        await layer("base", "", [{ path: "/f", file: "x" }]);
        await snapshotter.prepare("active", "base");
        await snapshotter.view("view", "base");
        expect(await codeOf(snapshotter.prepare("active", "base"))).toBe(ErrorCode.AlreadyExists);
        expect(await codeOf(snapshotter.view("active", "base"))).toBe(ErrorCode.AlreadyExists);
        expect(await codeOf(snapshotter.prepare("view", "base"))).toBe(ErrorCode.AlreadyExists);
        expect(await codeOf(snapshotter.prepare("base", ""))).toBe(ErrorCode.AlreadyExists);
        // Parents must be committed.
        expect(await codeOf(snapshotter.prepare("child", "active"))).toBe(
          ErrorCode.InvalidArgument,
        );
        expect(await codeOf(snapshotter.view("child", "view"))).toBe(ErrorCode.InvalidArgument);
        expect(await codeOf(snapshotter.prepare("child", "missing"))).toBe(ErrorCode.NotFound);
        expect(await codeOf(snapshotter.commit("c", "view"))).toBe(ErrorCode.FailedPrecondition);
        expect(await codeOf(snapshotter.commit("base", "active"))).toBe(ErrorCode.AlreadyExists);
        expect(await codeOf(snapshotter.mounts("base"))).toBe(ErrorCode.FailedPrecondition);
        expect(await codeOf(snapshotter.mounts("missing"))).toBe(ErrorCode.NotFound);
      });

      it("update: labels and labels.<key>, timestamps, immutable fields", async () => {
        await snapshotter.prepare("active", "", { labels: { keep: "k", drop: "d" } });
        const before = await snapshotter.stat("active");
        const one = await snapshotter.update({ ...before, labels: { added: "a", drop: "" } }, [
          "labels.added",
          "labels.drop",
        ]);
        expect(one.labels).toEqual({ keep: "k", added: "a" });
        expect(one.created.getTime()).toBe(before.created.getTime());
        expect(one.updated.getTime()).toBeGreaterThanOrEqual(before.updated.getTime());
        const all = await snapshotter.update({ ...before, labels: { only: "o" } }, ["labels"]);
        expect(all.labels).toEqual({ only: "o" });
        const none = await snapshotter.update({ ...before, labels: { replaced: "r" } });
        expect(none.labels).toEqual({ replaced: "r" });
        expect((await snapshotter.stat("active")).labels).toEqual({ replaced: "r" });
        for (const path of ["name", "kind", "parent", "created", "updated"]) {
          expect(await codeOf(snapshotter.update({ ...before, labels: {} }, [path]))).toBe(
            ErrorCode.InvalidArgument,
          );
        }
        expect(await codeOf(snapshotter.update({ ...before, name: "missing" }))).toBe(
          ErrorCode.NotFound,
        );
      });

      it("remove: children protect parents; missing keys are NotFound", async () => {
        await layer("base", "", [{ path: "/f", file: "x" }]);
        await snapshotter.prepare("child", "base");
        expect(await codeOf(snapshotter.remove("base"))).toBe(ErrorCode.FailedPrecondition);
        await snapshotter.remove("child");
        await snapshotter.remove("base");
        expect(await codeOf(snapshotter.remove("base"))).toBe(ErrorCode.NotFound);
      });

      it("walk with containerd filters", async () => {
        await snapshotter.prepare("a", "", { labels: { "x.y": "1", group: "g" } });
        await snapshotter.commit("base", "a", { labels: { "x.y": "1" } });
        await snapshotter.prepare("b", "base", { labels: { "x.y": "2", group: "g" } });
        await snapshotter.view("v", "base", { labels: { other: "o" } });
        const names = async (filters: string[]) => {
          const found: string[] = [];
          await snapshotter.walk((info) => {
            found.push(info.name);
          }, filters);
          return found.sort();
        };
        expect(await names([])).toEqual(["b", "base", "v"]);
        expect(await names(["kind==active"])).toEqual(["b"]);
        expect(await names(["kind==view", "kind==committed"])).toEqual(["base", "v"]);
        expect(await names(["parent==base"])).toEqual(["b", "v"]);
        expect(await names(["name==base"])).toEqual(["base"]);
        expect(await names(['labels."x.y"==1'])).toEqual(["base"]);
        expect(await names(['labels."x.y"!=1'])).toEqual(["b", "v"]);
        expect(await names(["labels.group"])).toEqual(["b"]);
        expect(await names(["labels.group,kind==view"])).toEqual([]);
        expect(await names(["name~=^(b|v)$"])).toEqual(["b", "v"]);
        expect(await codeOf(snapshotter.walk(() => {}, ["name=="]))).toBe(
          ErrorCode.InvalidArgument,
        );
      });

      it("file updates across layers", async () => {
        await layer("l1", "", [
          { path: "/foo", file: "1" },
          { path: "/keep", file: "k" },
        ]);
        await layer("l2", "l1", [{ path: "/foo", file: "2" }]);
        await layer("l3", "l2", [{ path: "/foo", file: "3" }]);
        expect(await viewTree("l1")).toEqual({ "/foo": "1", "/keep": "k" });
        expect(await viewTree("l2")).toEqual({ "/foo": "2", "/keep": "k" });
        expect(await viewTree("l3")).toEqual({ "/foo": "3", "/keep": "k" });
      });

      it("removed directories and files in lower layers stay removed", async () => {
        await layer("l1", "", [
          { path: "/dir", directory: true },
          { path: "/dir/sub", directory: true },
          { path: "/dir/sub/file", file: "f" },
          { path: "/file", file: "f" },
          { path: "/other", file: "o" },
        ]);
        await layer("l2", "l1", [
          { path: "/dir", remove: true },
          { path: "/file", remove: true },
        ]);
        await layer("l3", "l2", [{ path: "/dir", directory: true }]);
        expect(await viewTree("l2")).toEqual({ "/other": "o" });
        // A directory recreated above a removed one is empty (opaque).
        expect(await viewTree("l3")).toEqual({ "/dir/": "dir", "/other": "o" });
      });

      it("chown survives commit", async () => {
        await layer("l1", "", [
          { path: "/owned", file: "x" },
          { path: "/dir", directory: true },
        ]);
        const key = "chown-active";
        await withMounted(await snapshotter.prepare(key, "l1"), async (root) => {
          await chown(join(root, "owned"), 1234, 5678);
          await chown(join(root, "dir"), 1001, 1002);
        });
        await snapshotter.commit("l2", key);
        await withMounted(await snapshotter.view("v", "l2"), async (root) => {
          const owned = await stat(join(root, "owned"));
          expect([owned.uid, owned.gid]).toEqual([1234, 5678]);
          const dir = await stat(join(root, "dir"));
          expect([dir.uid, dir.gid]).toEqual([1001, 1002]);
        });
      });

      it("directory permissions survive commit", async () => {
        await layer("l1", "", [
          { path: "/private", directory: true, mode: 0o700 },
          { path: "/sticky", directory: true, mode: 0o1777 },
          { path: "/script", file: "#!/bin/sh\n", mode: 0o755 },
        ]);
        await layer("l2", "l1", [{ path: "/private/f", file: "x", mode: 0o600 }]);
        await withMounted(await snapshotter.view("v", "l2"), async (root) => {
          expect((await stat(join(root, "private"))).mode & 0o7777).toBe(0o700);
          expect((await stat(join(root, "sticky"))).mode & 0o7777).toBe(0o1777);
          expect((await stat(join(root, "script"))).mode & 0o7777).toBe(0o755);
          expect((await stat(join(root, "private/f"))).mode & 0o7777).toBe(0o600);
        });
      });

      it("removing intermediate snapshots", async () => {
        await layer("base", "", [{ path: "/a", file: "a" }]);
        await layer("middle", "base", [{ path: "/b", file: "b" }]);
        await snapshotter.prepare("top", "middle");
        expect(await codeOf(snapshotter.remove("middle"))).toBe(ErrorCode.FailedPrecondition);
        expect(await codeOf(snapshotter.remove("base"))).toBe(ErrorCode.FailedPrecondition);
        await snapshotter.remove("top");
        await snapshotter.remove("middle");
        await snapshotter.remove("base");
      });

      it("renames of files and directories across layers", async () => {
        await layer("l1", "", [
          { path: "/dir1", directory: true, mode: 0o700 },
          { path: "/somefiles", directory: true },
          { path: "/somefiles/f1", file: "was here first" },
          { path: "/somefiles/f2", file: "nothing interesting" },
        ]);
        await layer("l2", "l1", [
          { path: "/dir1", renameTo: "/dir2" },
          { path: "/somefiles/f1", renameTo: "/f1" },
          { path: "/somefiles/f2", renameTo: "/somefiles/f1" },
        ]);
        expect(await viewTree("l2")).toEqual({
          "/dir2/": "dir",
          "/f1": "was here first",
          "/somefiles/": "dir",
          "/somefiles/f1": "nothing interesting",
        });
      });

      it("views are read-only", async () => {
        await layer("l1", "", [{ path: "/f", file: "x" }]);
        await layer("l2", "l1", [{ path: "/g", file: "y" }]);
        for (const parent of ["l1", "l2"]) {
          const key = `view-of-${parent}`;
          await withMounted(await snapshotter.view(key, parent), async (root) => {
            await expect(writeFile(join(root, "new"), "z")).rejects.toMatchObject({
              code: "EROFS",
            });
            await expect(writeFile(join(root, "f"), "z")).rejects.toMatchObject({ code: "EROFS" });
          });
          expect(await snapshotter.mounts(key)).toEqual(await snapshotter.mounts(key));
        }
        const emptyView = await snapshotter.view("empty-view", "");
        await withMounted(emptyView, async (root) => {
          await expect(writeFile(join(root, "new"), "z")).rejects.toMatchObject({ code: "EROFS" });
        });
      });

      it("stat inside walk", async () => {
        await layer("l1", "", [{ path: "/f", file: "x" }]);
        await snapshotter.prepare("a", "l1");
        await snapshotter.view("v", "l1");
        let seen = 0;
        await snapshotter.walk(async (info) => {
          const again = await snapshotter.stat(info.name);
          expect(again.name).toBe(info.name);
          expect(again.kind).toBe(info.kind);
          seen++;
        });
        expect(seen).toBe(3);
      });

      it("closing twice", async () => {
        await snapshotter.close();
        await snapshotter.close();
      });

      it("root permissions of a fresh snapshot are 0755", async () => {
        const mounts = await snapshotter.prepare("fresh", "");
        await withMounted(mounts, async (root) => {
          expect((await stat(root)).mode & 0o7777).toBe(0o755);
        });
      });

      it("usage: live for active snapshots, recorded at commit", async () => {
        const mounts = await snapshotter.prepare("active", "");
        const empty = await snapshotter.usage("active");
        await withMounted(mounts, (root) =>
          apply(root, [{ path: "/big", file: "x".repeat(256 * 1024) }]),
        );
        const full = await snapshotter.usage("active");
        expect(full.inodes).toBe(empty.inodes + 1);
        expect(full.size - empty.size).toBeGreaterThanOrEqual(256 * 1024);
        await snapshotter.commit("committed", "active");
        expect(await snapshotter.usage("committed")).toEqual(full);
      });

      it("128 layers mount (long lowerdir option)", async () => {
        let parent = "";
        for (let index = 0; index < 128; index++) {
          const name = `layer-${index}`;
          await layer(name, parent, [
            { path: `/file-${index}`, file: String(index) },
            { path: "/top", file: String(index) },
          ]);
          parent = name;
        }
        const mounts = await snapshotter.prepare("on-top", parent);
        await withMounted(mounts, async (root) => {
          const names = await readdir(root);
          expect(names).toHaveLength(129);
          expect(await readFile(join(root, "top"), "utf8")).toBe("127");
          expect(await readFile(join(root, "file-0"), "utf8")).toBe("0");
          await writeFile(join(root, "written"), "w");
        });
        await snapshotter.commit("layer-128", "on-top");
        expect((await viewTree("layer-128"))["/written"]).toBe("w");
      });
    },
  );
}
