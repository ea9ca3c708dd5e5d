import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, lstat, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isNixStoreError } from "./errors.js";
import type { RealiseProgress } from "./nix-log.js";
import { createNixStore, type NixStore } from "./nix-store.js";
import { defaultSpawn, type SpawnHook } from "./run-process.js";
import { NIX_BASE32_ALPHABET } from "./store-path.js";
import { type BinaryCache, startBinaryCache } from "./testing/binary-cache.js";
import { createNixFixtures, type NixFixtures, nixE2eSkipReason } from "./testing/fixtures.js";
import { exportStream } from "./testing/nar.js";

const exec = promisify(execFile);
const skipReason = nixE2eSkipReason();

function randomStorePath(name: string): string {
  const bytes = randomBytes(32);
  let hash = "";
  for (let index = 0; index < 32; index += 1) hash += NIX_BASE32_ALPHABET[bytes[index]! % 32];
  return `/nix/store/${hash}-${name}`;
}

async function nixStore(...args: string[]): Promise<string> {
  return (await exec("nix-store", args, { maxBuffer: 64 * 1024 * 1024 })).stdout;
}

async function invalidOf(paths: readonly string[]): Promise<string[]> {
  return (await nixStore("--check-validity", "--print-invalid", ...paths))
    .split("\n")
    .filter(Boolean);
}

/** A spawn hook that remembers the processes it started. */
function pidRecorder(): { spawn: SpawnHook; pids: number[]; calls: string[][] } {
  const pids: number[] = [];
  const calls: string[][] = [];
  return {
    pids,
    calls,
    spawn: (command, args, options) => {
      const child = defaultSpawn(command, args, options);
      calls.push([command, ...args]);
      if (child.pid !== undefined) pids.push(child.pid);
      return child;
    },
  };
}

/**
 * `nix-store --gc --print-roots` as link -> target. Nix 2.8 and 2.26 print `<link> -> <target>`;
 * 2.34 quotes the link (`"<link>" -> <target>`, backslash escapes): both are read.
 */
async function printedRoots(): Promise<Map<string, string>> {
  const roots = new Map<string, string>();
  for (const line of (await nixStore("--gc", "--print-roots")).split("\n")) {
    const quoted = /^"((?:[^"\\]|\\.)*)" -> (.*)$/.exec(line);
    const plain = quoted === null ? /^(.*?) -> (.*)$/.exec(line) : null;
    const match = quoted ?? plain;
    if (match === null) continue;
    const link = quoted === null ? match[1]! : match[1]!.replace(/\\(.)/g, "$1");
    roots.set(link, match[2]!);
  }
  return roots;
}

