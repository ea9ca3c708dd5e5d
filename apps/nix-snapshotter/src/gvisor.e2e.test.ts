import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type Containerd,
  canRunContainerd,
  containerdSkipReason,
  startContainerd,
} from "@nix-snapshotter/containerd-client/testing";
import { type BuiltImage, buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import {
  createNixFixtures,
  type NixFixtures,
  nixE2eSkipReason,
  type ScriptFixture,
} from "@nix-snapshotter/nix-store/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DaemonProcess, startDaemonProcess } from "./testing/daemon-process.js";

/**
 * A nix image under gVisor: containerd 2.1 unpacks it through the daemon, then runs it with
 * containerd's runc shim and `runsc` (Debian sid's gVisor, scripts/fetch-runsc.sh) as the runtime
 * binary, in both mount modes. runsc is wrapped to add `--network=none`: gVisor refuses the host's
 * network namespace, and `ctr run` gives the container none of its own.
 */

/** Finds (downloading once through scripts/fetch-runsc.sh) the runsc binary, or why not. */
function findRunsc(): { path?: string; reason?: string } {
  const fromEnvironment = process.env.NIX_SNAPSHOTTER_RUNSC;
  if (fromEnvironment) return { path: fromEnvironment };
  let directory = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const script = join(directory, "scripts", "fetch-runsc.sh");
    if (existsSync(script)) {
      const result = spawnSync("bash", [script], { encoding: "utf8" });
      const path = result.stdout.trim().split("\n").at(-1);
      if (result.status === 0 && path !== undefined && existsSync(path)) return { path };
      return {
        reason: `scripts/fetch-runsc.sh failed: ${result.stderr.trim().split("\n").at(-1)}`,
      };
    }
    const parent = dirname(directory);
    if (parent === directory) return { reason: "scripts/fetch-runsc.sh not found" };
    directory = parent;
  }
}

const baseSkip = !canRunContainerd()
  ? "needs root and runc"
  : (nixE2eSkipReason(["nix-store", "nix", "patchelf"]) ?? containerdSkipReason("2.1"));
const runsc = baseSkip === undefined ? findRunsc() : {};
const skip = baseSkip ?? runsc.reason;

for (const mountMode of ["bind", "hardlink"] as const) {
  describe.skipIf(skip !== undefined)(
    `gVisor (runsc) runs a nix image, ${mountMode} mode${skip ? ` (skipped: ${skip})` : ""}`,
    () => {
      let fixtures: NixFixtures;
      let script: ScriptFixture;
      let image: BuiltImage;
      let directory: string;
      let wrapper: string;
      let daemon: DaemonProcess;
      let containerd: Containerd;
      const reference = `docker.io/library/nix-gvisor-${mountMode}:latest`;

      beforeAll(async () => {
        fixtures = await createNixFixtures({ label: `gvisor-${mountMode}` });
        script = await fixtures.script();
        image = await buildImage({
          config: { Entrypoint: [script.executable] },
          closure: script.closure,
        });
        directory = await mkdtemp(join(tmpdir(), "nix-snapshotter-gvisor-"));
        wrapper = join(directory, "runsc");
        await writeFile(
          wrapper,
          `#!/bin/sh\nexec ${runsc.path} --network=none --root=${join(directory, "runsc-state")} "$@"\n`,
        );
        await chmod(wrapper, 0o755);
        daemon = await startDaemonProcess({ mountMode });
        containerd = await startContainerd({
          version: "2.1",
          proxyPlugins: { nix: daemon.address },
        });
        const archive = join(directory, "image.tar");
        await writeFile(archive, writeImageArchive(image, { names: [reference] }));
        await containerd.ctr(["images", "import", "--snapshotter", "nix", archive]);
      });

      afterAll(async () => {
        await containerd?.stop();
        await daemon?.cleanup();
        await fixtures?.cleanup();
        if (directory) await rm(directory, { recursive: true, force: true });
      });

      async function runInGvisor(id: string, ...command: string[]): Promise<string> {
        const { stdout } = await containerd.ctr([
          "run",
          "--rm",
          "--snapshotter",
          "nix",
          "--runc-binary",
          wrapper,
          reference,
          id,
          ...command,
        ]);
        return stdout;
      }

      it("runs the image's entrypoint, a program that lives only in the Nix store", async () => {
        const stdout = await runInGvisor(`gvisor-hello-${mountMode}`);
        expect(stdout.trim()).toBe("hello from nix store");
      });

      it("really is a gVisor sandbox: its kernel log is gVisor's", async () => {
        const busybox = script.interpreter.replace(/\/sh$/, "/busybox");
        const stdout = await runInGvisor(`gvisor-dmesg-${mountMode}`, busybox, "dmesg");
        expect(stdout).toMatch(/Starting gVisor/);
        // And the kernel it talks to is not the host's.
        const version = await runInGvisor(
          `gvisor-version-${mountMode}`,
          busybox,
          "cat",
          "/proc/version",
        );
        expect(version).toMatch(/^Linux version /);
        expect(version.trim()).not.toBe((await readFile("/proc/version", "utf8")).trim());
      });
    },
  );
}
