import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createContainerdClient, importArchive } from "@nix-snapshotter/containerd-client";
import {
  type Containerd,
  type ContainerdVersion,
  canRunContainerd,
  containerdSkipReason,
  runContainer,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import {
  type BuiltImage,
  buildImage,
  createMemoryImageSource,
  createRegistryClient,
  pushImage,
  staticCredentials,
  writeImageArchive,
} from "@nix-snapshotter/image-builder";
import {
  DOCKER_REGISTRY_BINARY,
  startRegistry,
  type TestRegistry,
  withLayerAnnotations,
} from "@nix-snapshotter/image-builder/testing";
import {
  type BinaryCache,
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
  type ScriptFixture,
  startBinaryCache,
} from "@nix-snapshotter/nix-store/testing";
import { testImageArchive } from "@nix-snapshotter/oci/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DaemonProcess, startDaemonProcess } from "./testing/daemon-process.js";

/**
 * A nix image in a real containerd, through the daemon: containerd imports an OCI archive whose
 * only layer is the mountpoint layer with nix annotations, unpacks it through the `nix` proxy
 * snapshotter (the labels reach Prepare), and `ctr run --snapshotter nix` runs a program that
 * exists only in /nix/store.
 *
 * Where labels reach the snapshotter on import (FIELD-NOTES): 2.1 `ctr images import` (Transfer
 * API, unpack_config naming `nix`); 1.7 `ctr images import --local=false`. containerd 1.6's `ctr`
 * passes no labels at all: there the containerd-client loader (`importArchive`) imports it.
 */

const nixSkip = nixE2eSkipReason(["nix-store", "nix", "patchelf"]);
const baseSkip = !canRunContainerd() ? "needs root and runc" : nixSkip;

function importArguments(version: ContainerdVersion, archive: string): string[] {
  return version === "1.7"
    ? ["images", "import", "--local=false", "--snapshotter", "nix", archive]
    : ["images", "import", "--snapshotter", "nix", archive];
}

/** `undefined` for a file or directory removed meanwhile (the daemon removes root sets). */
const unlessGone = (error: NodeJS.ErrnoException): undefined => {
  if (error.code === "ENOENT") return undefined;
  throw error;
};

/**
 * Targets of every GC root the daemon holds (`<gcRootsDir>/<owner>/<link>`). A root set the
 * daemon removes while this reads it (containerd collecting a snapshot) counts as gone.
 */
async function rootedPaths(daemon: DaemonProcess): Promise<Set<string>> {
  const paths = new Set<string>();
  if (!existsSync(daemon.gcRootsDir)) return paths;
  for (const owner of await readdir(daemon.gcRootsDir)) {
    if (owner.startsWith(".")) continue;
    const names = await readdir(join(daemon.gcRootsDir, owner)).catch(unlessGone);
    for (const name of names ?? []) {
      const target = await readlink(join(daemon.gcRootsDir, owner, name)).catch(unlessGone);
      if (target !== undefined) paths.add(target);
    }
  }
  return paths;
}

/** The daemon-side key of a container's active snapshot (containerd writes `<ns>/<n>/<key>`). */
async function activeKey(daemon: DaemonProcess, key: string): Promise<string> {
  for await (const info of daemon.snapshotter.list(["kind==active"])) {
    if (info.name.endsWith(`/${key}`)) return info.name;
  }
  throw new Error(`no active snapshot for ${key}`);
}

interface Setup {
  fixtures: NixFixtures;
  script: ScriptFixture;
  image: BuiltImage;
  /** busybox of the script's closure, for commands inside the container. */
  busybox: string;
  directory: string;
  archive(name: string, image?: BuiltImage): Promise<string>;
}

async function createSetup(): Promise<Setup> {
  const fixtures = await createNixFixtures({ label: "daemon-containerd" });
  const script = await fixtures.script();
  const image = await buildImage({
    config: { Entrypoint: [script.executable] },
    closure: script.closure,
  });
  const directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-e2e-"));
  let count = 0;
  return {
    fixtures,
    script,
    image,
    busybox: script.interpreter.replace(/\/sh$/, "/busybox"),
    directory,
    async archive(name, source = image) {
      const path = join(directory, `image-${count++}.tar`);
      await writeFile(path, writeImageArchive(source, { names: [name] }));
      return path;
    },
  };
}

/** The pieces one describe runs: fixtures, the daemon and a containerd that uses it. */
interface Stack {
  setup: Setup;
  daemon: DaemonProcess;
  containerd: Containerd;
  /** Daemons stopped by a test, cleaned up after the current one. */
  retired: DaemonProcess[];
}

interface StackOptions {
  version: ContainerdVersion;
  mountMode: "bind" | "hardlink";
  /** Runs after the fixtures exist and before the daemon starts; returns the daemon's env. */
  beforeDaemon?: (setup: Setup) => Promise<Record<string, string> | undefined>;
  /** Runs after containerd and the daemon stopped, before the fixtures are removed. */
  afterDaemon?: () => Promise<void>;
}

/** Starts a stack before the describe's tests and removes all of it after them. */
function useStack(options: StackOptions): Stack {
  const stack = { retired: [] as DaemonProcess[] } as Stack;
  beforeAll(async () => {
    stack.setup = await createSetup();
    const env = await options.beforeDaemon?.(stack.setup);
    stack.daemon = await startDaemonProcess({
      mountMode: options.mountMode,
      ...(env === undefined ? {} : { env }),
    });
    stack.containerd = await startContainerd({
      version: options.version,
      proxyPlugins: { nix: stack.daemon.address },
    });
  });
  afterAll(async () => {
    await stack.containerd?.stop();
    await stack.daemon?.cleanup();
    for (const stopped of stack.retired) await stopped.cleanup();
    await options.afterDaemon?.();
    await stack.setup?.fixtures.cleanup();
    if (stack.setup) await rm(stack.setup.directory, { recursive: true, force: true });
  });
  return stack;
}

/** Starts container `id` detached, running `busybox sleep 600`. */
async function runSleeper(stack: Stack, reference: string, id: string): Promise<void> {
  await stack.containerd.ctr([
    "run",
    "--detach",
    "--snapshotter",
    "nix",
    reference,
    id,
    stack.setup.busybox,
    "sleep",
    "600",
  ]);
}

/** Kills a detached container, deletes its task once it has exited, then the container. */
async function removeContainer(containerd: Containerd, id: string): Promise<void> {
  await containerd.ctr(["tasks", "kill", "--signal", "SIGKILL", id]);
  for (let attempt = 0; attempt < 100; attempt++) {
    const task = await containerd.ctr(["tasks", "delete", id], { allowFailure: true });
    if (task.code === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await containerd.ctr(["containers", "delete", id]);
}

/**
 * containerd's GC removes snapshots in the background after deletions: waits (up to 30 s) until
 * the daemon holds no roots, and returns the paths still rooted then.
 */
async function rootsAfterCollection(daemon: DaemonProcess): Promise<Set<string>> {
  let left = await rootedPaths(daemon);
  for (let attempt = 0; attempt < 300 && left.size > 0; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    left = await rootedPaths(daemon);
  }
  return left;
}

for (const version of ["2.1", "1.7"] as ContainerdVersion[]) {
  const skip = baseSkip ?? containerdSkipReason(version);

  for (const mountMode of ["bind", "hardlink"] as const) {
    describe.skipIf(skip !== undefined)(
      `containerd ${version} with the daemon in ${mountMode} mode${skip ? ` (skipped: ${skip})` : ""}`,
      () => {
        const stack = useStack({ version, mountMode });
        const reference = `docker.io/library/nix-hello-${mountMode}:latest`;

        it("unpacks a nix image through the daemon, which roots its closure", async () => {
          await stack.containerd.ctr(
            importArguments(version, await stack.setup.archive(reference)),
          );
          const { stdout } = await stack.containerd.ctr(["images", "list", "--quiet"]);
          expect(stdout.split("\n")).toContain(reference);
          // The nix labels reached Prepare: the daemon rooted every path of the closure.
          expect(await rootedPaths(stack.daemon)).toEqual(new Set(stack.setup.script.closure));
          const snapshots = await stack.containerd.ctr(["snapshots", "--snapshotter", "nix", "ls"]);
          expect(snapshots.stdout).toMatch(/sha256:[0-9a-f]{64}\s+Committed/);
        });

        it("runs a program that lives only in the Nix store", async () => {
          const id = `hello-${mountMode}`;
          const stdout = await runContainer(stack.containerd, "nix", reference, id);
          expect(stdout.trim()).toBe("hello from nix store");
        });

        it("keeps the roots while a container runs, and releases them once containerd collects the image", async () => {
          const id = `sleeper-${mountMode}`;
          await runSleeper(stack, reference, id);
          await stack.containerd.ctr(["images", "remove", "--sync", reference]);
          // The container's snapshot keeps its parent (the nix layer) and so the roots.
          expect(await rootedPaths(stack.daemon)).toEqual(new Set(stack.setup.script.closure));
          await removeContainer(stack.containerd, id);
          expect(await rootsAfterCollection(stack.daemon)).toEqual(new Set());
          const snapshots: string[] = [];
          for await (const info of stack.daemon.snapshotter.list()) snapshots.push(info.name);
          expect(snapshots).toEqual([]);
          // Import again for the next tests.
          await stack.containerd.ctr(
            importArguments(version, await stack.setup.archive(reference)),
          );
        });

        it("serves containerd again after a daemon restart on the same socket and root", async () => {
          const before = await stack.daemon.stop("SIGTERM");
          expect(before).toEqual({ code: 0, signal: null });
          const restarted = await startDaemonProcess({
            mountMode,
            addressFlag: stack.daemon.address,
            rootFlag: stack.daemon.root,
            // Same roots directory: the snapshots' roots must still be found.
            gcRootsDir: stack.daemon.gcRootsDir,
          });
          // The stopped daemon's directory holds the shared root: clean it up last.
          stack.retired.push(stack.daemon);
          stack.daemon = restarted;
          expect(await rootedPaths(stack.daemon)).toEqual(new Set(stack.setup.script.closure));
          const stdout = await runContainer(
            stack.containerd,
            "nix",
            reference,
            `restarted-${mountMode}`,
          );
          expect(stdout.trim()).toBe("hello from nix store");
          expect(await rootedPaths(stack.daemon)).toEqual(new Set(stack.setup.script.closure));
        });

        it(`gives the container ${mountMode === "bind" ? "one bind mount per store path" : "one plain overlay"}`, async () => {
          const id = `mounts-${mountMode}`;
          await stack.containerd.ctr([
            "container",
            "create",
            "--snapshotter",
            "nix",
            reference,
            id,
          ]);
          try {
            const mounts = await stack.daemon.snapshotter.mounts(await activeKey(stack.daemon, id));
            const binds = mounts.filter((mount) => mount.type === "bind");
            if (mountMode === "bind") {
              expect(binds.map((mount) => mount.source).sort()).toEqual(
                [...stack.setup.script.closure].sort(),
              );
              for (const mount of binds) {
                expect(mount.target).toBe(mount.source);
                expect(mount.options).toContain("ro");
              }
            } else {
              expect(binds).toEqual([]);
              expect(mounts).toHaveLength(1);
            }
          } finally {
            await stack.containerd.ctr(["containers", "delete", id]);
          }
        });
      },
    );
  }

  describe.skipIf(skip !== undefined)(
    `containerd ${version}: hostile nix images${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      const stack = useStack({ version, mountMode: "bind" });

      const hostile: Array<[string, string]> = [
        ["a host directory", "/etc"],
        ["a path escaping the store", "/nix/store/../etc"],
        ["a store path without hash", "/nix/store/x"],
      ];
      for (const [what, path] of hostile) {
        it(`refuses a store-path label naming ${what}, mounting and rooting nothing`, async () => {
          const image = withLayerAnnotations(stack.setup.image, {
            "containerd.io/snapshot/nix-layer": "true",
            "containerd.io/snapshot/nix-store-path.0": path,
          });
          const name = `docker.io/library/hostile-${hostile.findIndex(([, p]) => p === path)}:latest`;
          const result = await stack.containerd.ctr(
            importArguments(version, await stack.setup.archive(name, image)),
            {
              allowFailure: true,
            },
          );
          expect(result.code).not.toBe(0);
          expect(`${result.stdout}${result.stderr}`).toContain("nix-store-path.0");
          expect(await rootedPaths(stack.daemon)).toEqual(new Set());
          const committed: string[] = [];
          for await (const info of stack.daemon.snapshotter.list()) committed.push(info.name);
          expect(committed).toEqual([]);
        });
      }
    },
  );
}

// The snapshots API as containerd's own client drives it through the proxy plugin: every RPC,
// containerd's error mapping of our codes, Info JSON and int64 usage, on every release line.
for (const version of ["1.6", "1.7", "2.1"] as ContainerdVersion[]) {
  const skip = containerdSkipReason(version);
  describe.skipIf(skip !== undefined)(
    `ctr snapshots through containerd ${version}${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      let daemon: DaemonProcess;
      let containerd: Containerd;
      const snapshots = (...args: string[]) =>
        containerd.ctr(["snapshots", "--snapshotter", "nix", ...args], { allowFailure: true });

      beforeAll(async () => {
        daemon = await startDaemonProcess({ mountMode: "bind" });
        containerd = await startContainerd({ version, proxyPlugins: { nix: daemon.address } });
      });
      afterAll(async () => {
        await containerd?.stop();
        await daemon?.cleanup();
      });

      it("prepares, commits, stats, labels, lists, measures and removes", async () => {
        expect((await snapshots("ls")).stdout.trim()).toBe("KEY PARENT KIND");
        expect((await snapshots("prepare", "layer", "")).code).toBe(0);
        expect((await snapshots("commit", "base", "layer")).code).toBe(0);
        expect((await snapshots("prepare", "work", "base")).code).toBe(0);
        expect((await snapshots("label", "base", "containerd.io/snapshot/x=y")).code).toBe(0);
        const info = JSON.parse((await snapshots("info", "base")).stdout) as {
          Kind: string;
          Name: string;
          Labels: Record<string, string>;
          Created: string;
        };
        expect(info).toMatchObject({ Kind: "Committed", Name: "base" });
        expect(info.Labels["containerd.io/snapshot/x"]).toBe("y");
        expect(Number.isNaN(Date.parse(info.Created))).toBe(false);
        const mounts = (await snapshots("mounts", "/mnt/x", "work")).stdout;
        expect(mounts).toMatch(/^mount -t overlay overlay \/mnt\/x -o .*lowerdir=/);
        const list = (await snapshots("ls")).stdout;
        expect(list).toMatch(/^work\s+base\s+Active\s*$/m);
        expect(list).toMatch(/^base\s+Committed\s*$/m);
        expect((await snapshots("usage", "work")).stdout).toMatch(/^work\s+\S+ \S+\s+\d+/m);

        const busy = await snapshots("rm", "base");
        expect(busy.code).not.toBe(0);
        expect(busy.stderr).toMatch(/failed precondition/);
        const missing = await snapshots("info", "nope");
        expect(missing.stderr).toMatch(/not found/);
        const duplicate = await snapshots("prepare", "work", "base");
        expect(duplicate.stderr).toMatch(/already exists/);
        expect((await snapshots("rm", "work", "base")).code).toBe(0);
        expect((await snapshots("ls")).stdout.trim()).toBe("KEY PARENT KIND");
      });
    },
  );
}

/** An OCI archive of an ordinary one-layer image: `/etc/ordinary.txt` = "ordinary layer". */
function ordinaryBaseArchive(): Buffer {
  return testImageArchive({
    layers: [
      [
        { name: "etc", type: "directory" },
        { name: "etc/ordinary.txt", type: "file", data: Buffer.from("ordinary layer\n") },
      ],
    ],
    compression: "none",
  }).archive;
}

// Nix layers interleave with ordinary ones: ordinary layer, nix layer (synthetic paths), then a
// second nix layer (busybox script) built `fromImage` the first. The container sees the files of
// the ordinary layer and the store paths of both nix layers.
{
  const skip = baseSkip ?? containerdSkipReason("2.1");
  for (const mountMode of ["bind", "hardlink"] as const) {
    describe.skipIf(skip !== undefined)(
      `containerd 2.1: ordinary and nix layers interleaved, ${mountMode} mode${skip ? ` (skipped: ${skip})` : ""}`,
      () => {
        const stack = useStack({ version: "2.1", mountMode });

        it("runs and sees the ordinary files and the store paths of both nix layers", async () => {
          const synthetic = await stack.setup.fixtures.syntheticClosure({
            count: 2,
            closureInfo: false,
          });
          const first = await buildImage({
            fromImage: ordinaryBaseArchive(),
            closure: synthetic.paths,
          });
          const second = await buildImage({
            fromImage: writeImageArchive(first),
            closure: stack.setup.script.closure,
            config: { Entrypoint: [stack.setup.script.executable] },
          });
          expect(second.manifest.layers).toHaveLength(3);
          const reference = `docker.io/library/interleaved-${mountMode}:latest`;
          await stack.containerd.ctr(
            importArguments("2.1", await stack.setup.archive(reference, second)),
          );
          expect(await rootedPaths(stack.daemon)).toEqual(
            new Set([...synthetic.paths, ...stack.setup.script.closure]),
          );
          const stdout = await runContainer(
            stack.containerd,
            "nix",
            reference,
            `interleaved-${mountMode}`,
            stack.setup.busybox,
            "sh",
            "-c",
            `cat /etc/ordinary.txt && ls -d ${synthetic.paths.join(" ")} && ${stack.setup.script.executable}`,
          );
          expect(stdout.trim().split("\n")).toEqual([
            "ordinary layer",
            ...[...synthetic.paths].sort(),
            "hello from nix store",
          ]);
        });
      },
    );
  }
}

// A registry pull: containerd 2.1's `ctr images pull` goes through the Transfer service, whose
// unpacker passes the layer annotations as labels. (1.7's Transfer pull ignores --plain-http and
// its local pull passes no labels: there, CRI pulls are the registry path.)
{
  const registrySkip = existsSync(DOCKER_REGISTRY_BINARY) ? undefined : "docker-registry missing";
  const skip = baseSkip ?? registrySkip ?? containerdSkipReason("2.1");
  describe.skipIf(skip !== undefined)(
    `containerd 2.1 pulls a nix image from a registry${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      let registry: TestRegistry;
      const stack = useStack({
        version: "2.1",
        mountMode: "bind",
        async beforeDaemon() {
          registry = await startRegistry();
          return undefined;
        },
        afterDaemon: async () => registry?.stop(),
      });

      it("pulls with --snapshotter nix and runs a program from the Nix store", async () => {
        await pushImage({
          client: createRegistryClient({
            registry: registry.host,
            plainHttp: true,
            credentials: staticCredentials(undefined),
          }),
          repository: "library/nix-pulled",
          tag: "latest",
          source: createMemoryImageSource(
            stack.setup.image.manifestDescriptor,
            stack.setup.image.blobs,
          ),
        });
        const reference = `${registry.host}/library/nix-pulled:latest`;
        await stack.containerd.ctr([
          "images",
          "pull",
          "--plain-http",
          "--snapshotter",
          "nix",
          reference,
        ]);
        expect(await rootedPaths(stack.daemon)).toEqual(new Set(stack.setup.script.closure));
        const stdout = await runContainer(stack.containerd, "nix", reference, "pulled");
        expect(stdout.trim()).toBe("hello from nix store");
      });
    },
  );
}

// The closure is missing from the store when containerd unpacks the image: the daemon realises
// it from a binary cache (served on 127.0.0.1, named in NIX_CONFIG) inside Prepare. Roots keep
// the paths alive while a container uses them; after containerd collects the image, Nix may
// delete them.
for (const version of ["2.1", "1.7"] as ContainerdVersion[]) {
  const skip = baseSkip ?? containerdSkipReason(version);
  describe.skipIf(skip !== undefined)(
    `containerd ${version}: closure substituted during unpack${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      let cache: BinaryCache;
      let missing: string[];
      let image: BuiltImage;
      const reference = "docker.io/library/nix-substituted:latest";
      const stack = useStack({
        version,
        mountMode: "bind",
        async beforeDaemon(setup) {
          const synthetic = await setup.fixtures.syntheticClosure({ count: 4, closureInfo: false });
          missing = synthetic.paths;
          image = await buildImage({
            config: { Entrypoint: [setup.script.executable] },
            closure: [...stack.setup.script.closure, ...missing],
          });
          cache = await startBinaryCache({ paths: missing });
          await synthetic.release();
          await setup.fixtures.deletePaths(missing);
          const nixConfig = Object.entries(cache.nixOptions)
            .map(([name, value]) => `${name} = ${value}`)
            .join("\n");
          return { NIX_CONFIG: nixConfig };
        },
        afterDaemon: async () => cache?.close(),
      });

      it("realises the missing paths from the cache while unpacking, and runs", async () => {
        for (const path of missing) expect(existsSync(path)).toBe(false);
        await stack.containerd.ctr(
          importArguments(version, await stack.setup.archive(reference, image)),
        );
        for (const path of missing) expect(existsSync(path)).toBe(true);
        expect(cache.requests()).toBeGreaterThan(0);
        const stdout = await runContainer(
          stack.containerd,
          "nix",
          reference,
          "list-substituted",
          stack.setup.busybox,
          "ls",
          "-d",
          ...missing,
        );
        expect(stdout.trim().split("\n").sort()).toEqual([...missing].sort());
      });

      it("keeps the paths from Nix's deletion while in use, and lets it delete them after", async () => {
        await runSleeper(stack, reference, "holder");
        await stack.containerd.ctr(["images", "remove", "--sync", reference]);
        const refused = spawnSync("nix-store", ["--delete", ...missing], { encoding: "utf8" });
        expect(refused.status).not.toBe(0);
        expect(refused.stderr).toMatch(/still alive/);
        for (const path of missing) expect(existsSync(path)).toBe(true);

        await removeContainer(stack.containerd, "holder");
        expect(await rootsAfterCollection(stack.daemon)).toEqual(new Set());
        const deleted = spawnSync("nix-store", ["--delete", ...missing], { encoding: "utf8" });
        expect(deleted.stderr).not.toMatch(/still alive/);
        expect(deleted.status, deleted.stderr).toBe(0);
        for (const path of missing) expect(existsSync(path)).toBe(false);
      });
    },
  );
}

// containerd 1.6: its `ctr` passes no snapshot labels, and its mount code ignores
// `Mount.target` (so bind mode cannot work). The image is imported with our own loader
// (`importArchive`: content, leases, snapshots and diff APIs, labels passed to Prepare), and the
// daemon runs in hardlink mode: the container gets one plain overlay.
{
  const skip = baseSkip ?? containerdSkipReason("1.6");
  describe.skipIf(skip !== undefined)(
    `containerd 1.6 with the daemon in hardlink mode${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      const stack = useStack({ version: "1.6", mountMode: "hardlink" });
      const reference = "docker.io/library/nix-hello-1-6:latest";

      it("imports through the loader and runs a program that lives only in the Nix store", async () => {
        const client = createContainerdClient({
          address: stack.containerd.address,
          namespace: stack.containerd.namespace,
        });
        try {
          const result = await importArchive(
            client,
            writeImageArchive(stack.setup.image, { names: [reference] }),
            { snapshotter: "nix", names: [reference] },
          );
          expect(result.layersApplied).toBe(1);
        } finally {
          client.close();
        }
        expect(await rootedPaths(stack.daemon)).toEqual(new Set(stack.setup.script.closure));
        const stdout = await runContainer(stack.containerd, "nix", reference, "hello-1-6");
        expect(stdout.trim()).toBe("hello from nix store");
      });
    },
  );
}
