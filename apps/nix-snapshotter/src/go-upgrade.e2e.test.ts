import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  type Containerd,
  canRunContainerd,
  containerdSkipReason,
  runContainer,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import { buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import {
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
  type ScriptFixture,
} from "@nix-snapshotter/nix-store/testing";
import { createRemoteSnapshotter } from "@nix-snapshotter/snapshotter";
import { buildGoProgram, goProgramsUnavailable } from "@nix-snapshotter/snapshotter/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type DaemonProcess,
  startDaemonProcess,
  unixGrpcTransport,
} from "./testing/daemon-process.js";

/**
 * Upgrade in place from the Go nix-snapshotter, with state that real containerd made: containerd
 * 2.1 imports a nix image and creates a container through a Go proxy snapshotter built here from
 * Debian's containerd source (its overlay snapshotter keeps the Go nix-snapshotter's bolt
 * MetaStore; nix layers get per-path roots the Go way). Then the Go daemon stops and ours starts
 * on the same root and socket.
 */

const run = promisify(execFile);
const skip =
  (!canRunContainerd() ? "needs root and runc" : undefined) ??
  nixE2eSkipReason(["nix-store", "nix", "patchelf"]) ??
  containerdSkipReason("2.1") ??
  goProgramsUnavailable();
const goProxySource = join(import.meta.dirname, "testing", "go-proxy", "main.go");
const delay = (milliseconds: number) => new Promise((resolve) => setTimeout(resolve, milliseconds));

