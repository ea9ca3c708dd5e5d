// Trial: the mount syscalls of a bind-mode container start, counted in containerd and its shim.
// node bench/trials/strace-bind-start.mjs 1000 5000   (root, after pnpm build; strace attaches to
// the test containerd (found by its private config path) and follows the shims it starts.
import { execFileSync, spawn } from "node:child_process";
import { createContainerdClient, importArchive } from "@nix-snapshotter/containerd-client";
import { startContainerd } from "@nix-snapshotter/containerd-client/testing";
import { buildImage, writeImageArchive } from "@nix-snapshotter/image-builder";
import { createNixFixtures } from "@nix-snapshotter/nix-store/testing";
import { startDaemonProcess } from "nix-snapshotter/testing";

const counts = process.argv.slice(2).map(Number);
const fixtures = await createNixFixtures({ label: "strace-shim" });
const busybox = await fixtures.busybox();
const daemon = await startDaemonProcess({ mountMode: "bind", logLevel: "warn" });
const containerd = await startContainerd({ version: "1.7", proxyPlugins: { nix: daemon.address } });
const client = createContainerdClient({
  address: containerd.address,
  namespace: containerd.namespace,
});
const pid = execFileSync("pgrep", ["-f", containerd.configPath]).toString().trim().split("\n")[0];
const closures = [];
try {
  for (const count of counts) {
    const synthetic = await fixtures.syntheticClosure({
      count,
      name: `strace-shim-${count}`,
      closureInfo: false,
    });
    closures.push(synthetic);
    const image = await buildImage({
      config: { Entrypoint: [`${busybox.storePath}/bin/true`] },
      closure: [...busybox.closure, ...synthetic.paths],
    });
    await importArchive(
      client,
      writeImageArchive(image, { names: [`docker.io/strace/n${count}:1`] }),
      { snapshotter: "nix" },
    );
    await containerd.ctr([
      "run",
      "--rm",
      "--snapshotter",
      "nix",
      `docker.io/strace/n${count}:1`,
      `warm-${count}`,
    ]);
    for (const wall of [true, false]) {
      const strace = spawn(
        "strace",
        ["-f", "-c", ...(wall ? ["-w"] : []), "-e", "trace=mount,umount2", "-p", pid],
        { stdio: ["ignore", "ignore", "pipe"] },
      );
      let report = "";
      strace.stderr.on("data", (d) => (report += d));
      await new Promise((r) => setTimeout(r, 1500));
      const start = performance.now();
      await containerd.ctr([
        "run",
        "--rm",
        "--snapshotter",
        "nix",
        `docker.io/strace/n${count}:1`,
        `t-${count}-${wall}`,
      ]);
      const ms = performance.now() - start;
      strace.kill("SIGINT");
      await new Promise((r) => strace.on("exit", r));
      console.log(
        `== ${count + busybox.closure.length} paths, ${wall ? "wall (-w)" : "system time"}: ctr run --rm ${ms.toFixed(0)} ms under strace\n${report
          .split("\n")
          .filter((l) => /mount|total|calls/.test(l))
          .join("\n")}`,
      );
    }
  }
} finally {
  client.close();
  await containerd.stop();
  await daemon.cleanup();
  for (const s of closures) {
    await s.release();
    await fixtures.deletePaths(s.paths).catch(() => undefined);
  }
  await fixtures.cleanup();
}
