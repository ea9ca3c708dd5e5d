import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request as httpRequest } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { ImageService } from "@nix-snapshotter/api/cri/v1";
import {
  containerdSkipReason,
  startContainerd,
  systemContainerdVersion,
} from "@nix-snapshotter/containerd-client/testing";
import {
  type BinaryCache,
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
  startBinaryCache,
} from "@nix-snapshotter/nix-store/testing";
import {
  createRemoteSnapshotter,
  ErrorCode,
  type Snapshotter,
  SnapshotterError,
} from "@nix-snapshotter/snapshotter";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type DaemonProcess, daemonEntry, startDaemonProcess } from "./testing/daemon-process.js";

/**
 * The caller's cancel and deadline, and the daemon's `realise_timeout`, against the real daemon
 * and the real Nix: the store paths of a nix layer are only in a binary cache behind a gate that
 * accepts Nix's connections and never answers. The Prepare must fail at once with the right code
 * and leave no Nix process, no GC root and no snapshot; once the gate opens, the same Prepare
 * works.
 */

const skip = nixE2eSkipReason(["nix-store", "nix"]) ?? (existsSync(daemonEntry) ? "" : "build");

/**
 * An HTTP server on 127.0.0.1 in front of a binary cache: while closed it accepts every
 * connection and request and never answers; once opened it forwards to the cache.
 */
interface Gate {
  nixConfig: string;
  /** Requests received (answered or not). */
  requests(): number;
  open(): void;
  close(): Promise<void>;
}

