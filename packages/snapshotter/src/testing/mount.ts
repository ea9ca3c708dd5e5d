import { execFile } from "node:child_process";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { promisify } from "node:util";
import type { Mount } from "../types.js";

const run = promisify(execFile);

/** The kernel's limit on the mount data string (one page). */
const pageSize = 4096;

/**
 * When the option string would not fit in a page, rewrite `lowerdir=` relative to the longest
 * common directory of the lower dirs and mount from there, as containerd's mount code does
 * (it changes directory into the common parent before calling mount(2)).
 */
export function compactOverlayOptions(options: readonly string[]): {
  options: string[];
  cwd?: string;
} {
  const joined = options.join(",");
  const lower = options.find((option) => option.startsWith("lowerdir="));
  if (joined.length < pageSize - 1 || lower === undefined) return { options: [...options] };
  const dirs = lower.slice("lowerdir=".length).split(":");
  let common = dirname(dirs[0]!);
  while (!dirs.every((dir) => dir.startsWith(`${common}/`)) && common !== "/") {
    common = dirname(common);
  }
  const rewritten = `lowerdir=${dirs.map((dir) => relative(common, dir)).join(":")}`;
  return {
    options: options.map((option) => (option === lower ? rewritten : option)),
    cwd: common,
  };
}

async function ensureMountpoint(path: string, source: string): Promise<void> {
  const sourceStats = await stat(source).catch(() => undefined);
  if (sourceStats !== undefined && !sourceStats.isDirectory()) {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, "", { flag: "a" });
    return;
  }
  await mkdir(path, { recursive: true });
}

/**
 * mount(8)'s environment. util-linux >= 2.39 mounts through the new mount API, handing each option
 * to fsconfig(2), which takes at most 256 bytes per string value: an overlay whose `lowerdir=`
 * is longer (five absolute snapshot paths under /tmp already are) fails with "wrong fs type, bad
 * option" on Debian 13 (util-linux 2.41). containerd calls mount(2), whose limit is the page the
 * whole option string must fit in (see {@link compactOverlayOptions}); LIBMOUNT_FORCE_MOUNT2
 * makes mount(8) do the same. Older util-linux (Debian 12's 2.38) uses mount(2) anyway and
 * ignores the variable.
 */
const mountEnv = { ...process.env, LIBMOUNT_FORCE_MOUNT2: "always" };

/**
 * Mounts what a snapshotter returned onto `target` with mount(8), as containerd would: the
 * first mount is the root filesystem, later ones with a `target` go below it.
 * `fuse3.<type>` mounts go through the `mount.fuse3` helper, as containerd's do. Needs root.
 */
export async function mountAll(mounts: readonly Mount[], target: string): Promise<void> {
  for (const mount of mounts) {
    const destination = mount.target === undefined ? target : join(target, mount.target);
    if (mount.target !== undefined) await ensureMountpoint(destination, mount.source);
    if (mount.type === "bind") {
      await run("mount", ["-o", mount.options.join(","), mount.source, destination], {
        env: mountEnv,
      });
    } else if (mount.type.startsWith("fuse3.") || mount.type.startsWith("fuse.")) {
      // As containerd does: the mount.fuse3 helper, one -o per option, the type after the prefix.
      const [prefix, ...rest] = mount.type.split(".");
      const helper = prefix === "fuse3" ? "mount.fuse3" : "mount.fuse";
      const args = [mount.source, destination];
      for (const option of mount.options) args.push("-o", option);
      args.push("-t", rest.join("."));
      await run(helper, args);
    } else {
      const { options, cwd } = compactOverlayOptions(mount.options);
      await run(
        "mount",
        ["-t", mount.type, "-o", options.join(","), mount.source, destination],
        cwd ? { cwd, env: mountEnv } : { env: mountEnv },
      );
    }
  }
}

/** Unmounts `target` and everything below it. */
export async function unmountAll(target: string): Promise<void> {
  await run("umount", ["-R", target]);
}
