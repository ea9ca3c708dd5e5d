import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@nix-snapshotter/nix-store";

/**
 * Content-addressed storage of built images on the file system (`STORAGE_PATH`):
 *
 *     blobs/sha256/<hex>     every manifest, index, config and layer, by digest
 *     images/<key>.json      one record per cache entry: its digests and GC roots directory
 *     tmp/                   files being written (renamed into place, removed at start)
 *
 * and one GC roots directory per entry under `gcRootsDir/<key>`. Order of writes: roots, blobs,
 * then the record (the commit point); eviction removes the record first, then the roots and the
 * blobs no other record names. A kill at any instant leaves either a complete entry or leftovers
 * that {@link ImageStore.open} removes.
 */

export interface ImageRecord {
  key: string;
  revision: string;
  /** Package names after `shell` expansion. */
  packages: string[];
  /** Platform of `manifest` (the one served to clients that take no index). */
  platform: string;
  /** Platforms the index lists (older records: `platform` alone). */
  platforms?: string[];
  /** Digest of the OCI image index served for the tag. */
  index: string;
  /** Digest of the platform's image manifest. */
  manifest: string;
  /** Every blob of the entry (index, manifest, config, layers). */
  blobs: string[];
  /** Store paths in the image's closure. */
  storePaths: number;
  /** Store paths exported to the binary cache for this entry (with a binary cache only). */
  exported?: string[];
  createdAt: string;
}

export interface ImageStoreOptions {
  storagePath: string;
  gcRootsDir: string;
  /** Most entries kept; the least recently used are evicted beyond it. */
  maxImages: number;
  logger: Logger;
  /** The binary cache directory whose narinfos and NARs are collected with the entries. */
  binaryCacheDir?: string;
}

export interface BlobLocation {
  path: string;
  size: number;
}

const digestPattern = /^sha256:([a-f0-9]{64})$/;
const keyPattern = /^[a-f0-9]{64}$/;

export function isDigest(text: string): boolean {
  return digestPattern.test(text);
}

export interface ImageStore {
  open(): Promise<void>;
  /** The entry of `key`, marked as used now; undefined when not cached. */
  get(key: string): ImageRecord | undefined;
  /** A fresh roots directory for a build of `key` (not yet an entry). */
  newRootsDir(key: string): Promise<string>;
  /** Makes a built image an entry: writes blobs, adopts the roots directory, writes the record. */
  commit(
    record: Omit<ImageRecord, "blobs">,
    blobs: ReadonlyMap<string, Uint8Array>,
    rootsDir: string,
  ): Promise<ImageRecord>;
  /** Removes a roots directory of a failed build. */
  discardRoots(rootsDir: string): Promise<void>;
  blob(digest: string): Promise<BlobLocation | undefined>;
  readBlob(digest: string, maxBytes: number): Promise<Uint8Array | undefined>;
  size(): number;
  /**
   * Keeps these store paths' narinfos while an export for a new entry runs (waiting for an
   * orphan collection to finish first); returns unpin.
   */
  pin(paths: readonly string[]): Promise<() => void>;
  /**
   * Removes what exports killed before their narinfo left in the binary cache: NARs no narinfo
   * names and Nix's temporary upload files. Runs only while no export does (none is pinned), and
   * exports wait for it. Called at open and after each export.
   */
  collectOrphans(): Promise<void>;
}

