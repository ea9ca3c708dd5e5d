import { mkdtemp, readdir, readlink, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isNixStoreError } from "./errors.js";
import { createGcRoots, defaultGcRootsDir, validateRootOwner } from "./gc-roots.js";
import { parseStorePath } from "./store-path.js";

const a = parseStorePath(`/nix/store/${"a".repeat(32)}-a`);
const b = parseStorePath(`/nix/store/${"b".repeat(32)}-b`);
const c = parseStorePath(`/nix/store/${"c".repeat(32)}-c`);

describe("GC roots directory", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "gc-roots-test-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("creates one direct symlink per path, lists and removes them", async () => {
    const roots = createGcRoots(join(dir, "roots"));
    const set = await roots.add("snapshot-1", [a, b]);
    expect(set.created).toBe(true);
    expect(set.links).toEqual([
      join(dir, "roots", "snapshot-1", a.baseName),
      join(dir, "roots", "snapshot-1", b.baseName),
    ]);
    expect(await readlink(set.links[0]!)).toBe(a.path);
    expect(await roots.list("snapshot-1")).toEqual([a.path, b.path]);
    expect(await roots.owners()).toEqual(["snapshot-1"]);

    const more = await roots.add("snapshot-1", [b, c]);
    expect(more.created).toBe(false);
    expect(await roots.list("snapshot-1")).toEqual([a.path, b.path, c.path]);

    expect(await roots.remove("snapshot-1")).toBe(true);
    expect(await roots.remove("snapshot-1")).toBe(false);
    expect(await roots.owners()).toEqual([]);
    // No staging or removal leftovers.
    expect(await readdir(join(dir, "roots"))).toEqual([]);
  });

  it("keeps owners apart and survives concurrent adds to one owner", async () => {
    const roots = createGcRoots(dir);
    await Promise.all([
      roots.add("one", [a]),
      roots.add("one", [b]),
      roots.add("one", [c]),
      roots.add("two", [a]),
    ]);
    expect(await roots.list("one")).toEqual([a.path, b.path, c.path]);
    expect(await roots.list("two")).toEqual([a.path]);
    expect(await roots.owners()).toEqual(["one", "two"]);
    expect((await readdir(dir)).sort()).toEqual(["one", "two"]);
  });

  it("replaces a link that points elsewhere", async () => {
    const roots = createGcRoots(dir);
    await roots.add("one", [a]);
    await rm(join(dir, "one", b.baseName), { force: true });
    await symlink("/etc", join(dir, "one", b.baseName));
    await roots.add("one", [b]);
    expect(await readlink(join(dir, "one", b.baseName))).toBe(b.path);
  });

  it.each(["", ".", "..", ".hidden", "-flag", "a/b", "../escape", "a\0b", "x".repeat(256)])(
    "rejects owner %j without touching the disk",
    async (owner) => {
      const roots = createGcRoots(join(dir, "never"));
      await expect(roots.add(owner, [a])).rejects.toSatisfy((error) =>
        isNixStoreError(error, "InvalidArgument"),
      );
      await expect(roots.remove(owner)).rejects.toThrow(/GC root owner/);
      expect(await readdir(dir)).toEqual([]);
    },
  );

  it("accepts snapshot ids and containerd-like keys without slashes", () => {
    for (const owner of ["1", "42", "k8s.io-57-sha256:abc", "default_1", "a=b@c+d"]) {
      expect(validateRootOwner(owner)).toBe(owner);
    }
  });

  it("defaults to Nix's gcroots for root and the per-user directory otherwise", () => {
    expect(defaultGcRootsDir("/nix/var/nix", 0)).toBe("/nix/var/nix/gcroots/nix-snapshotter");
    expect(defaultGcRootsDir("/nix/var/nix", 1000)).toMatch(
      /^\/nix\/var\/nix\/gcroots\/per-user\/[^/]+\/nix-snapshotter$/,
    );
  });
});

describe("GC root leftovers of interrupted adds and removals", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "gc-roots-leftovers-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("lists staged and removing directories with their owner, and removes them by name", async () => {
    const roots = createGcRoots(dir);
    await roots.add("snapshot-1", [a]);
    // What a kill between the steps of add and remove leaves behind.
    const { mkdir } = await import("node:fs/promises");
    await mkdir(join(dir, ".new-snapshot-2-0123456789ab"));
    await symlink(b.path, join(dir, ".new-snapshot-2-0123456789ab", b.baseName));
    await mkdir(join(dir, ".removing-snap-shot-3-abcdefabcdef"));
    await symlink(c.path, join(dir, ".removing-snap-shot-3-abcdefabcdef", c.baseName));
    // Not ours: other hidden names, plain files.
    await mkdir(join(dir, ".new-x-short"));
    await symlink(a.path, join(dir, ".external-aaaa"));

    expect(await roots.owners()).toEqual(["snapshot-1"]);
    expect(await roots.leftovers()).toEqual([
      { name: ".new-snapshot-2-0123456789ab", owner: "snapshot-2", state: "staged" },
      { name: ".removing-snap-shot-3-abcdefabcdef", owner: "snap-shot-3", state: "removing" },
    ]);
    expect(await roots.removeLeftover(".new-snapshot-2-0123456789ab")).toBe(true);
    expect(await roots.removeLeftover(".new-snapshot-2-0123456789ab")).toBe(false);
    expect(await roots.removeLeftover(".removing-snap-shot-3-abcdefabcdef")).toBe(true);
    expect(await roots.leftovers()).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual([".external-aaaa", ".new-x-short", "snapshot-1"]);
  });

  it("refuses to remove anything that is not a leftover name", async () => {
    const roots = createGcRoots(dir);
    await roots.add("snapshot-1", [a]);
    for (const name of [
      "snapshot-1",
      "../x",
      ".new-../../etc-0123456789ab",
      ".new--0123456789ab",
    ]) {
      const error = await roots.removeLeftover(name).catch((caught: unknown) => caught);
      expect(isNixStoreError(error) && error.code).toBe("InvalidArgument");
    }
    expect(await roots.list("snapshot-1")).toEqual([a.path]);
  });
});
