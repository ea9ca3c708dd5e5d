// Trial: which xattrs of a layer does containerd's applier write? A file with trusted.overlay.*
// in a lower layer would redirect into any store path under the erofs mode's data-only layer.
// node bench/trials/trusted-xattr-probe.mjs 1.6 2.1   (root; after pnpm build)
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startContainerd } from "@nix-snapshotter/containerd-client/testing";

const here = dirname(fileURLToPath(import.meta.url));
const work = mkdtempSync(join(tmpdir(), "xattr-probe-"));
const archive = join(work, "probe.tar");
execFileSync("python3", [join(here, "trusted-xattr-layer.py"), archive, "/some-store-path/file"]);
try {
  for (const version of process.argv.slice(2)) {
    const containerd = await startContainerd({ version });
    try {
      await containerd.ctr(["images", "import", "--snapshotter", "overlayfs", archive]);
      const snapshots = join(containerd.root, "io.containerd.snapshotter.v1.overlayfs/snapshots");
      const found = execFileSync("find", [snapshots, "-name", "steal"]).toString().trim();
      const names = execFileSync("python3", [
        "-c",
        "import os,sys; print(sorted(os.listxattr(sys.argv[1], follow_symlinks=False)))",
        found,
      ]).toString();
      console.log(`${containerd.versionLine.trim()}: ${found}: ${names.trim()}`);
    } finally {
      await containerd.stop();
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
