import { existsSync } from "node:fs";
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ensureMountpoints, linkStorePaths } from "./link-tree.js";

let directory: string;
let store: string;
let layer: string;

async function makePackage(path: string): Promise<void> {
  await mkdir(join(path, "bin"), { recursive: true });
  await mkdir(join(path, "share", "empty"), { recursive: true });
  await writeFile(join(path, "bin", "tool"), "tool", { mode: 0o555 });
  await symlink("tool", join(path, "bin", "alias"));
  await symlink("/etc/passwd", join(path, "bin", "absolute"));
}

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-link-"));
  store = join(directory, "store");
  layer = join(directory, "layer");
  await mkdir(store);
  await mkdir(layer);
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

describe("linkStorePaths", () => {
  it("hard-links files, recreates directories and symlinks without following them", async () => {
    const pkg = join(store, "aaaa-pkg");
    await makePackage(pkg);
    const stats = await linkStorePaths(layer, [pkg]);
    expect(stats).toMatchObject({ linked: 1, copied: 0, symlinks: 2 });
    const copy = join(layer, pkg);
    expect((await stat(join(copy, "bin", "tool"))).ino).toBe(
      (await stat(join(pkg, "bin", "tool"))).ino,
    );
    expect(await readlink(join(copy, "bin", "absolute"))).toBe("/etc/passwd");
    expect((await lstat(join(copy, "share", "empty"))).isDirectory()).toBe(true);
    expect((await stat(join(copy, "bin"))).mode & 0o777).toBe(
      (await stat(join(pkg, "bin"))).mode & 0o777,
    );
  });

  it("replaces hostile layer content: symlinked parents, files and links at the path", async () => {
    const outside = join(directory, "outside");
    await mkdir(outside);
    const pkg = join(store, "bbbb-pkg");
    await makePackage(pkg);
    const file = join(store, "cccc-file");
    await writeFile(file, "single");
    // The layer planted a symlink where the store directory should be.
    const storeParent = join(layer, directory);
    await mkdir(storeParent, { recursive: true });
    await symlink(outside, join(storeParent, "store"));
    await linkStorePaths(layer, [pkg, file]);
    expect(existsSync(join(outside, "bbbb-pkg"))).toBe(false);
    expect((await lstat(join(storeParent, "store"))).isDirectory()).toBe(true);
    expect(await readFile(join(layer, file), "utf8")).toBe("single");

    // A second pass over a layer whose store path is a symlink to outside.
    await rm(join(layer, pkg), { recursive: true });
    await symlink(outside, join(layer, pkg));
    await linkStorePaths(layer, [pkg]);
    expect((await lstat(join(layer, pkg))).isDirectory()).toBe(true);
    expect(existsSync(join(outside, "bin"))).toBe(false);
  });

  const shm = "/dev/shm";
  it.skipIf(!existsSync(shm))(
    "copies when the store is on another filesystem (EXDEV)",
    async () => {
      const other = await mkdtemp(join(shm, "snapshotter-link-"));
      try {
        const pkg = join(other, "dddd-pkg");
        await makePackage(pkg);
        const [storeStats, layerStats] = [await stat(other), await stat(layer)];
        if (storeStats.dev === layerStats.dev) return; // same filesystem here: nothing to show
        const stats = await linkStorePaths(layer, [pkg]);
        expect(stats).toMatchObject({ linked: 0, copied: 1 });
        const copy = join(layer, pkg, "bin", "tool");
        expect(await readFile(copy, "utf8")).toBe("tool");
        expect((await stat(copy)).mode & 0o777).toBe(0o555);
      } finally {
        await rm(other, { recursive: true, force: true });
      }
    },
  );
});

describe("ensureMountpoints", () => {
  it("creates a missing mountpoint of the store path's type, replaces planted entries, keeps good ones", async () => {
    const pkg = join(store, "aaaa-pkg");
    await makePackage(pkg);
    const config = join(store, "bbbb-config.json");
    await writeFile(config, "{}");
    const kept = join(store, "cccc-kept");
    await mkdir(kept);
    await mkdir(join(layer, kept), { recursive: true });
    await writeFile(join(layer, kept, "marker"), "x");
    // A hostile layer planted a symlink where the package's mountpoint belongs.
    await mkdir(join(layer, store), { recursive: true });
    await symlink("/etc", join(layer, pkg));

    const created = await ensureMountpoints(layer, [pkg, config, kept]);

    expect(created).toBe(2);
    expect((await lstat(join(layer, pkg))).isDirectory()).toBe(true);
    expect(await readdir(join(layer, pkg))).toEqual([]);
    const file = await lstat(join(layer, config));
    expect(file.isFile()).toBe(true);
    expect(file.size).toBe(0);
    expect(await readFile(join(layer, kept, "marker"), "utf8")).toBe("x");
    // Running again creates nothing.
    expect(await ensureMountpoints(layer, [pkg, config, kept])).toBe(0);
  });

  it("replaces a symlinked parent directory instead of writing through it", async () => {
    const pkg = join(store, "dddd-pkg");
    await mkdir(pkg);
    const outside = join(directory, "outside");
    await mkdir(outside);
    const [first] = store.split("/").filter((part) => part !== "");
    await symlink(outside, join(layer, first!));

    await ensureMountpoints(layer, [pkg]);

    expect((await lstat(join(layer, first!))).isDirectory()).toBe(true);
    expect(await readdir(outside)).toEqual([]);
    expect((await lstat(join(layer, pkg))).isDirectory()).toBe(true);
  });
});
