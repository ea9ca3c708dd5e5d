import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EmptyDirectoryRemover, OverlayFilesystem } from "./overlay-filesystem.js";
import { Kind } from "./types.js";

let directory: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "overlay-filesystem-"));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

const settings = { fuseOverlayfs: false, indexOff: false, userxattr: false };

describe("EmptyDirectoryRemover", () => {
  it("removes the paths in order, skipping absent ones but the last, in one call", async () => {
    const remover = new EmptyDirectoryRemover();
    try {
      const top = join(directory, "a");
      await mkdir(join(top, "fs"), { recursive: true });
      expect(await remover.remove([join(top, "fs"), join(top, "work"), top])).toBe(true);
      expect(existsSync(top)).toBe(false);
      // The last path absent: false.
      expect(await remover.remove([join(top, "fs"), top])).toBe(false);
    } finally {
      remover.close();
    }
  });

  it("stops at a directory that is not empty and leaves the rest", async () => {
    const remover = new EmptyDirectoryRemover();
    try {
      const top = join(directory, "b");
      await mkdir(join(top, "fs"), { recursive: true });
      await mkdir(join(top, "work"));
      await writeFile(join(top, "fs", "file"), "x");
      expect(await remover.remove([join(top, "fs"), join(top, "work"), top])).toBe(false);
      expect(existsSync(join(top, "fs", "file"))).toBe(true);
      expect(existsSync(join(top, "work"))).toBe(true);
    } finally {
      remover.close();
    }
  });

  it("answers calls sent before close, and false after", async () => {
    const remover = new EmptyDirectoryRemover();
    const first = join(directory, "c");
    const second = join(directory, "d");
    await mkdir(first);
    await mkdir(second);
    const sent = remover.remove([first]);
    remover.close();
    expect(await sent).toBe(true);
    expect(await remover.remove([second])).toBe(false);
    expect(existsSync(second)).toBe(true);
  });
});

describe("OverlayFilesystem.removeDirectory", () => {
  for (const alone of [true, false]) {
    it(`removes active and view directories, empty or not (alone: ${alone})`, async () => {
      const filesystem = new OverlayFilesystem(directory, settings);
      try {
        await mkdir(filesystem.snapshotsDir);
        await filesystem.createDirectory(1, Kind.Active, undefined, alone);
        await filesystem.createDirectory(2, Kind.View, undefined, alone);
        await filesystem.createDirectory(3, Kind.Active, undefined, alone);
        await writeFile(join(filesystem.upperDir(3), "file"), "x");
        await mkdir(join(filesystem.workDir(3), "work"));
        await filesystem.removeDirectory(1, Kind.Committed, alone);
        await filesystem.removeDirectory(2, Kind.View, alone);
        await filesystem.removeDirectory(3, Kind.Active, alone);
        // Absent: nothing to do, no error.
        await filesystem.removeDirectory(4, Kind.Active, alone);
        for (const id of [1, 2, 3]) expect(existsSync(filesystem.snapshotDir(id))).toBe(false);
      } finally {
        filesystem.close();
      }
    });
  }

  it("still removes after close (the long way)", async () => {
    const filesystem = new OverlayFilesystem(directory, settings);
    await mkdir(filesystem.snapshotsDir);
    await filesystem.createDirectory(1, Kind.Active, undefined, false);
    filesystem.close();
    await filesystem.removeDirectory(1, Kind.Active, false);
    expect(existsSync(filesystem.snapshotDir(1))).toBe(false);
  });
});
