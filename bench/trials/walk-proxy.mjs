// One Walk of a proxy snapshotter from containerd's own Go client (what containerd's garbage
// collector does after each removal), over a store like the start bench's: 3 committed layers
// with 5,001 labels each and 10 plain snapshots. Against the daemon (hardlink mode) and against
// containerd's overlay snapshotter served by Go (go-snapshot-cycles serve), the same client:
// the Go server's figure is grpc-go's and containerd's client-side share (decode, Info maps),
// the difference is the node side. Each with grpc-go's default windows and with 16 MiB windows.
// `node bench/trials/walk-proxy.mjs [walks] [labels]` after `pnpm run build`, root.

import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const from = (path) => import(new URL(`../../${path}`, import.meta.url).href);
const { buildGoProgram } = await from("packages/snapshotter/dist/testing/index.js");
const { startDaemonProcess } = await from("apps/nix-snapshotter/dist/testing/index.js");

/** containerd's overlay snapshotter served over the proxy API by go-snapshot-cycles. */
async function startGoOverlay(binary) {
  const work = await mkdtemp(join(tmpdir(), "walk-proxy-overlay-"));
  const address = join(work, "overlay.sock");
  const child = spawn(binary, ["serve", join(work, "root"), address], { stdio: "inherit" });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  for (let waited = 0; !existsSync(address); waited += 50) {
    if (waited > 20_000 || child.exitCode !== null) throw new Error("go overlay did not start");
    await delay(50);
  }
  return {
    address,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
      await rm(work, { recursive: true, force: true });
    },
  };
}

const walks = process.argv[2] ?? "15";
const labels = process.argv[3] ?? "5001";
const here = fileURLToPath(new URL(".", import.meta.url));
const walkProxy = await buildGoProgram(join(here, "walk-proxy", "main.go"), "walk-proxy");
const cycles = await buildGoProgram(
  join(here, "..", "src", "go-snapshot-cycles", "main.go"),
  "go-snapshot-cycles",
);
const run = async (address) => {
  const { stdout } = await promisify(execFile)(walkProxy, [address, "3", labels, "10", walks], {
    maxBuffer: 1 << 20,
  });
  return JSON.parse(stdout.trim().split("\n").at(-1));
};
const daemon = await startDaemonProcess({ mountMode: "hardlink", logLevel: "warn" });
const overlay = await startGoOverlay(cycles);
try {
  for (let round = 0; round < 2; round++) {
    for (const [name, address] of round === 0
      ? [
          ["daemon", daemon.address],
          ["go overlay", overlay.address],
        ]
      : [
          ["go overlay", overlay.address],
          ["daemon", daemon.address],
        ]) {
      const result = await run(address);
      console.log(
        `${name}: ${result.infos} infos, ${result.labels} labels; Walk median ${result.msDefaultMedian} ms (default windows), ${result.msWideMedian} ms (16 MiB windows); default ${result.msDefault.join(" ")}; wide ${result.msWide.join(" ")}`,
      );
    }
  }
} finally {
  await overlay.stop?.();
  await daemon.cleanup();
}
