import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createSnapshotter } from "./snapshotter.js";
import { runConformanceSuite } from "./testing/conformance.js";
import { mountAll, unmountAll } from "./testing/mount.js";

// The in-process snapshotter with real overlay mounts (mount(8), root).
runConformanceSuite("in-process overlay", async ({ directory }) => ({
  snapshotter: await createSnapshotter({ root: directory, mountMode: "none" }),
}));

runConformanceSuite("in-process overlay, bind mode", async ({ directory }) => ({
  snapshotter: await createSnapshotter({ root: directory, mountMode: "bind" }),
}));

runConformanceSuite("in-process fuse-overlayfs", async ({ directory }) => ({
  snapshotter: await createSnapshotter({ root: directory, mountMode: "none", fuseOverlayfs: true }),
}));

describe.skipIf(process.getuid?.() !== 0)("fuse-overlayfs really changes the mount", () => {
  it("mounts type fuse.fuse-overlayfs where the kernel mode mounts overlay", async () => {
    const directory = await mkdtemp(join(tmpdir(), "snapshotter-fuse-"));
    try {
      const types: string[] = [];
      for (const fuseOverlayfs of [false, true]) {
        const root = join(directory, `root-${fuseOverlayfs}`);
        const snapshotter = await createSnapshotter({ root, mountMode: "none", fuseOverlayfs });
        await snapshotter.prepare("a", "");
        await snapshotter.commit("base", "a");
        const mounts = await snapshotter.prepare("b", "base");
        const target = join(directory, `mnt-${fuseOverlayfs}`);
        await mkdir(target);
        await mountAll(mounts, target);
        try {
          const table = await readFile("/proc/self/mounts", "utf8");
          const line = table.split("\n").find((entry) => entry.split(" ")[1] === target);
          types.push(line?.split(" ")[2] ?? "missing");
        } finally {
          await unmountAll(target);
          await snapshotter.close();
        }
      }
      expect(types).toEqual(["overlay", "fuse.fuse-overlayfs"]);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
