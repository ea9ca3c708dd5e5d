import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, stat, statfs, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { createSnapshotter, spaceReserveName } from "./snapshotter.js";
import { MetadataStore } from "./storage/metastore.js";
import type { Snapshotter } from "./types.js";

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

let directory: string;
let small: string;
let mounted = false;
let snapshotter: Snapshotter | undefined;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "snapshotter-full-disk-"));
  small = join(directory, "small");
  await mkdir(small);
  await run("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", small]);
  mounted = true;
});

afterEach(async () => {
  await snapshotter?.close();
  snapshotter = undefined;
  if (mounted) await run("umount", [small]);
  mounted = false;
  await rm(directory, { recursive: true, force: true });
});

async function freeBytes(path: string): Promise<number> {
  const stats = await statfs(path);
  return stats.bavail * stats.bsize;
}

/** Writes 64 KiB files into `upper` until the file system refuses; returns how many fitted. */
async function fill(upper: string): Promise<number> {
  const chunk = Buffer.alloc(64 * 1024, 1);
  for (let index = 0; index < 1000; index++) {
    try {
      await writeFile(join(upper, `fill-${index}`), chunk);
    } catch (error) {
      expect((error as NodeJS.ErrnoException).code).toBe("ENOSPC");
      return index;
    }
  }
  throw new Error("a 2 MiB file system took 64 MiB");
}

function upperOf(mounts: Awaited<ReturnType<Snapshotter["prepare"]>>): string {
  const option = mounts[0]!.options.find((value) => value.startsWith("upperdir="));
  return option!.slice("upperdir=".length);
}

describe.skipIf(!isRoot)("a full disk (2 MiB tmpfs root)", () => {
  it("fails mutations clearly, lets Remove free space and recovers by itself, cycle after cycle", async () => {
    const root = join(small, "root");
    const s = await createSnapshotter({ root, mountMode: "none" });
    snapshotter = s;
    expect((await stat(join(root, spaceReserveName))).size).toBe(256 * 1024);
    await s.prepare("base-key", "");
    await s.commit("base", "base-key");
    // A big label: every Prepare needs new database pages.
    const labels = { padding: "x".repeat(3000) };
    const freeAfter: number[] = [];
    const cycles = 15;
    for (let cycle = 0; cycle < cycles; cycle++) {
      // A container writes until the disk is full.
      const filler = `filler-${cycle}`;
      const fitted = await fill(upperOf(await s.prepare(filler, "base")));
      expect(fitted).toBeGreaterThan(0);

      // Mutations fail with ResourceExhausted naming the cause (some may still fit in pages
      // the database has; it runs out within a few).
      const refused: SnapshotterError[] = [];
      const accepted: string[] = [];
      for (let attempt = 0; attempt < 200 && refused.length === 0; attempt++) {
        const key = `x-${cycle}-${attempt}`;
        try {
          await s.prepare(key, "base", { labels });
          accepted.push(key);
        } catch (error) {
          if (!(error instanceof SnapshotterError)) throw error;
          refused.push(error);
        }
      }
      expect(refused).toHaveLength(1);
      const error = refused[0]!;
      expect(error.code, error.message).toBe(ErrorCode.ResourceExhausted);
      expect(error.message).toMatch(/no space left/i);
      expect(error.stack ?? "").toContain(error.message);
      // Reads still work.
      expect((await s.stat(filler)).name).toBe(filler);

      // Remove works on the full disk, and frees the space.
      await s.remove(filler);
      for (const key of accepted) await s.remove(key);

      // Without any other action, the next calls work again.
      await s.prepare(`ok-${cycle}`, "base", { labels });
      await s.commit(`ok-c-${cycle}`, `ok-${cycle}`);
      await s.remove(`ok-c-${cycle}`);
      await s.cleanup();
      expect((await stat(join(root, spaceReserveName))).size).toBe(256 * 1024);
      // The WAL stays bounded.
      const wal = await stat(join(root, "metadata.db-wal")).catch(() => undefined);
      expect(wal?.size ?? 0).toBeLessThanOrEqual(1024 * 1024);
      // The database's two files are bounded on their own: pages move between the WAL and the
      // main file at checkpoints (the group commit's run on another connection, at their own
      // pace), and the main file keeps freed pages for reuse. So they count as free here: what
      // must not grow from cycle to cycle is everything else.
      const database = (await stat(join(root, "metadata.db"))).size;
      expect(database).toBeLessThanOrEqual(1024 * 1024);
      freeAfter.push((await freeBytes(small)) + (wal?.size ?? 0) + database);
    }
    // No space lost from cycle to cycle (the issue saw the disk fill up for good after 11).
    expect(freeAfter.at(-1)!).toBeGreaterThanOrEqual(freeAfter[0]! - 128 * 1024);
    await s.close();
    snapshotter = undefined;
    const store = new MetadataStore(join(root, "metadata.db"));
    try {
      expect(store.check()).toEqual([]);
      expect(store.all().map((record) => record.key)).toEqual(["base"]);
    } finally {
      store.close();
    }
  });
});