async function startGate(upstream: string): Promise<Gate> {
  let isOpen = false;
  let requests = 0;
  const sockets = new Set<Socket>();
  const server = createServer((request, response) => {
    requests += 1;
    if (!isOpen) return; // accepted, held, never answered
    const forward = httpRequest(
      new URL(request.url ?? "/", upstream),
      { method: request.method, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    forward.on("error", () => response.destroy());
    request.pipe(forward);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    nixConfig: [
      `substituters = http://127.0.0.1:${port}?trusted=1`,
      "require-sigs = false",
      "narinfo-cache-negative-ttl = 0",
    ].join("\n"),
    requests: () => requests,
    open() {
      isOpen = true;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface ProcessEntry {
  pid: number;
  ppid: number;
  cmdline: string;
}

/** Every live (not zombie) process with its parent and argv (NULs as spaces). */
function processes(): ProcessEntry[] {
  const found: ProcessEntry[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] === "Z" || fields[0] === "X") continue;
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ");
      found.push({ pid: Number(name), ppid: Number(fields[1]), cmdline });
    } catch {
      // exited while we looked
    }
  }
  return found;
}

/**
 * Nix processes of this test: any descendant of the daemon running `nix-store` (or `flock` /
 * `setpriv` in front of it), and any process whose argv names one of `paths`.
 */
function nixProcesses(daemonPid: number, paths: readonly string[]): ProcessEntry[] {
  const all = processes();
  const descendants = new Set<number>([daemonPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const entry of all) {
      if (!descendants.has(entry.pid) && descendants.has(entry.ppid)) {
        descendants.add(entry.pid);
        grew = true;
      }
    }
  }
  return all.filter(
    (entry) =>
      entry.pid !== process.pid &&
      ((entry.pid !== daemonPid &&
        descendants.has(entry.pid) &&
        /nix-store|flock|setpriv/.test(entry.cmdline)) ||
        paths.some((path) => entry.cmdline.includes(path))),
  );
}

/** Symlinks (GC roots) below a directory; none when it does not exist. */
function rootLinks(directory: string): string[] {
  if (!existsSync(directory)) return [];
  const found = spawnSync("find", [directory, "-type", "l"], { encoding: "utf8" });
  return found.stdout.split("\n").filter(Boolean);
}

function snapshotDirectories(daemon: DaemonProcess): string[] {
  const directory = join(daemon.root, "snapshots");
  return existsSync(directory) ? readdirSync(directory) : [];
}

function nixLabels(paths: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = { "containerd.io/snapshot/nix-layer": "true" };
  paths.forEach((path, index) => {
    labels[`containerd.io/snapshot/nix-store-path.${index}`] = path;
  });
  return labels;
}

const sleep = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

/** Polls `condition` every 50 ms, up to `limitMs` (a bound for a loaded machine, not a figure). */
async function eventually(condition: () => boolean | Promise<boolean>, limitMs = 30_000) {
  for (let waited = 0; waited < limitMs && !(await condition()); waited += 50) await sleep(50);
}

async function failureOf(promise: Promise<unknown>): Promise<SnapshotterError> {
  const caught = await promise.then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(caught).toBeInstanceOf(SnapshotterError);
  return caught as SnapshotterError;
}

describe.skipIf(skip !== "")(`cancellation against the daemon ${skip}`, () => {
  let fixtures: NixFixtures;
  const caches: BinaryCache[] = [];
  const gates: Gate[] = [];
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    fixtures = await createNixFixtures({ label: "cancel" });
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  afterAll(async () => {
    for (const gate of gates) await gate.close();
    for (const cache of caches) await cache.close();
    await fixtures?.cleanup();
  });

  /** Store paths absent from the store, present in a cache behind a closed gate. */
  async function pathsBehindGate() {
    const closure = await fixtures.syntheticClosure({ count: 2, closureInfo: false });
    const cache = await startBinaryCache({ paths: closure.paths });
    caches.push(cache);
    await closure.release();
    await fixtures.deletePaths(closure.paths);
    for (const path of closure.paths) expect(existsSync(path)).toBe(false);
    const gate = await startGate(cache.url);
    gates.push(gate);
    return { paths: closure.paths, gate };
  }

  async function daemonFor(gate: Gate, extraConfig = "") {
    const daemon = await startDaemonProcess({ env: { NIX_CONFIG: gate.nixConfig }, extraConfig });
    cleanups.push(daemon.cleanup);
    return daemon;
  }

  /** Waits until Nix is realising `paths` and has asked the gate for something. */
  async function untilNixWaitsOnGate(daemon: DaemonProcess, paths: string[], gate: Gate) {
    const pid = daemon.child.pid!;
    const realising = () =>
      gate.requests() > 0 &&
      nixProcesses(pid, paths).some((entry) => entry.cmdline.includes("--realise"));
    await eventually(realising);
    expect(realising(), await daemon.log()).toBe(true);
  }

  /** No Nix process, no GC root, no snapshot (directory, Stat, List) is left. */
  async function expectNothingLeft(
    daemon: DaemonProcess,
    paths: string[],
    key: string,
  ): Promise<void> {
    const pid = daemon.child.pid!;
    // The client's answer comes first; the daemon then stops Nix and cleans up.
    await eventually(
      () =>
        nixProcesses(pid, paths).length === 0 &&
        rootLinks(daemon.gcRootsDir).length === 0 &&
        snapshotDirectories(daemon).length === 0,
    );
    expect(nixProcesses(pid, paths)).toEqual([]);
    expect(rootLinks(daemon.gcRootsDir)).toEqual([]);
    expect(snapshotDirectories(daemon)).toEqual([]);
    expect((await failureOf(daemon.snapshotter.stat(key))).code).toBe(ErrorCode.NotFound);
    const listed: string[] = [];
    for await (const info of daemon.snapshotter.list()) listed.push(info.name);
    expect(listed).toEqual([]);
    for (const path of paths) expect(existsSync(path)).toBe(false);
  }

  /** The gate opens: the same Prepare now substitutes the paths and succeeds. */
  async function expectPrepareWorks(
    daemon: DaemonProcess,
    gate: Gate,
    paths: string[],
    key: string,
  ) {
    gate.open();
    const mounts = await daemon.snapshotter.prepare(key, "", { labels: nixLabels(paths) });
    expect(mounts.length).toBeGreaterThan(0);
    for (const path of paths) expect(existsSync(path)).toBe(true);
    expect(rootLinks(daemon.gcRootsDir).length).toBe(paths.length);
    await daemon.snapshotter.remove(key);
    expect(rootLinks(daemon.gcRootsDir)).toEqual([]);
  }

  it("a Prepare cancelled by the client stops Nix and leaves nothing behind", async () => {
    const { paths, gate } = await pathsBehindGate();
    const daemon = await daemonFor(gate);
    const key = "default/1/extract-nix-layer";
    const controller = new AbortController();
    const pending = failureOf(
      daemon.snapshotter.prepare(key, "", { labels: nixLabels(paths), signal: controller.signal }),
    );
    await untilNixWaitsOnGate(daemon, paths, gate);
    controller.abort();
    expect((await pending).code).toBe(ErrorCode.Canceled);
    await expectNothingLeft(daemon, paths, key);
    // The daemon logged the call's end with the cancellation, not an unexpected error.
    await eventually(async () => /"rpc":"Prepare".*"code":"Canceled"/.test(await daemon.log()));
    expect(await daemon.log()).toMatch(/"rpc":"Prepare".*"code":"Canceled"/);
    await expectPrepareWorks(daemon, gate, paths, key);
  }, 180_000);

  it("a Prepare whose gRPC deadline passes stops Nix and leaves nothing behind", async () => {
    const { paths, gate } = await pathsBehindGate();
    const daemon = await daemonFor(gate);
    const key = "default/2/extract-nix-layer";
    // Long enough for Nix to reach the gate on a loaded machine (checked below).
    const withDeadline: Snapshotter = createRemoteSnapshotter(daemon.transport, {
      callOptions: { timeoutMs: 10_000 },
    });
    const error = await failureOf(withDeadline.prepare(key, "", { labels: nixLabels(paths) }));
    expect(error.code).toBe(ErrorCode.DeadlineExceeded);
    // Nix had asked the cache: the deadline cut a running realise.
    expect(gate.requests()).toBeGreaterThan(0);
    await expectNothingLeft(daemon, paths, key);
    await expectPrepareWorks(daemon, gate, paths, key);
  }, 180_000);

  it("realise_timeout stops Nix: DeadlineExceeded, nothing behind", async () => {
    const { paths, gate } = await pathsBehindGate();
    const daemon = await daemonFor(gate, `realise_timeout = "8s"`);
    expect(await daemon.log()).toContain('"realiseTimeoutMs":8000');
    const key = "default/3/extract-nix-layer";
    const pending = failureOf(daemon.snapshotter.prepare(key, "", { labels: nixLabels(paths) }));
    await untilNixWaitsOnGate(daemon, paths, gate);
    const error = await pending;
    expect(error.code).toBe(ErrorCode.DeadlineExceeded);
    expect(error.message).toContain("realise timeout");
    await expectNothingLeft(daemon, paths, key);
    await expectPrepareWorks(daemon, gate, paths, key);
  }, 180_000);

  const containerdVersion = systemContainerdVersion() ?? "1.6";
  const containerdSkip = containerdSkipReason(containerdVersion) ?? "";
  it.skipIf(containerdSkip !== "")(
    `a nix:0 PullImage cancelled while Nix realises the archive stops Nix, no root left (containerd ${containerdVersion} CRI) ${containerdSkip}`,
    async () => {
      // An archive store path only in the cache behind the gate (its content never gets read).
      const work = mkdtempSync(join(tmpdir(), "cancel-cri-"));
      cleanups.push(async () => rmSync(work, { recursive: true, force: true }));
      const file = join(work, `nix-image-cancel-${randomBytes(4).toString("hex")}.tar`);
      writeFileSync(file, "not read: the pull is cancelled while Nix fetches it");
      const archive = execFileSync("nix-store", ["--add", file], { encoding: "utf8" }).trim();
      await fixtures.root("cancel-archive", [archive]);
      const cache = await startBinaryCache({ paths: [archive] });
      caches.push(cache);
      await fixtures.unroot("cancel-archive");
      await fixtures.deletePaths([archive]);
      expect(existsSync(archive)).toBe(false);
      const gate = await startGate(cache.url);
      gates.push(gate);

      const containerd = await startContainerd({ version: containerdVersion, cri: true });
      cleanups.push(() => containerd.stop());
      const daemon = await startDaemonProcess({
        env: { NIX_CONFIG: gate.nixConfig },
        imageService: { containerdAddress: containerd.address },
      });
      cleanups.push(daemon.cleanup);
      const images = createClient(ImageService, daemon.transport);
      const controller = new AbortController();
      const pending = images
        .pullImage({ image: { image: `nix:0${archive}` } }, { signal: controller.signal })
        .then(
          () => undefined,
          (error: unknown) => ConnectError.from(error),
        );
      await untilNixWaitsOnGate(daemon, [archive], gate);
      expect(rootLinks(daemon.gcRootsDir).length).toBe(1);
      controller.abort();
      expect((await pending)?.code).toBe(Code.Canceled);
      const pid = daemon.child.pid!;
      await eventually(
        () =>
          nixProcesses(pid, [archive]).length === 0 && rootLinks(daemon.gcRootsDir).length === 0,
      );
      expect(nixProcesses(pid, [archive])).toEqual([]);
      expect(rootLinks(daemon.gcRootsDir)).toEqual([]);
      expect(existsSync(archive)).toBe(false);
      // containerd's CRI did not get the image.
      const status = await images.imageStatus({ image: { image: `nix:0${archive}` } });
      expect(status.image).toBeUndefined();
    },
    180_000,
  );
});
