import type { ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isNixStoreError } from "./errors.js";
import { classifyFailure, createNixStore, parseRegistration } from "./nix-store.js";
import type { SpawnHook } from "./run-process.js";
import { type LogEntry, recordingLogger } from "./testing/logger.js";

interface Call {
  command: string;
  args: string[];
}

interface Script {
  stdout?: string;
  stderr?: string;
  exitCode?: number;
}

/** A spawn hook that records calls and answers like a scripted program (never runs anything). */
function scriptedSpawn(answer: (call: Call) => Script): { spawn: SpawnHook; calls: Call[] } {
  const calls: Call[] = [];
  const spawn: SpawnHook = (command, args) => {
    const call = { command, args: [...args] };
    calls.push(call);
    const script = answer(call);
    const child = new EventEmitter() as ChildProcess;
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const stdin = new PassThrough();
    Object.assign(child, {
      stdout,
      stderr,
      stdin,
      pid: undefined,
      exitCode: null,
      signalCode: null,
    });
    setImmediate(() => {
      stdout.end(script.stdout ?? "");
      stderr.end(script.stderr ?? "");
      setImmediate(() => child.emit("close", script.exitCode ?? 0, null));
    });
    return child;
  };
  return { spawn, calls };
}

const good = `/nix/store/${"1".repeat(32)}-good`;
const other = `/nix/store/${"2".repeat(32)}-other`;

const hostileLists: [string, string[]][] = [
  ["host directory", ["/etc"]],
  ["parent escape", [`/nix/store/${"1".repeat(32)}-x/../../etc`]],
  ["sub path", [`${good}/bin/sh`]],
  ["option injection", ["--option"]],
  ["one bad among good ones", [good, other, "/nix/store/../etc"]],
  ["relative", ["nix/store/x"]],
  ["empty string", [""]],
];

describe("createNixStore: hostile input never reaches a process", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "nix-store-unit-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each(hostileLists)("%s", async (_label, paths) => {
    const { spawn, calls } = scriptedSpawn(() => ({}));
    const store = createNixStore({ spawn, gcRootsDir: join(dir, "roots"), gcLockShortcut: false });
    const attempts: (() => Promise<unknown>)[] = [
      () => store.realise(paths, { roots: { owner: "snapshot-1" } }),
      () => store.realise(paths),
      () => store.isValid(paths),
      () => store.queryValidPaths(paths),
      () => store.closure(paths),
      () => store.pathInfo(paths),
      () => store.addRoots("snapshot-1", paths),
    ];
    if (paths.length === 1) attempts.push(() => store.readClosureInfo(paths[0]!));
    for (const attempt of attempts) {
      await expect(attempt()).rejects.toSatisfy((error) =>
        isNixStoreError(error, "InvalidArgument"),
      );
    }
    expect(calls).toEqual([]);
    expect(await readdir(dir)).toEqual([]);
  });

  it("rejects bad owners, options and timeouts before anything runs", async () => {
    const { spawn, calls } = scriptedSpawn(() => ({}));
    const store = createNixStore({ spawn, gcRootsDir: join(dir, "roots"), gcLockShortcut: false });
    await expect(store.realise([good], { roots: { owner: "../x" } })).rejects.toThrow(/owner/);
    await expect(store.realise([good], { nixOptions: { "--substituters": "x" } })).rejects.toThrow(
      /Nix option/,
    );
    await expect(store.realise([good], { timeoutMs: 0 })).rejects.toThrow(/timeoutMs/);
    const aborted = AbortSignal.abort();
    await expect(store.realise([good], { signal: aborted })).rejects.toSatisfy((error) =>
      isNixStoreError(error, "Canceled"),
    );
    expect(calls).toEqual([]);
    expect(await readdir(dir)).toEqual([]);
  });

  it("rejects a bad configuration at creation", () => {
    expect(() => createNixStore({ storeDir: "/nix/../store" })).toThrow(/store directory/);
    expect(() => createNixStore({ gcRootsDir: "relative" })).toThrow(/gcRootsDir/);
    expect(() => createNixStore({ nixOptions: { "a b": "c" } })).toThrow(/Nix option/);
  });
});