export function createImageStore(options: ImageStoreOptions): ImageStore {
  const blobsDir = join(options.storagePath, "blobs", "sha256");
  const imagesDir = join(options.storagePath, "images");
  const tmpDir = join(options.storagePath, "tmp");
  const records = new Map<string, ImageRecord>();
  /** key -> last use (ms); Map order is not relied on. */
  const lastUsed = new Map<string, number>();
  let useCounter = 0;
  let lock: Promise<unknown> = Promise.resolve();

  const serial = <T>(work: () => Promise<T>): Promise<T> => {
    const next = lock.then(work, work);
    lock = next.catch(() => undefined);
    return next;
  };

  const blobPath = (digest: string) => {
    const match = digestPattern.exec(digest);
    if (!match) throw new Error(`not a sha256 digest: ${JSON.stringify(digest)}`);
    return join(blobsDir, match[1]!);
  };

  /** temp file + fsync + rename: readers see the whole file or none. */
  const writeAtomic = async (path: string, data: Uint8Array) => {
    const temp = join(tmpDir, `${randomBytes(8).toString("hex")}.tmp`);
    const handle = await open(temp, "wx", 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  };

  const touch = (key: string) => lastUsed.set(key, ++useCounter);

  const removeEntry = async (key: string) => {
    records.delete(key);
    lastUsed.delete(key);
    await rm(join(imagesDir, `${key}.json`), { force: true });
    await rm(join(options.gcRootsDir, key), { recursive: true, force: true });
  };

  const pinned = new Map<string, number>();
  const hashOf = (storePath: string) => storePath.split("/").at(-1)!.slice(0, 32);

  /**
   * Removes the narinfos of store paths no entry exports (and no running export pins), then
   * the NARs only those narinfos named. NARs named by no narinfo at all (an export killed
   * before writing its narinfo) are left: they may belong to an export running now.
   */
  const collectBinaryCache = async () => {
    const dir = options.binaryCacheDir;
    if (dir === undefined) return;
    const live = new Set<string>();
    for (const record of records.values()) {
      for (const path of record.exported ?? []) live.add(hashOf(path));
    }
    for (const path of pinned.keys()) live.add(hashOf(path));
    const narOf = async (file: string) => {
      const text = await readFile(join(dir, file), "utf8").catch(() => "");
      return /^URL: (nar\/[0-9a-z]{52}\.nar(?:\.[a-z0-9]+)?)$/m.exec(text)?.[1];
    };
    const liveNars = new Set<string>();
    const dead: { file: string; nar: string | undefined }[] = [];
    for (const file of await readdir(dir).catch(() => [] as string[])) {
      if (!file.endsWith(".narinfo")) continue;
      const nar = await narOf(file);
      if (live.has(file.slice(0, -".narinfo".length))) {
        if (nar !== undefined) liveNars.add(nar);
      } else dead.push({ file, nar });
    }
    for (const { file, nar } of dead) {
      await rm(join(dir, file), { force: true });
      if (nar !== undefined && !liveNars.has(nar)) await rm(join(dir, nar), { force: true });
    }
  };

  let orphanCollection: Promise<void> | undefined;
  /** Nix's file:// binary cache writes `<file>.tmp.<pid>.<n>` and renames it into place. */
  const isUploadTemp = (file: string) => /\.tmp\.\d+\.\d+$/.test(file) || file.endsWith(".tmp");

  const collectOrphans = async () => {
    const dir = options.binaryCacheDir;
    if (dir === undefined || pinned.size > 0 || orphanCollection !== undefined) return;
    const run = async () => {
      const named = new Set<string>();
      const narOf = async (file: string) => {
        const text = await readFile(join(dir, file), "utf8").catch(() => "");
        return /^URL: nar\/([0-9a-z]{52}\.nar(?:\.[a-z0-9]+)?)$/m.exec(text)?.[1];
      };
      let removed = 0;
      for (const file of await readdir(dir).catch(() => [] as string[])) {
        if (file.endsWith(".narinfo")) {
          const nar = await narOf(file);
          if (nar !== undefined) named.add(nar);
        } else if (isUploadTemp(file)) {
          await rm(join(dir, file), { force: true });
          removed++;
        }
      }
      for (const file of await readdir(join(dir, "nar")).catch(() => [] as string[])) {
        if (named.has(file)) continue;
        await rm(join(dir, "nar", file), { force: true });
        removed++;
      }
      if (removed > 0) {
        options.logger.info(
          { files: removed },
          "removed binary cache files of an interrupted export (NARs without narinfo, temporary files)",
        );
      }
    };
    orphanCollection = run().finally(() => {
      orphanCollection = undefined;
    });
    await orphanCollection;
  };

  const collectBlobs = async () => {
    const live = new Set<string>();
    for (const record of records.values()) {
      for (const digest of record.blobs) live.add(blobPath(digest));
    }
    for (const name of await readdir(blobsDir)) {
      const path = join(blobsDir, name);
      if (!live.has(path)) await unlink(path).catch(() => undefined);
    }
  };

  const evict = async () => {
    const excess = records.size - options.maxImages;
    if (excess <= 0) return;
    const oldest = [...records.keys()]
      .sort((a, b) => (lastUsed.get(a) ?? 0) - (lastUsed.get(b) ?? 0))
      .slice(0, excess);
    for (const key of oldest) {
      options.logger.info({ key, packages: records.get(key)?.packages }, "evicting image");
      await removeEntry(key);
    }
    await collectBlobs();
    await collectBinaryCache();
  };

  return {
    async open() {
      await mkdir(blobsDir, { recursive: true });
      await mkdir(imagesDir, { recursive: true });
      await mkdir(options.gcRootsDir, { recursive: true });
      await rm(tmpDir, { recursive: true, force: true });
      await mkdir(tmpDir, { recursive: true });
      const files = await readdir(imagesDir);
      const loaded: { record: ImageRecord; mtime: number }[] = [];
      for (const file of files) {
        const path = join(imagesDir, file);
        const key = file.endsWith(".json") ? file.slice(0, -5) : "";
        let record: ImageRecord | undefined;
        try {
          const parsed = JSON.parse(await readFile(path, "utf8")) as ImageRecord;
          const complete =
            keyPattern.test(key) &&
            parsed.key === key &&
            Array.isArray(parsed.blobs) &&
            parsed.blobs.every((digest) => digestPattern.test(digest));
          if (complete) {
            await stat(join(options.gcRootsDir, key));
            for (const digest of parsed.blobs) await stat(blobPath(digest));
            record = parsed;
          }
        } catch {
          record = undefined;
        }
        if (record === undefined) {
          options.logger.warn({ file: path }, "removing an incomplete image record");
          await rm(path, { force: true });
          continue;
        }
        loaded.push({ record, mtime: (await stat(path)).mtimeMs });
      }
      loaded.sort((a, b) => a.mtime - b.mtime);
      for (const { record } of loaded) {
        records.set(record.key, record);
        touch(record.key);
      }
      // Roots of builds that never became an entry (killed mid-build) and of removed records.
      for (const name of await readdir(options.gcRootsDir)) {
        if (!records.has(name)) {
          options.logger.info({ rootsDir: name }, "removing GC roots of no image");
          await rm(join(options.gcRootsDir, name), { recursive: true, force: true });
        }
      }
      await collectBlobs();
      await collectBinaryCache();
      await collectOrphans();
      await evict();
    },

    get(key) {
      const record = records.get(key);
      if (record !== undefined) touch(key);
      return record;
    },

    async newRootsDir(key) {
      const dir = join(options.gcRootsDir, `.building-${key}-${randomBytes(4).toString("hex")}`);
      await mkdir(dir, { recursive: true });
      return dir;
    },

    async discardRoots(rootsDir) {
      await rm(rootsDir, { recursive: true, force: true });
    },

    commit(partial, blobs, rootsDir) {
      return serial(async () => {
        const record: ImageRecord = { ...partial, blobs: [...blobs.keys()].sort() };
        for (const [digest, data] of blobs) {
          const path = blobPath(digest);
          const exists = await stat(path).then(
            () => true,
            () => false,
          );
          if (!exists) await writeAtomic(path, data);
        }
        const finalRoots = join(options.gcRootsDir, record.key);
        await rm(finalRoots, { recursive: true, force: true });
        await rename(rootsDir, finalRoots);
        await writeAtomic(
          join(imagesDir, `${record.key}.json`),
          Buffer.from(`${JSON.stringify(record, null, 2)}\n`),
        );
        records.set(record.key, record);
        touch(record.key);
        await evict();
        return record;
      });
    },

    async blob(digest) {
      if (!digestPattern.test(digest)) return undefined;
      try {
        const path = blobPath(digest);
        const info = await stat(path);
        return info.isFile() ? { path, size: info.size } : undefined;
      } catch {
        return undefined;
      }
    },

    async readBlob(digest, maxBytes) {
      const location = await this.blob(digest);
      if (location === undefined || location.size > maxBytes) return undefined;
      return readFile(location.path).catch(() => undefined);
    },

    size: () => records.size,

    collectOrphans,

    async pin(paths) {
      while (orphanCollection !== undefined) await orphanCollection;
      const added = [...paths];
      for (const path of added) pinned.set(path, (pinned.get(path) ?? 0) + 1);
      return () => {
        for (const path of added) {
          const count = (pinned.get(path) ?? 1) - 1;
          if (count <= 0) pinned.delete(path);
          else pinned.set(path, count);
        }
      };
    },
  };
}