const realiseCalls = (calls: string[][]) => calls.filter((call) => call.includes("--realise"));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(skipReason !== undefined)(
  `nix-store against real Nix${skipReason === undefined ? "" : ` (skipped: ${skipReason})`}`,
  () => {
    let fixtures: NixFixtures;
    let store: NixStore;
    let gcRootsDir: string;
    let workDir: string;

    beforeAll(async () => {
      workDir = await mkdtemp(join(tmpdir(), "nix-store-e2e-"));
      fixtures = await createNixFixtures({ label: "nix-store-e2e" });
      gcRootsDir = join(fixtures.rootsDir, "store-roots");
      store = createNixStore({ gcRootsDir, nixOptions: { substituters: "" } });
    });

    afterAll(async () => {
      await fixtures?.cleanup();
      if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
    });

    it("detects the installed Nix", async () => {
      const version = await store.version();
      expect(version.major).toBe(2);
      expect((await nixStore("--version")).trim()).toBe(version.text);
      // Detected by asking Nix (nix-version.ts); the real Nix 2.8, 2.26 and 2.34 agree with
      // their release notes: max-substitution-jobs came with 2.17.
      const features = await store.features();
      expect(features).toEqual({
        internalJsonLog: true,
        maxSubstitutionJobs: version.major > 2 || version.minor >= 17,
      });
    });

    describe("queries", () => {
      it("answers validity, closure and path info for the redis closure", async () => {
        const redis = await fixtures.redis();
        const missing = randomStorePath("missing");
        expect(await store.isValid(redis.closure)).toBe(true);
        expect(await store.isValid([redis.storePath, missing])).toBe(false);
        expect(await store.queryValidPaths([missing, redis.storePath, redis.glibc])).toEqual([
          redis.storePath,
          redis.glibc,
        ]);
        expect(await store.closure([redis.storePath])).toEqual(redis.closure);
        const infos = await store.pathInfo([redis.storePath, redis.glibc]);
        const info = infos.get(redis.storePath)!;
        expect(info.references).toContain(redis.glibc);
        expect(info.references).toContain(redis.libraries.openssl);
        expect(info.narSize).toBeGreaterThan(100_000);
        expect(info.narHash).toMatch(/^[0-9a-f]{64}$/);
        expect(info.deriver).toMatch(/\.drv$/);
        // glibc's libraries only refer to glibc itself (their rpath names their own directory).
        expect(infos.get(redis.glibc)!.references.filter((path) => path !== redis.glibc)).toEqual(
          [],
        );
      });

      it("names invalid paths in closure and path info errors", async () => {
        const missing = randomStorePath("missing");
        const busybox = await fixtures.busybox();
        for (const attempt of [
          () => store.closure([busybox.storePath, missing]),
          () => store.pathInfo([missing]),
        ]) {
          const error = await attempt().catch((e: unknown) => e);
          expect(isNixStoreError(error, "NotFound")).toBe(true);
          expect((error as { failedPaths: string[] }).failedPaths).toEqual([missing]);
        }
      });

      it("reads a closure-info path of 1,000 paths", async () => {
        const synthetic = await fixtures.syntheticClosure({ count: 1000 });
        const listed = await store.readClosureInfo(synthetic.closureInfo!);
        expect(listed).toEqual([...synthetic.paths].sort());
        expect(await store.closure([synthetic.closureInfo!])).toEqual(
          [...synthetic.paths, synthetic.closureInfo!].sort(),
        );
        await synthetic.release();
        await fixtures.deletePaths([synthetic.closureInfo!, ...synthetic.paths]);
      });

      it("rejects hostile closure-info paths", async () => {
        const listsEtc = randomStorePath("closure-info");
        const isSymlink = randomStorePath("closure-info");
        const linksOut = randomStorePath("closure-info");
        const all = [listsEtc, isSymlink, linksOut];
        await fixtures.root("hostile-closure-info", all);
        await exec("sh", [
          "-c",
          'nix-store --import < "$1"',
          "sh",
          await writeExport([
            {
              storePath: listsEtc,
              references: [],
              node: {
                type: "directory",
                entries: { "store-paths": { type: "regular", contents: "/etc\n" } },
              },
            },
            { storePath: isSymlink, references: [], node: { type: "symlink", target: "/etc" } },
            {
              storePath: linksOut,
              references: [],
              node: {
                type: "directory",
                entries: { "store-paths": { type: "symlink", target: "/etc/passwd" } },
              },
            },
          ]),
        ]);
        expect(await invalidOf(all)).toEqual([]);
        await expect(store.readClosureInfo(listsEtc)).rejects.toThrow(/line 1 is not a store path/);
        await expect(store.readClosureInfo(isSymlink)).rejects.toThrow(/not a directory/);
        await expect(store.readClosureInfo(linksOut)).rejects.toSatisfy((error) =>
          isNixStoreError(error, "InvalidArgument"),
        );
        await expect(store.readClosureInfo(randomStorePath("closure-info"))).rejects.toSatisfy(
          (error) => isNixStoreError(error, "NotFound"),
        );
        await fixtures.unroot("hostile-closure-info");
      });

      async function writeExport(entries: Parameters<typeof exportStream>[0]): Promise<string> {
        const path = join(workDir, `export-${randomBytes(4).toString("hex")}`);
        await writeFile(path, exportStream(entries));
        return path;
      }
    });

    describe("realise from an HTTP binary cache", () => {
      let cache: BinaryCache;
      let paths: string[];
      let closureInfo: string;
      let cached: NixStore;

      beforeAll(async () => {
        const synthetic = await fixtures.syntheticClosure({ count: 120, name: "substituted" });
        paths = synthetic.paths;
        closureInfo = synthetic.closureInfo!;
        cache = await startBinaryCache({ paths: [closureInfo] });
        cached = createNixStore({ gcRootsDir, nixOptions: cache.nixOptions });
        await synthetic.release();
      });

      afterAll(async () => {
        await cache?.close();
      });

      /** Deletes the test paths from the store (they must be unrooted). */
      async function evict(): Promise<void> {
        for (const owner of await cached.listRootOwners()) await cached.removeRoots(owner);
        const valid = await cached.queryValidPaths([closureInfo, ...paths]);
        await fixtures.deletePaths(valid);
        expect(await invalidOf([closureInfo, ...paths])).toHaveLength(paths.length + 1);
      }

      it("brings deleted paths back in one Nix process, roots first, with progress", async () => {
        await evict();
        const events: RealiseProgress[] = [];
        const { spawn, calls } = pidRecorder();
        const withPids = createNixStore({ gcRootsDir, nixOptions: cache.nixOptions, spawn });
        await withPids.version();
        const result = await withPids.realise([closureInfo], {
          roots: { owner: "substitute-1" },
          onProgress: (event) => events.push(event),
        });
        expect(realiseCalls(calls)).toHaveLength(1);
        expect(result.paths).toEqual([closureInfo]);
        expect(new Set(result.substituted)).toEqual(new Set([closureInfo, ...paths]));
        expect(await invalidOf([closureInfo, ...paths])).toEqual([]);
        const started = events.filter((event) => event.type === "substitute-start");
        expect(started).toHaveLength(paths.length + 1);
        expect(
          started.every(
            (event) => event.type === "substitute-start" && event.substituter === cache.url,
          ),
        ).toBe(true);
        expect(events.at(-1)).toEqual({ type: "realised", storePath: closureInfo });
        expect(await withPids.listRoots("substitute-1")).toEqual([closureInfo]);
        expect(
          await readlink(join(gcRootsDir, "substitute-1", closureInfo.split("/").at(-1)!)),
        ).toBe(closureInfo);
      });

      it("runs concurrent realise calls on overlapping paths", async () => {
        await evict();
        const first = paths.slice(0, 80);
        const second = paths.slice(40);
        const [a, b] = await Promise.all([
          cached.realise(first, { roots: { owner: "overlap-a" } }),
          cached.realise(second, { roots: { owner: "overlap-b" } }),
        ]);
        expect(a.paths).toEqual(first);
        expect(b.paths).toEqual(second);
        expect(await invalidOf(paths)).toEqual([]);
        expect(await cached.listRoots("overlap-a")).toEqual([...first].sort());
        expect(await cached.listRoots("overlap-b")).toEqual([...second].sort());
      });

      it("cancels: kills Nix, reports Canceled, removes the roots it made, leaves the store usable", async () => {
        await evict();
        cache.setLatency(300);
        const controller = new AbortController();
        const { spawn, pids } = pidRecorder();
        const slow = createNixStore({ gcRootsDir, nixOptions: cache.nixOptions, spawn });
        const error = await slow
          // The whole closure at once: Nix asks the cache about every path in parallel.
          .realise([closureInfo, ...paths], {
            roots: { owner: "canceled" },
            signal: controller.signal,
            onProgress: (event) => {
              if (event.type === "substitute-start") controller.abort(new Error("user gave up"));
            },
          })
          .catch((e: unknown) => e);
        expect(isNixStoreError(error, "Canceled")).toBe(true);
        expect(pids.length).toBeGreaterThan(0);
        expect(pids.every((pid) => !alive(pid))).toBe(true);
        expect(await slow.listRootOwners()).not.toContain("canceled");
        expect((await invalidOf([closureInfo, ...paths])).length).toBeGreaterThan(0);
        cache.setLatency(0);
        await slow.realise([closureInfo], { roots: { owner: "after-cancel" } });
        expect(await invalidOf([closureInfo, ...paths])).toEqual([]);
      });

      it("times out with DeadlineExceeded and Nix's stderr", async () => {
        await evict();
        cache.setLatency(1500);
        const { spawn, pids } = pidRecorder();
        const slow = createNixStore({ gcRootsDir, nixOptions: cache.nixOptions, spawn });
        const error = await slow
          .realise([closureInfo], { roots: { owner: "timeout" }, timeoutMs: 400 })
          .catch((e: unknown) => e);
        cache.setLatency(0);
        expect(isNixStoreError(error, "DeadlineExceeded")).toBe(true);
        expect((error as Error).message).toContain("did not finish within 400 ms");
        expect(pids.every((pid) => !alive(pid))).toBe(true);
        expect(await slow.listRootOwners()).not.toContain("timeout");
      });

      it("reports the paths that no cache has, and realises the others", async () => {
        await evict();
        const missing = randomStorePath("not-in-any-cache");
        const error = await cached
          .realise([paths[0]!, missing], { roots: { owner: "partial" } })
          .catch((e: unknown) => e);
        expect(isNixStoreError(error, "NotFound")).toBe(true);
        expect((error as { failedPaths: string[] }).failedPaths).toEqual([missing]);
        expect((error as Error).message).toContain(missing);
        expect((error as { stderrTail: string }).stderrTail).toMatch(/substituter|build/);
        expect(await invalidOf([paths[0]!])).toEqual([]);
      });

      it("calls the external builder as <exe> <outLink> <storePath> for missing paths only", async () => {
        await evict();
        const log = join(workDir, "builder.log");
        const builder = join(workDir, "external-builder.sh");
        await writeFile(
          builder,
          [
            "#!/bin/sh",
            "set -eu",
            `echo "$1 $2" >> ${log}`,
            `exec nix-store --realise --add-root "$1" "$2" --option substituters '${cache.nixOptions.substituters}' --option require-sigs false --option narinfo-cache-negative-ttl 0 > /dev/null`,
            "",
          ].join("\n"),
        );
        await chmod(builder, 0o755);
        const withBuilder = createNixStore({ gcRootsDir, externalBuilder: builder });
        // Two paths whose closures are disjoint from a third that is already valid.
        const target = [paths[5]!, paths[9]!];
        await cached.realise([paths[0]!]);
        const result = await withBuilder.realise([paths[0]!, ...target], {
          roots: { owner: "external" },
        });
        expect(result.built.sort()).toEqual([...target].sort());
        const calls = (await readFile(log, "utf8")).trim().split("\n").sort();
        expect(calls).toEqual(
          target
            .map((path) => `${join(gcRootsDir, "external", path.split("/").at(-1)!)} ${path}`)
            .sort(),
        );
        expect(await invalidOf(target)).toEqual([]);
        for (const path of target) {
          expect(
            (await lstat(join(gcRootsDir, "external", path.split("/").at(-1)!))).isSymbolicLink(),
          ).toBe(true);
        }
        await cached.removeRoots("external");

        await writeFile(builder, "#!/bin/sh\necho 'builder: cannot fetch' >&2\nexit 7\n");
        const failing = await withBuilder
          .realise([randomStorePath("nope")], { roots: { owner: "external-fail" } })
          .catch((e: unknown) => e);
        expect(isNixStoreError(failing)).toBe(true);
        expect((failing as Error).message).toContain("exit 7");
        expect((failing as { stderrTail: string }).stderrTail).toContain("builder: cannot fetch");
      });
    });

    describe("valid paths under the GC lock", () => {
      it("roots valid paths and does not ask Nix to realise them", async () => {
        const synthetic = await fixtures.syntheticClosure({ count: 200, name: "already-valid" });
        // A private lock file: the machine's own gc.lock is taken by every concurrent
        // `nix-store --gc`/`--delete` of other tests, and then realise (rightly) falls back to Nix.
        const stateDir = await mkdtemp(join(workDir, "state-"));
        await writeFile(join(stateDir, "gc.lock"), "");
        const { spawn, calls } = pidRecorder();
        const recorded = createNixStore({
          gcRootsDir,
          nixStateDir: stateDir,
          nixOptions: { substituters: "" },
          spawn,
        });
        const result = await recorded.realise(synthetic.paths, { roots: { owner: "valid-skip" } });
        expect(result.alreadyValid).toEqual(synthetic.paths);
        expect(realiseCalls(calls)).toEqual([]);
        expect(calls.some((call) => call[0]!.endsWith("/flock") && call[1] === "--shared")).toBe(
          true,
        );
        expect(await recorded.listRoots("valid-skip")).toEqual([...synthetic.paths].sort());
        await recorded.removeRoots("valid-skip");
        await synthetic.release();
      });

      it("does not wait for a running garbage collector: Nix realises every path then", async () => {
        // A private state directory, so that holding its lock blocks nobody else.
        const stateDir = await mkdtemp(join(workDir, "state-"));
        const lock = join(stateDir, "gc.lock");
        await writeFile(lock, "");
        const busybox = await fixtures.busybox();
        const holder = spawn("flock", ["--exclusive", lock, "sh", "-c", "echo locked; read line"], {
          stdio: ["pipe", "pipe", "inherit"],
        });
        const holderExited = new Promise<void>((resolve) => holder.on("exit", () => resolve()));
        try {
          await new Promise<void>((resolve) => holder.stdout!.once("data", () => resolve()));
          const { spawn: record, calls } = pidRecorder();
          const locked = createNixStore({
            gcRootsDir,
            nixStateDir: stateDir,
            nixOptions: { substituters: "" },
            spawn: record,
          });
          const result = await locked.realise([busybox.storePath], {
            roots: { owner: "lock-busy" },
          });
          // The lock was still held: the shortcut stood aside and Nix checked the path itself.
          expect(holder.exitCode).toBeNull();
          expect(result.alreadyValid).toEqual([]);
          expect(realiseCalls(calls)).toHaveLength(1);
          expect(calls.some((call) => call[0]!.endsWith("/flock"))).toBe(true);
          await locked.removeRoots("lock-busy");

          holder.stdin!.end("done\n");
          await holderExited;
          const free = await locked.realise([busybox.storePath], { roots: { owner: "lock-free" } });
          expect(free.alreadyValid).toEqual([busybox.storePath]);
          expect(realiseCalls(calls)).toHaveLength(1);
          await locked.removeRoots("lock-free");
        } finally {
          holder.kill();
        }
      });
    });

    describe("GC roots", () => {
      it("keep paths and closures alive, show in --print-roots, and free them when removed", async () => {
        const synthetic = await fixtures.syntheticClosure({
          count: 30,
          name: "rooted",
          closureInfo: false,
        });
        const top = synthetic.tops[0]!;
        const closure = await store.closure([top]);
        expect(closure.length).toBeGreaterThan(1);
        await store.addRoots("gc-owner", [top]);
        await synthetic.release();

        const printed = await printedRoots();
        expect(printed.get(join(gcRootsDir, "gc-owner", top.split("/").at(-1)!))).toBe(top);

        const refused = await exec("nix-store", ["--delete", top]).catch(
          (e: { stderr: string }) => e,
        );
        expect((refused as { stderr: string }).stderr).toMatch(/still alive/);
        const inner = closure.find((path) => path !== top)!;
        const refusedInner = await exec("nix-store", ["--delete", inner]).catch(
          (e: { stderr: string }) => e,
        );
        expect((refusedInner as { stderr: string }).stderr).toMatch(/still alive/);
        expect(await invalidOf(closure)).toEqual([]);

        expect(await store.removeRoots("gc-owner")).toBe(true);
        const links = [...(await printedRoots()).keys()];
        expect(links.filter((link) => link.startsWith(join(gcRootsDir, "gc-owner")))).toEqual([]);
        // Nothing keeps them alive now: the garbage collector may delete them.
        await nixStore("--delete", ...(await store.queryValidPaths(synthetic.paths)));
        expect((await invalidOf(synthetic.paths)).sort()).toEqual([...synthetic.paths].sort());
      });

      it("survive a real nix-store --gc", async () => {
        const synthetic = await fixtures.syntheticClosure({ count: 50, name: "gc-survivor" });
        await store.addRoots("gc-survivor", [synthetic.closureInfo!]);
        await synthetic.release();
        // Everything this test owns is rooted; paths of concurrent tests are theirs to root.
        await nixStore("--gc");
        expect(await invalidOf([synthetic.closureInfo!, ...synthetic.paths])).toEqual([]);
        expect(await store.removeRoots("gc-survivor")).toBe(true);
        await nixStore("--delete", synthetic.closureInfo!, ...synthetic.paths);
        expect(await invalidOf([synthetic.closureInfo!])).toEqual([synthetic.closureInfo!]);
      });
    });
  },
);
