import { writeFileSync } from "node:fs";
import { link, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { diskUsage, syncUsageCalls } from "./disk-usage.js";

let directory: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "disk-usage-"));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** Blocks * 512 of each path, by lstat (the test's own account of what the walk must find). */
async function allocated(paths: readonly string[]): Promise<number> {
  let size = 0;
  for (const path of paths) size += Number((await lstat(path, { bigint: true })).blocks) * 512;
  return size;
}

describe("diskUsage", () => {
  it("counts the root, each inode once (hard links), symlinks as themselves, synchronously or not", async () => {
    const root = join(directory, "fs");
    await mkdir(join(root, "sub"), { recursive: true });
    await writeFile(join(root, "data"), Buffer.alloc(20_000, 1));
    await link(join(root, "data"), join(root, "sub", "data-link"));
    await symlink("/etc", join(root, "etc-link"));
    const distinct = [root, join(root, "sub"), join(root, "data"), join(root, "etc-link")];
    const expected = { size: await allocated(distinct), inodes: distinct.length };
    expect(expected.size).toBeGreaterThanOrEqual(20_000);
    expect(await diskUsage(root, true)).toEqual(expected);
    expect(await diskUsage(root, false)).toEqual(expected);
  });

  it("counts an empty root as one inode", async () => {
    const root = join(directory, "fs");
    await mkdir(root);
    const expected = { size: await allocated([root]), inodes: 1 };
    expect(await diskUsage(root, true)).toEqual(expected);
    expect(await diskUsage(root)).toEqual(expected);
  });

  it("walks a tree larger than the synchronous bound to the end, hard links across directories once", async () => {
    const root = join(directory, "fs");
    const paths = [root];
    for (let d = 0; d < 5; d++) {
      const sub = join(root, `d${d}`);
      await mkdir(sub, { recursive: true });
      paths.push(sub);
      for (let f = 0; f < syncUsageCalls; f++) {
        const file = join(sub, `f${f}`);
        await writeFile(file, Buffer.alloc(f * 100, 2));
        paths.push(file);
        // Each file also linked from the next directory: same inode, counted once.
        if (d > 0) await link(file, join(root, `d${d - 1}`, `l${f}`));
      }
    }
    const expected = { size: await allocated(paths), inodes: paths.length };
    expect(await diskUsage(root, true)).toEqual(expected);
    expect(await diskUsage(root, false)).toEqual(expected);
  });

  it("a small tree is walked before it returns; past the bound, the walk goes on afterwards", async () => {
    // A file made right after diskUsage returns its promise (synchronously, before any pool
    // work can come back) is seen only by a walk that was still going on.
    const small = join(directory, "small");
    await mkdir(join(small, "sub"), { recursive: true });
    await writeFile(join(small, "a"), "a");
    const smallWalk = diskUsage(small, true);
    writeFileSync(join(small, "sub", "late"), "late");
    expect((await smallWalk).inodes).toBe(3);
    // Without `sync`, the same tree is walked through the pool: the late file is seen.
    const asyncWalk = diskUsage(small, false);
    writeFileSync(join(small, "sub", "later"), "later");
    expect((await asyncWalk).inodes).toBe(5);

    // More entries than the bound in the root: the rest of the walk is asynchronous.
    const large = join(directory, "large");
    await mkdir(join(large, "sub"), { recursive: true });
    for (let f = 0; f < syncUsageCalls; f++) await writeFile(join(large, `f${f}`), "x");
    const largeWalk = diskUsage(large, true);
    writeFileSync(join(large, "sub", "late"), "late");
    expect((await largeWalk).inodes).toBe(syncUsageCalls + 3);
  });

  it("rejects for a missing root, synchronously or not", async () => {
    await expect(diskUsage(join(directory, "absent"), true)).rejects.toMatchObject({
      code: "ENOENT",
    });
    await expect(diskUsage(join(directory, "absent"))).rejects.toMatchObject({ code: "ENOENT" });
  });
});
