import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Containerd,
  type ContainerdVersion,
  canRunContainerd,
  containerdSkipReason,
  findContainerd,
  mountsUnder,
  processesMentioning,
  startContainerd,
  systemContainerdVersion,
} from "./containerd.js";

const busybox = "/bin/busybox";
const runnable = canRunContainerd() && existsSync(busybox);

for (const version of ["1.6", "1.7", "2.1"] as ContainerdVersion[]) {
  const skipReason = runnable
    ? (containerdSkipReason(version) ?? "")
    : "needs root, runc and busybox-static";

  describe.skipIf(skipReason !== "")(
    `startContainerd ${version}${skipReason ? ` (skipped: ${skipReason})` : ""}`,
    () => {
      let containerd: Containerd;
      let rootfs: string;

      beforeAll(async () => {
        rootfs = mkdtempSync(join(tmpdir(), "harness-rootfs-"));
        mkdirSync(join(rootfs, "bin"));
        copyFileSync(busybox, join(rootfs, "bin", "busybox"));
        containerd = await startContainerd({ version });
      });
      afterAll(async () => {
        await containerd?.stop();
        rmSync(rootfs, { recursive: true, force: true });
      });

      it("runs the requested release", async () => {
        const { stdout } = await containerd.ctr(["version"]);
        expect(stdout).toMatch(
          new RegExp(`Server:[\\s\\S]*Version:\\s+v?${version.replace(".", "\\.")}\\.`),
        );
        expect(containerd.versionLine).toContain(version);
      });

      it("runs a container with the system's runc", async () => {
        const id = `harness-${version.replace(".", "-")}`;
        const { stdout } = await containerd.ctr([
          "run",
          "--rm",
          "--rootfs",
          rootfs,
          id,
          "/bin/busybox",
          "echo",
          "hello from runc",
        ]);
        expect(stdout.trim()).toBe("hello from runc");
      });

      it("reports a failing ctr command with its message", async () => {
        await expect(containerd.ctr(["tasks", "start", "no-such-container"])).rejects.toThrow(
          /no-such-container/,
        );
        const result = await containerd.ctr(["snapshots", "--snapshotter", "no-such", "ls"], {
          allowFailure: true,
        });
        expect(result.code).not.toBe(0);
      });

      it("stops, leaving no directory, mount or shim", async () => {
        const detached = await startContainerd({ version });
        const { stdout: started } = await detached.ctr([
          "run",
          "--detach",
          "--rootfs",
          rootfs,
          "sleeper",
          "/bin/busybox",
          "sleep",
          "600",
        ]);
        expect(started).toBe("");
        const { stdout: tasks } = await detached.ctr(["tasks", "list"]);
        expect(tasks).toMatch(/sleeper\s+\d+\s+RUNNING/);
        await detached.stop();
        expect(existsSync(detached.dir)).toBe(false);
        expect(mountsUnder(detached.dir)).toEqual([]);
        expect(await processesMentioning(detached.address)).toEqual([]);
        await detached.stop();
      });
    },
  );
}

describe.skipIf(!runnable || systemContainerdVersion() === undefined)(
  "startContainerd without a version",
  () => {
    it("runs the system's containerd from /usr/bin (1.6 on Debian 12, 1.7 on Debian 13)", async () => {
      const containerd = await startContainerd();
      try {
        expect(containerd.version).toBe(systemContainerdVersion());
        expect(containerd.bins.containerd).toBe("/usr/bin/containerd");
        const { stdout } = await containerd.ctr(["version"]);
        expect(stdout).toMatch(
          new RegExp(`Server:[\\s\\S]*Version:\\s+v?${containerd.version.replace(".", "\\.")}\\.`),
        );
      } finally {
        await containerd.stop();
      }
    });
  },
);

describe.skipIf(!runnable)("startContainerd with CRI", () => {
  for (const version of ["1.6", "1.7", "2.1"] as ContainerdVersion[]) {
    it(`loads the CRI plugin on ${version}`, async () => {
      if (!findContainerd(version).bins) return;
      const containerd = await startContainerd({ version, cri: true, snapshotterForCri: "native" });
      try {
        const { stdout } = await containerd.ctr(["plugins", "ls"]);
        const criLines = stdout.split("\n").filter((line) => /\bcri\b/.test(line));
        expect(criLines.length).toBeGreaterThan(0);
        for (const line of criLines) expect(line).toMatch(/\bok\s*$/);
      } finally {
        await containerd.stop();
      }
    });
  }
});