/** Waits until the socket accepts a connection (its file exists before listen(2)). */
async function waitForSocket(path: string, child: ChildProcess): Promise<void> {
  for (let attempt = 0; attempt < 600; attempt++) {
    if (child.exitCode !== null) throw new Error(`go-proxy exited (${child.exitCode})`);
    const accepted = await new Promise<boolean>((resolve) => {
      const socket = connect(path);
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (accepted) return;
    await delay(100);
  }
  throw new Error(`go-proxy did not listen on ${path}`);
}

/** `nix-store --gc --print-roots`: one `<link> -> <store path>` line per root. */
async function printRoots(): Promise<string[]> {
  const { stdout } = await run("nix-store", ["--gc", "--print-roots"], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout.split("\n").filter((line) => line !== "");
}

/** Targets of the links under `directory`, recursively. */
async function linkTargets(directory: string): Promise<string[]> {
  if (!existsSync(directory)) return [];
  const targets: string[] = [];
  for (const entry of await readdir(directory, { recursive: true, withFileTypes: true })) {
    if (entry.isSymbolicLink()) targets.push(await readlink(join(entry.parentPath, entry.name)));
  }
  return targets.sort();
}

describe.skipIf(skip !== undefined)(
  `upgrade in place from the Go nix-snapshotter, containerd 2.1${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let fixtures: NixFixtures;
    let script: ScriptFixture;
    let busybox: string;
    let directory: string;
    let root: string;
    let socket: string;
    let goProxy: ChildProcess | undefined;
    let containerd: Containerd;
    let daemon: DaemonProcess | undefined;
    const reference = "docker.io/library/nix-hello-go-upgrade:latest";

    beforeAll(async () => {
      const binary = await buildGoProgram(goProxySource, "go-proxy");
      fixtures = await createNixFixtures({ label: "go-upgrade" });
      script = await fixtures.script();
      busybox = script.interpreter.replace(/\/sh$/, "/busybox");
      directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-go-upgrade-"));
      root = join(directory, "root");
      socket = join(directory, "run", "nix-snapshotter.sock");
      await mkdir(join(directory, "run"), { recursive: true });
      // The Go daemon's image format: the per-path annotations only.
      const image = await buildImage({
        config: { Entrypoint: [script.executable] },
        closure: script.closure,
        annotationForm: "per-path",
      });
      await writeFile(
        join(directory, "image.tar"),
        writeImageArchive(image, { names: [reference] }),
      );
      goProxy = spawn(binary, [root, socket], { stdio: ["ignore", "ignore", "pipe"] });
      let goLog = "";
      goProxy.stderr?.on("data", (chunk: Buffer) => {
        goLog += chunk.toString();
      });
      await waitForSocket(socket, goProxy).catch((error: unknown) => {
        throw new Error(`${(error as Error).message}: ${goLog}`);
      });
      containerd = await startContainerd({ version: "2.1", proxyPlugins: { nix: socket } });
    }, 900_000);

    afterAll(async () => {
      await containerd?.stop();
      if (goProxy && goProxy.exitCode === null) goProxy.kill("SIGKILL");
      await daemon?.cleanup();
      await fixtures?.cleanup();
      if (directory) await rm(directory, { recursive: true, force: true });
    });

    it("the Go snapshotter unpacks the image and holds a container with data", async () => {
      await containerd.ctr([
        "images",
        "import",
        "--snapshotter",
        "nix",
        join(directory, "image.tar"),
      ]);
      await containerd.ctr([
        "containers",
        "create",
        "--snapshotter",
        "nix",
        reference,
        "old-container",
        busybox,
        "cat",
        "/state.txt",
      ]);
      // Go's per-path roots: <root>/gcroots/<id>/<hash>-<name>, one per store path of the closure.
      expect(await linkTargets(join(root, "gcroots"))).toEqual([...script.closure].sort());
      // Nix finds them through its gcroots/auto links.
      expect(
        (await printRoots()).filter((line) => line.includes(join(root, "gcroots"))),
      ).toHaveLength(script.closure.length);
      // Data in the container's upper directory, written while the Go daemon serves it.
      const { transport, close } = unixGrpcTransport(socket);
      try {
        const goSnapshotter = createRemoteSnapshotter(transport);
        let key: string | undefined;
        for await (const info of goSnapshotter.list()) {
          if (info.name.endsWith("/old-container")) key = info.name;
        }
        expect(key).toBeDefined();
        const [overlay] = await goSnapshotter.mounts(key!);
        const upper = overlay!.options.find((option) => option.startsWith("upperdir="))!.slice(9);
        expect(upper).toMatch(new RegExp(`^${root}/snapshots/[0-9]+/fs$`));
        await writeFile(join(upper, "state.txt"), "written under the Go snapshotter\n");
      } finally {
        close();
      }
    });

    it("our daemon takes over the root on the same socket, releasing the Go roots", async () => {
      goProxy!.kill("SIGTERM");
      await new Promise((resolve) => goProxy!.once("exit", resolve));
      expect(existsSync(join(root, "metadata.db"))).toBe(true);
      daemon = await startDaemonProcess({ addressFlag: socket, rootFlag: root });
      const log = await daemon.log();
      expect(log).toMatch(
        /migrated the Go nix-snapshotter's root: 2 snapshots \(1 committed, 1 active, 0 view\), 1 nix layers with \d+ GC roots/,
      );
      expect(existsSync(join(root, "gcroots"))).toBe(false);
      expect(await linkTargets(daemon.gcRootsDir)).toEqual([...script.closure].sort());
      // Nix sees our roots, and none of the Go daemon's any more.
      const roots = await printRoots();
      expect(roots.filter((line) => line.includes(daemon!.gcRootsDir)).length).toBe(
        script.closure.length,
      );
      expect(roots.filter((line) => line.includes(root))).toEqual([]);
    });

    it("the old container's rootfs mounts with its files and store paths", async () => {
      const { stdout } = await containerd.ctr(["tasks", "start", "old-container"]);
      expect(stdout).toContain("written under the Go snapshotter");
      await containerd.ctr(["tasks", "delete", "old-container"], { allowFailure: true });
    });

    it("the old image runs a new container", async () => {
      const stdout = await runContainer(containerd, "nix", reference, "new-container");
      expect(stdout.trim()).toBe("hello from nix store");
    });

    it("removing everything releases every root, ours and the Go daemon's", async () => {
      await containerd.ctr(["containers", "delete", "old-container"]);
      await containerd.ctr(["images", "remove", "--sync", reference]);
      let left = await linkTargets(daemon!.gcRootsDir);
      for (let attempt = 0; attempt < 300 && left.length > 0; attempt++) {
        await delay(100);
        left = await linkTargets(daemon!.gcRootsDir);
      }
      expect(left).toEqual([]);
      const snapshots: string[] = [];
      for await (const info of daemon!.snapshotter.list()) snapshots.push(info.name);
      expect(snapshots).toEqual([]);
      const mentions = (await printRoots()).filter(
        (line) => line.includes(root) || line.includes(daemon!.gcRootsDir),
      );
      expect(mentions).toEqual([]);
    });
  },
);
