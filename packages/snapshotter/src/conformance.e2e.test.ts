import { createSnapshotter } from "./snapshotter.js";
import { runConformanceSuite } from "./testing/conformance.js";

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
