import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createContainerdClient, importArchive } from "@nix-snapshotter/containerd-client";
import {
  type Containerd,
  containerdSkipReason,
  runContainer,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import {
  findProgram,
  nixE2eSkipReason,
  TEST_GC_ROOTS_PARENT,
} from "@nix-snapshotter/nix-store/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createStandInSet,
  type RegistryProcess,
  registryEntry,
  type StandInSet,
  type Started,
  startRegistryProcess,
} from "./testing/index.js";
import { snapshotterEntry, startSnapshotter, stopProcess } from "./testing/processes.js";

/**
 * containerd 1.6 passes no layer annotations on `ctr` pulls and ignores `Mount.target`: there a
 * node copies the registry's image with skopeo (`oci-archive:`) and imports it with our loader
 * (containerd-client `importArchive`, which passes the labels to Prepare), the nix-snapshotter
 * daemon in hardlink mode, as `nix2container load` does.
 */
const execFileAsync = promisify(execFile);
const skip =
  nixE2eSkipReason(["nix-store", "nix-build", "nix-instantiate"]) ??
  (existsSync("/bin/busybox") ? undefined : "no /bin/busybox (busybox-static)") ??
  (findProgram("skopeo") ? undefined : "skopeo missing") ??
  (existsSync(snapshotterEntry) && existsSync(registryEntry)
    ? undefined
    : "run pnpm build first") ??
  containerdSkipReason("1.6");

describe.skipIf(skip !== undefined)(
  `containerd 1.6 runs a nix-registry image in hardlink mode${skip ? ` (skipped: ${skip})` : ""}`,
  () => {
    let dir: string;
    let set: StandInSet;
    let registry: RegistryProcess;
    let snapshotter: Started;
    let containerd: Containerd;
    let snapshotterRoots: string;

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "nix-registry-1-6-"));
      const unique = `${process.pid}-${Date.now()}`;
      set = await createStandInSet(`registry-1-6-${unique}`);
      snapshotterRoots = join(TEST_GC_ROOTS_PARENT, `registry-1-6-daemon-${unique}`);
      registry = await startRegistryProcess({
        dir,
        pkgsPath: set.path,
        gcRootsName: `registry-1-6-${unique}`,
      });
      const daemon = await startSnapshotter(dir, snapshotterRoots, "hardlink");
      snapshotter = daemon.process;
      containerd = await startContainerd({ version: "1.6", proxyPlugins: { nix: daemon.address } });
    });

    afterAll(async () => {
      await containerd?.stop();
      await stopProcess(snapshotter);
      await registry?.remove();
      if (snapshotterRoots) await rm(snapshotterRoots, { recursive: true, force: true });
      await set?.remove();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it("copies with skopeo, imports through the loader, and runs /bin/hello", async () => {
      const source = `127.0.0.1:${registry.port}/hello/busybox:latest`;
      const archive = join(dir, "image.tar");
      await execFileAsync("skopeo", [
        "copy",
        "--src-tls-verify=false",
        `docker://${source}`,
        `oci-archive:${archive}`,
      ]);
      const reference = "docker.io/library/nix-registry-hello:latest";
      const client = createContainerdClient({
        address: containerd.address,
        namespace: containerd.namespace,
      });
      try {
        const result = await importArchive(client, await readFile(archive), {
          snapshotter: "nix",
          names: [reference],
        });
        expect(result.layersApplied).toBe(1);
      } finally {
        client.close();
      }
      // The daemon rooted the closure while unpacking (hardlink mode: one plain overlay).
      const rooted: string[] = [];
      for (const owner of await readdir(snapshotterRoots)) {
        if (owner.startsWith(".")) continue;
        for (const link of await readdir(join(snapshotterRoots, owner))) {
          rooted.push(await readlink(join(snapshotterRoots, owner, link)));
        }
      }
      expect(rooted.some((path) => path.endsWith("-hello"))).toBe(true);
      expect(rooted.some((path) => path.endsWith("-busybox"))).toBe(true);
      const stdout = await runContainer(containerd, "nix", reference, "hello-1-6", "/bin/hello");
      expect(stdout.trim()).toBe("hello from the nix registry");
    });
  },
);
