import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  type Containerd,
  type ContainerdVersion,
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
  TEST_GC_ROOTS_PARENT,
} from "@nix-snapshotter/nix-store/testing";
import { testImageArchive } from "@nix-snapshotter/oci/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const execFileAsync = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
const cli = join(here, "..", "..", "dist", "main.js");
const daemonMain = join(here, "..", "..", "..", "nix-snapshotter", "dist", "main.js");

/** An ordinary one-layer image: static busybox as /bin/sh and a file. */
async function ordinaryArchive(
  name: string,
  text: string,
  annotations: Record<number, Record<string, string>> = {},
): Promise<Buffer> {
  return testImageArchive({
    annotations,
    names: [name],
    layers: [
      [
        { name: "bin", type: "directory", mode: 0o755 },
        { name: "bin/busybox", type: "file", mode: 0o755, data: await readFile("/bin/busybox") },
        { name: "bin/cat", type: "symlink", linkname: "busybox" },
        { name: "message", type: "file", mode: 0o644, data: Buffer.from(text) },
      ],
    ],
    config: { Entrypoint: ["/bin/cat", "/message"] },
  }).archive;
}

interface Snapshotter {
  address: string;
  stop(): Promise<void>;
}

/** Runs the real daemon (apps/nix-snapshotter) with a private socket, root and GC roots. */
async function startSnapshotter(
  dir: string,
  mountMode: "bind" | "hardlink",
  gcRootsDir: string,
): Promise<Snapshotter> {
  const address = join(dir, "nix-snapshotter.sock");
  const configPath = join(dir, "config.toml");
  await writeFile(
    configPath,
    [
      `address = ${JSON.stringify(address)}`,
      `root = ${JSON.stringify(join(dir, "root"))}`,
      `mount_mode = "${mountMode}"`,
      `gc_roots_dir = ${JSON.stringify(gcRootsDir)}`,
      "[image_service]",
      "enable = false",
    ].join("\n"),
  );
  const child: ChildProcess = spawn(
    process.execPath,
    [daemonMain, "-c", configPath, "-l", "error"],
    {
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`nix-snapshotter exited with ${child.exitCode}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(address);
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (up) break;
    if (attempt > 600) throw new Error("nix-snapshotter did not listen");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    address,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

async function nix2container(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(process.execPath, [cli, "-l", "warn", ...args]);
  return stdout;
}

const nixSkip = nixE2eSkipReason(["nix-store", "nix-build"]);
const versions: ContainerdVersion[] = ["1.6", "1.7", "2.1"];

for (const version of versions) {
  const skip =
    nixSkip ??
    containerdSkipReason(version) ??
    (existsSync(daemonMain) ? "" : "apps/nix-snapshotter is not built");
  const mountMode = version === "1.6" ? "hardlink" : "bind";
  describe.skipIf(skip !== "")(
    `nix2container load on containerd ${version} (${mountMode}) ${skip}`,
    () => {
      let work: string;
      let fixtures: NixFixtures;
      let script: ScriptFixture;
      let snapshotter: Snapshotter;
      let containerd: Containerd;
      let gcRootsDir: string;
      const nonce = randomBytes(4).toString("hex");

      beforeAll(async () => {
        work = await mkdtemp(join(tmpdir(), "nix2container-load-"));
        fixtures = await createNixFixtures({ label: "nix2container-load" });
        script = await fixtures.script();
        gcRootsDir = join(TEST_GC_ROOTS_PARENT, `nix2container-load-${nonce}`);
        await mkdir(gcRootsDir, { recursive: true });
        snapshotter = await startSnapshotter(work, mountMode, gcRootsDir);
        containerd = await startContainerd({
          version,
          proxyPlugins: { nix: snapshotter.address },
        });
      });
      afterAll(async () => {
        await containerd?.stop();
        await snapshotter?.stop();
        await fixtures?.cleanup();
        if (gcRootsDir) await rm(gcRootsDir, { recursive: true, force: true });
        if (work) await rm(work, { recursive: true, force: true });
      });

      /** `nix2container load` into the test's containerd; its standard output. */
      const load = (...args: string[]) =>
        nix2container("-a", containerd.address, "-n", containerd.namespace, "load", ...args);

      it("loads a nix image through the nix snapshotter and ctr runs it", async () => {
        const image = await buildImage({
          config: { entrypoint: [script.executable] },
          closure: script.closure,
        });
        const name = `example.test/nix-hello-${nonce}:1`;
        const archive = join(work, "nix-image.tar");
        await writeFile(archive, writeImageArchive(image, { names: [name] }));
        const output = await load(archive);
        expect(output).toBe(`${name}\n`);
        // The nix snapshotter got the layer's store paths as labels and rooted them.
        const snapshots = await containerd.ctr(["snapshots", "--snapshotter", "nix", "ls"]);
        expect(snapshots.stdout).toContain(image.diffId);
        const run = await runContainer(containerd, "nix", name, `nix-${nonce}`);
        expect(run).toBe("hello from nix store\n");
      });

      it("loads an ordinary image with --snapshotter overlayfs", async () => {
        const name = `example.test/plain-${nonce}:1`;
        const archive = join(work, "plain.tar");
        await writeFile(archive, await ordinaryArchive(name, `plain ${nonce}\n`));
        const output = await load("--snapshotter", "overlayfs", archive);
        expect(output).toBe(`${name}\n`);
        const run = await runContainer(containerd, "overlayfs", name, `plain-${nonce}`);
        expect(run).toBe(`plain ${nonce}\n`);
      });

      it("refuses a nix image naming a path outside the store, creating nothing", async () => {
        // An ordinary image, its layer annotated with a hostile "store path".
        const archive = join(work, "evil.tar");
        await writeFile(
          archive,
          await ordinaryArchive(`example.test/evil-${nonce}:1`, "x", {
            0: {
              "containerd.io/snapshot/nix-layer": "true",
              "containerd.io/snapshot/nix-store-path.0": "/etc",
            },
          }),
        );
        const failure = await load(archive).catch(
          (error: { code: number; stderr: string }) => error,
        );
        expect(typeof failure).toBe("object");
        expect((failure as { stderr: string }).stderr).toMatch(/InvalidArgument|\/etc/);
        const images = await containerd.ctr(["images", "ls", "--quiet"]);
        expect(images.stdout).not.toContain("evil");
      });

      it("fails clearly when containerd is not there", async () => {
        const failure = await nix2container(
          "-a",
          join(work, "absent.sock"),
          "load",
          join(work, "plain.tar"),
        ).catch((error: { code: number; stderr: string }) => error);
        expect((failure as { code: number }).code).toBe(1);
        expect((failure as { stderr: string }).stderr).toContain(
          `containerd at ${join(work, "absent.sock")} is not reachable`,
        );
      });
    },
  );
}
