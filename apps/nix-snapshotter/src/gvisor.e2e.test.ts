import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
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
 * network namespace, and `ctr run` gives the container none of its own. runsc also writes its debug
 * logs (one file per command) into the test's directory: a failed `ctr run` throws with the tails
 * of runsc's, containerd's and the daemon's logs (a run once exited 2 with an empty stderr in CI).
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
          `#!/bin/sh\nexec ${runsc.path} --network=none --root=${join(directory, "runsc-state")} --debug --debug-log=${join(directory, "runsc-logs")}/ "$@"\n`,
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

      /**
       * What the logs say about the run of container `id`: what a failed run throws with; and
       * whether runsc's own kernel crashed with the known bug below.
       */
      async function diagnostics(
        id: string,
        earlierLogs: ReadonlySet<string>,
      ): Promise<{ text: string; sentryBug: boolean }> {
        const lines = (text: string) => text.trimEnd().split("\n");
        const last = (picked: string[], count: number) =>
          picked
            .slice(-count)
            .map((line) => (line.length > 400 ? `${line.slice(0, 400)}...` : line));
        const parts: string[] = [];
        let sentryBug = false;
        // runsc's debug logs (a file per command, named by time, of this run: the runs of a mode
        // are sequential) are long: their warnings and errors, and how they end.
        for (const file of (await runscLogs()).filter((name) => !earlierLogs.has(name)).sort()) {
          const text = lines(
            await readFile(join(directory, "runsc-logs", file), "utf8").catch(() => ""),
          );
          const warnings = text.filter(
            (line) => /^[WE]\d{4}/.test(line) && !line.includes("ignoring unknown"),
          );
          // A crash of the sandbox's kernel (Go's exit status 2) starts with its panic message.
          const crash = text.findIndex((line) =>
            /^(panic|fatal error|unexpected fault)/.test(line),
          );
          const crashLines = crash < 0 ? [] : text.slice(Math.max(0, crash - 5), crash + 25);
          if (
            crash >= 0 &&
            text[crash]!.startsWith("panic: running on goroutine") &&
            crashLines.some((line) => line.includes("kernel.(*Task).assertTaskGoroutine"))
          ) {
            sentryBug = true;
          }
          parts.push(
            `runsc ${file}: warnings and errors\n${last(warnings, 15).join("\n")}${crash < 0 ? "" : `\ncrash\n${last(crashLines, 30).join("\n")}`}\nlast lines\n${last(text, 10).join("\n")}`,
          );
        }
        const containerdLines = lines(await containerd.log()).filter(
          (line) => line.includes(id) || /level=(warning|error|fatal)/.test(line),
        );
        parts.push(
          `containerd's log on it, and its warnings:\n${last(containerdLines, 20).join("\n")}`,
        );
        // pino levels: 40 warn, 50 error.
        const daemonLines = lines(await daemon.log()).filter((line) => /"level":[456]0/.test(line));
        parts.push(`the daemon's warnings and errors:\n${last(daemonLines, 10).join("\n")}`);
        return { text: parts.join("\n\n"), sentryBug };
      }

      const runscLogs = () => readdir(join(directory, "runsc-logs")).catch(() => [] as string[]);

      /**
       * `ctr run`s the image in gVisor. runsc 20240729 (Debian sid's, the one tested) sometimes
       * crashes its own kernel while the container reads a file from its gofer: "panic: running on
       * goroutine N (task goroutine for kernel.Task ... is 0)" from `Task.assertTaskGoroutine`,
       * exit status 2 and nothing on stderr (CI once, and 2 of 14 runs of this file here, in both
       * mount modes: the mounts it was given are not involved). A run that fails with that exact
       * crash in runsc's log runs once more, under a new id, and says so; any other failure fails.
       */
      async function runInGvisor(id: string, ...command: string[]): Promise<string> {
        for (let attempt = 1; ; attempt++) {
          const name = attempt === 1 ? id : `${id}-again`;
          const earlierLogs = new Set(await runscLogs());
          try {
            const { stdout } = await containerd.ctr([
              "run",
              "--rm",
              "--snapshotter",
              "nix",
              "--runc-binary",
              wrapper,
              reference,
              name,
              ...command,
            ]);
            return stdout;
          } catch (error) {
            const { text, sentryBug } = await diagnostics(name, earlierLogs);
            const message = `${(error as Error).message}\n\n${text}`;
            if (!sentryBug || attempt > 1) throw new Error(message, { cause: error });
            console.warn(`gVisor's kernel crashed (runsc's known bug); running again.\n${message}`);
          }
        }
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