describe("createNixStore: how Nix is called", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "nix-store-unit-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const versionAnswer = (version: string) => (call: Call) =>
    call.args[0] === "--version" ? { stdout: `nix-store (Nix) ${version}\n` } : undefined;

  it("realises the whole batch in one process, with build slots for substitution on Nix 2.8", async () => {
    const { spawn, calls } = scriptedSpawn(
      (call) => versionAnswer("2.8.0")(call) ?? { stdout: `${good}\n${other}\n` },
    );
    const store = createNixStore({
      spawn,
      nixBin: "/opt/nix/bin",
      gcRootsDir: join(dir, "roots"),
      gcLockShortcut: false,
      nixOptions: { substituters: "http://127.0.0.1:1" },
    });
    const result = await store.realise([good, other, good], { roots: { owner: "7" } });
    expect(result.paths).toEqual([good, other]);
    const realiseCalls = calls.filter((call) => call.args[0] === "--realise");
    expect(realiseCalls).toHaveLength(1);
    expect(realiseCalls[0]!.command).toBe("/opt/nix/bin/nix-store");
    expect(realiseCalls[0]!.args).toEqual([
      "--realise",
      "--keep-going",
      "--log-format",
      "internal-json",
      "--max-jobs",
      "16",
      "--option",
      "substituters",
      "http://127.0.0.1:1",
      good,
      other,
    ]);
    expect(await store.listRoots("7")).toEqual([good, other].sort());
  });

  it("uses max-substitution-jobs on Nix >= 2.17", async () => {
    const { spawn, calls } = scriptedSpawn((call) => versionAnswer("2.24.3")(call) ?? {});
    const store = createNixStore({
      spawn,
      gcRootsDir: join(dir, "roots"),
      gcLockShortcut: false,
      substitutionJobs: 4,
    });
    await store.realise([good]);
    const args = calls.find((call) => call.args[0] === "--realise")!.args;
    expect(args).toContain("max-substitution-jobs");
    expect(args).not.toContain("--max-jobs");
  });

  it("believes Nix over its version number: a setting Nix calls unknown is not used", async () => {
    const warn = (name: string) =>
      `@nix ${JSON.stringify({ action: "msg", level: 1, msg: `\u001b[35;1mwarning:\u001b[0m unknown setting '${name}'` })}`;
    for (const [version, probeStderr, expected] of [
      // A 2.24 that says it lacks max-substitution-jobs (a patched or mislabelled build).
      [
        "2.24.3",
        `${warn("max-substitution-jobs")}\n${warn("nix-snapshotter-probe")}\n`,
        "--max-jobs",
      ],
      // A 2.8 that knows it: only the made-up setting is unknown.
      ["2.8.0", `${warn("nix-snapshotter-probe")}\n`, "max-substitution-jobs"],
      // No evidence (nothing printed): the version decides.
      ["2.8.0", "", "--max-jobs"],
    ] as const) {
      const { spawn, calls } = scriptedSpawn((call) => {
        const answer = versionAnswer(version)(call);
        if (answer !== undefined) return answer;
        if (call.args.includes("nix-snapshotter-probe")) return { stderr: probeStderr };
        return {};
      });
      const store = createNixStore({
        spawn,
        gcRootsDir: join(dir, "roots"),
        gcLockShortcut: false,
      });
      await store.realise([good]);
      const realise = calls.filter((call) => call.args[0] === "--realise");
      expect(realise).toHaveLength(1);
      expect(realise[0]!.args).toContain(expected);
      expect(await store.features()).toMatchObject({
        maxSubstitutionJobs: expected === "max-substitution-jobs",
      });
    }
  });

  it("reads progress from the plain log when Nix does not write JSON", async () => {
    const { spawn } = scriptedSpawn((call) => {
      const version = versionAnswer("2.8.0")(call);
      if (version !== undefined) return version;
      if (call.args[0] === "--realise") {
        return { stderr: `copying path '${good}' from 'http://127.0.0.1:1'...\n` };
      }
      return {};
    });
    const store = createNixStore({ spawn, gcRootsDir: join(dir, "roots"), gcLockShortcut: false });
    const events: unknown[] = [];
    const result = await store.realise([good], { onProgress: (event) => events.push(event) });
    expect(result.substituted).toEqual([good]);
    expect(events[0]).toEqual({
      type: "substitute-start",
      storePath: good,
      substituter: "http://127.0.0.1:1",
    });
  });

  it("reports which paths failed, with Nix's stderr, drops the roots it created, and leaves logging the failure to its caller", async () => {
    const { spawn } = scriptedSpawn((call) => {
      const version = versionAnswer("2.8.0")(call);
      if (version !== undefined) return version;
      if (call.args[0] === "--realise") {
        return {
          exitCode: 1,
          stderr: `@nix ${JSON.stringify({ action: "msg", level: 0, msg: `error: path '${other}' is required, but there is no substituter that can build it` })}\n`,
        };
      }
      // --check-validity --print-invalid: `other` is invalid
      return { stdout: `${other}\n` };
    });
    const entries: LogEntry[] = [];
    const store = createNixStore({
      spawn,
      gcRootsDir: join(dir, "roots"),
      gcLockShortcut: false,
      logger: recordingLogger(entries),
    });
    const error = await store.realise([good, other], { roots: { owner: "9" } }).catch((e) => e);
    expect(isNixStoreError(error, "NotFound")).toBe(true);
    // Thrown, not logged: the caller that handles it logs it once.
    expect(entries.filter((entry) => entry.level !== "debug")).toEqual([]);
    expect(error.failedPaths).toEqual([other]);
    expect(error.message).toContain(other);
    expect(error.stderrTail).toContain("no substituter that can build it");
    expect(await store.listRootOwners()).toEqual([]);
  });

  it("checks validity under a shared GC lock and gives Nix only the invalid paths", async () => {
    const stateDir = join(dir, "state");
    await mkdir(stateDir);
    await writeFile(join(stateDir, "gc.lock"), "");
    const { spawn, calls } = scriptedSpawn((call) => {
      const version = versionAnswer("2.8.0")(call);
      if (version !== undefined) return version;
      // flock --shared <lock> nix-store --check-validity --print-invalid ...: `other` is invalid
      if (call.args[0] === "--shared") return { stdout: `${other}\n` };
      return {};
    });
    const store = createNixStore({ spawn, nixStateDir: stateDir, gcRootsDir: join(dir, "roots") });
    const result = await store.realise([good, other], { roots: { owner: "5" } });
    expect(result.alreadyValid).toEqual([good]);
    const flock = calls.find((call) => call.args[0] === "--shared")!;
    expect(flock.command).toMatch(/\/flock$/);
    expect(flock.args.slice(0, 8)).toEqual([
      "--shared",
      "--nonblock",
      "--conflict-exit-code",
      "75",
      join(stateDir, "gc.lock"),
      "nix-store",
      "--check-validity",
      "--print-invalid",
    ]);
    const realise = calls.filter((call) => call.args[0] === "--realise");
    expect(realise).toHaveLength(1);
    expect(realise[0]!.args.at(-1)).toBe(other);
    expect(realise[0]!.args).not.toContain(good);
    // The roots cover every requested path, valid or not.
    expect(await store.listRoots("5")).toEqual([good, other].sort());

    calls.length = 0;
    const allValid = createNixStore({
      spawn: scriptedSpawn((call) => versionAnswer("2.8.0")(call) ?? {}).spawn,
      nixStateDir: stateDir,
      gcRootsDir: join(dir, "roots"),
    });
    expect((await allValid.realise([good, other])).alreadyValid).toEqual([good, other]);
  });

  it("realises everything when the GC lock file is missing", async () => {
    const { spawn, calls } = scriptedSpawn((call) => versionAnswer("2.8.0")(call) ?? {});
    const store = createNixStore({
      spawn,
      nixStateDir: join(dir, "none"),
      gcRootsDir: join(dir, "roots"),
    });
    expect((await store.realise([good])).alreadyValid).toEqual([]);
    // The version, the feature probe (a validity check of a made-up path), then one realise.
    expect(calls.map((call) => call.args[0])).toEqual([
      "--version",
      "--check-validity",
      "--realise",
    ]);
  });

  it("maps a missing nix-store to FailedPrecondition", async () => {
    const store = createNixStore({
      nixBin: join(dir, "nowhere"),
      gcRootsDir: join(dir, "roots"),
      gcLockShortcut: false,
    });
    await expect(store.version()).rejects.toSatisfy((error) =>
      isNixStoreError(error, "FailedPrecondition"),
    );
  });
});

describe("parseRegistration", () => {
  it("reads nix-store --dump-db output", () => {
    const text = [
      good,
      "ab".repeat(32),
      "168",
      "/nix/store/x.drv",
      "1",
      other,
      other,
      "cd".repeat(32),
      "120",
      "",
      "0",
      "",
    ].join("\n");
    expect(parseRegistration(text)).toEqual([
      {
        storePath: good,
        narHash: "ab".repeat(32),
        narSize: 168,
        deriver: "/nix/store/x.drv",
        references: [other],
      },
      {
        storePath: other,
        narHash: "cd".repeat(32),
        narSize: 120,
        deriver: undefined,
        references: [],
      },
    ]);
  });

  it("fails loudly on output it does not understand", () => {
    expect(() => parseRegistration(`${good}\nhash\nnot-a-number\n\n0\n`)).toThrow(/dump-db/);
  });
});

describe("classifyFailure", () => {
  it("tells missing paths from unavailable caches", () => {
    expect(classifyFailure("error: don't know how to build these paths")).toBe("NotFound");
    expect(classifyFailure("unable to download 'http://x/nix-cache-info': Couldn't connect")).toBe(
      "Unavailable",
    );
  });
});
