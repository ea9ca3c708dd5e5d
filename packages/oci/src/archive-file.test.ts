import { execFile } from "node:child_process";
import { mkdtemp, open, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadArchiveImage } from "./archive.js";
import { loadArchiveFile, openRegularFile, readArchiveFile } from "./archive-file.js";
import { defaultArchiveLimits } from "./archive-limits.js";
import { compress } from "./compression.js";
import { sha256Digest } from "./digest.js";
import { OciError } from "./errors.js";
import { writeTar } from "./tar.js";
import { tarFileHeader, writeGzipBomb } from "./testing/archive-bombs.js";
import { testImageArchive } from "./testing/image-archive.js";

const execFileAsync = promisify(execFile);
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
/** The honest name of a blob of 16 MiB of zeros (what a bomb with valid names repeats). */
const zerosBlob = `blobs/sha256/${sha256Digest(Buffer.alloc(16 * MiB)).slice("sha256:".length)}`;

async function failure(promise: Promise<unknown>): Promise<OciError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(OciError);
  return error as OciError;
}

describe("archive files: only bounded regular files are read", () => {
  let work: string;
  let archive: Buffer;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), "oci-archive-file-"));
    archive = testImageArchive({
      layers: [[{ name: "hello", type: "file", data: Buffer.from("hi\n") }]],
      names: ["docker.io/library/hello:1"],
    }).archive;
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("loads plain, gzip and zstd archives as the in-memory reader does", async () => {
    const expected = loadArchiveImage(archive);
    for (const [name, data] of [
      ["plain.tar", archive],
      ["gzip.tar.gz", compress(archive, "gzip")],
      ["zstd.tar.zst", compress(archive, "zstd")],
    ] as const) {
      const path = join(work, name);
      await writeFile(path, data);
      const image = await loadArchiveFile(path);
      expect(image.manifestDescriptor).toEqual(expected.manifestDescriptor);
      expect(image.names).toEqual(["docker.io/library/hello:1"]);
      expect(image.layers.map((layer) => layer.data)).toEqual(
        expected.layers.map((layer) => layer.data),
      );
    }
  });

  it("loads a docker archive, its layer digests computed while streaming", async () => {
    const layer = writeTar([{ name: "a", type: "file", data: Buffer.from("a") }]);
    const config = Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "layers", diff_ids: [sha256Digest(layer)] },
      }),
    );
    const path = join(work, "docker.tar");
    await writeFile(
      path,
      writeTar([
        { name: "layer.tar", type: "file", data: layer },
        { name: "config.json", type: "file", data: config },
        {
          name: "manifest.json",
          type: "file",
          data: Buffer.from(
            JSON.stringify([{ Config: "config.json", RepoTags: ["a:1"], Layers: ["layer.tar"] }]),
          ),
        },
      ]),
    );
    const image = await loadArchiveFile(path);
    expect(image.format).toBe("docker");
    expect(image.layers[0]!.descriptor.digest).toBe(sha256Digest(layer));
    expect(image.manifest.config.digest).toBe(sha256Digest(config));
  });

  it("refuses symbolic links (to /dev/zero, or to a valid archive) before reading", async () => {
    const real = join(work, "real.tar");
    await writeFile(real, archive);
    for (const target of ["/dev/zero", real]) {
      const link = join(work, `link-${target.replaceAll("/", "_")}`);
      await symlink(target, link);
      const error = await failure(loadArchiveFile(link));
      expect(error.code).toBe("FailedPrecondition");
      expect(error.message).toContain("symbolic link");
    }
  });

  it("refuses devices, FIFOs, sockets' kin and directories without blocking", async () => {
    const fifo = join(work, "fifo");
    await execFileAsync("mkfifo", [fifo]);
    for (const [path, kind] of [
      ["/dev/zero", "character device"],
      [fifo, "FIFO"],
      [work, "directory"],
    ] as const) {
      const error = await failure(readArchiveFile(path));
      expect(error.code, path).toBe("FailedPrecondition");
      expect(error.message, path).toContain(kind);
    }
    expect((await failure(readArchiveFile(join(work, "missing")))).code).toBe("NotFound");
  });

  it("refuses a 512 MiB plain tar from its size, before reading it", async () => {
    const path = join(work, "big.tar");
    const handle = await open(path, "w");
    await handle.truncate(512 * MiB); // sparse: nothing to read but zeros, nothing on disk
    await handle.close();
    const error = await failure(readArchiveFile(path));
    expect(error.code).toBe("InvalidArgument");
    expect(error.message).toContain("maxArchiveBytes (256 MiB)");
    expect(error.message).toContain("512 MiB");
    // openRegularFile alone: the same refusal, and the check is on the opened descriptor.
    await expect(openRegularFile(path, 256 * MiB)).rejects.toThrow(/maxArchiveBytes/);
  });

  it("refuses a 10 GiB gzip bomb from the entry header, without inflating it", async () => {
    const path = join(work, "bomb-entry.tar.gz");
    const inflated = await writeGzipBomb(path, {
      entries: [{ name: `blobs/sha256/${"0".repeat(64)}`, size: 10 * GiB }],
    });
    expect(inflated).toBeGreaterThan(10 * GiB);
    const before = process.memoryUsage().rss;
    const error = await failure(readArchiveFile(path));
    expect(error.code).toBe("InvalidArgument");
    expect(error.message).toContain("maxEntryBytes (256 MiB)");
    expect(error.message).toContain("10 GiB");
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * MiB);
  });

  it("refuses entries adding up past the decompressed bound as their headers arrive", async () => {
    const path = join(work, "bomb-entries.tar.gz");
    await writeGzipBomb(path, {
      entries: Array.from({ length: 4 }, () => ({ name: zerosBlob, size: 16 * MiB })),
    });
    const error = await failure(
      readArchiveFile(path, { limits: { maxUncompressedBytes: 40 * MiB } }),
    );
    expect(error.code).toBe("InvalidArgument");
    expect(error.message).toContain("maxUncompressedBytes (40 MiB)");
  });

  it("yields to the event loop while inflating (zlib's thread pool, not a sync call)", async () => {
    const path = join(work, "bomb-yield.tar.gz");
    await writeGzipBomb(path, {
      entries: Array.from({ length: 8 }, () => ({ name: zerosBlob, size: 16 * MiB })),
    });
    let turns = 0;
    let reading = true;
    const spin = () => {
      turns++;
      if (reading) setImmediate(spin);
    };
    setImmediate(spin);
    const error = await failure(
      readArchiveFile(path, { limits: { maxUncompressedBytes: 100 * MiB } }),
    ).finally(() => {
      reading = false;
    });
    expect(error.message).toContain("maxUncompressedBytes (100 MiB)");
    // 96 MiB inflated in 256 KiB chunks: the loop turned between chunks (a synchronous
    // gunzip of the same stream lets it turn once).
    expect(turns).toBeGreaterThan(100);
  });

  it("stops at the end-of-archive marker: a stream of zeros is refused at once", async () => {
    const path = join(work, "zeros.gz");
    await writeGzipBomb(path, { zeros: 10 * GiB });
    const error = await failure(readArchiveFile(path));
    expect(error.code).toBe("InvalidArgument");
    expect(error.message).toContain("neither an OCI layout");
  });

  it("bounds JSON documents, header records and the number of entries", async () => {
    const bigIndex = join(work, "big-index.tar");
    await writeFile(
      bigIndex,
      writeTar([{ name: "index.json", type: "file", data: Buffer.alloc(5 * MiB, 0x20) }]),
    );
    expect((await failure(readArchiveFile(bigIndex))).message).toContain(
      "maxMetadataBytes (4 MiB)",
    );
    const longName = join(work, "long-name.tar");
    await writeFile(longName, writeTar([{ name: "x".repeat(4096), type: "file" }]));
    expect(
      (await failure(readArchiveFile(longName, { limits: { maxMetadataBytes: 1024 } }))).message,
    ).toContain("maxMetadataBytes (1 KiB)");
    const many = join(work, "many.tar");
    await writeFile(
      many,
      writeTar(Array.from({ length: 10 }, (_, index) => ({ name: `f${index}`, type: "file" }))),
    );
    expect((await failure(readArchiveFile(many, { limits: { maxEntries: 5 } }))).message).toContain(
      "maxEntries (5)",
    );
    // A manifest blob over the bound is refused when the image is loaded.
    const small = join(work, "small-metadata.tar");
    await writeFile(small, archive);
    expect(
      (await failure(loadArchiveFile(small, { limits: { maxMetadataBytes: 64 } }))).message,
    ).toMatch(/maxMetadataBytes \(64 B\)/);
  });

  it("refuses truncated, corrupt and hostile archives with clear errors", async () => {
    const cases: [string, Buffer, string][] = [
      ["truncated.tar.gz", gzipSync(archive).subarray(0, 200), "cannot decompress gzip"],
      ["garbage.tar", Buffer.from("not an archive at all, not even close".repeat(20)), "tar"],
      [
        "cut-entry.tar",
        Buffer.concat([tarFileHeader("index.json", 4096), Buffer.alloc(100)]),
        "truncated",
      ],
      [
        "traversal.tar",
        writeTar([{ name: "a", type: "symlink", linkname: "../../etc/passwd" }]),
        "escapes the archive",
      ],
      [
        "device.tar",
        (() => {
          const tar = writeTar([{ name: "dev", type: "file" }]);
          tar[156] = "3".charCodeAt(0);
          tar.fill(0x20, 148, 156);
          let sum = 0;
          for (const byte of tar.subarray(0, 512)) sum += byte;
          tar.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
          return tar;
        })(),
        'unsupported type "3"',
      ],
    ];
    for (const [name, data, message] of cases) {
      const path = join(work, name);
      await writeFile(path, data);
      const error = await failure(loadArchiveFile(path));
      expect(error.message, name).toContain(message);
      expect(["InvalidArgument", "DataLoss"], name).toContain(error.code);
    }
  });

  it("checks each blob against its name as it is read, and keeps one copy of repeats", async () => {
    const zeros = sha256Digest(Buffer.alloc(16 * MiB)).slice("sha256:".length);
    const repeated = join(work, "bomb-repeated.tar.gz");
    await writeGzipBomb(repeated, {
      entries: Array.from({ length: 12 }, () => ({
        name: `blobs/sha256/${zeros}`,
        size: 16 * MiB,
      })),
    });
    const before = process.memoryUsage().rss;
    const error = await failure(
      readArchiveFile(repeated, { limits: { maxUncompressedBytes: 160 * MiB } }),
    );
    expect(error.message).toContain("maxUncompressedBytes (160 MiB)");
    // Nine copies of one 16 MiB blob were read: one was kept.
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * MiB);
    const misnamed = join(work, "bomb-misnamed.tar.gz");
    await writeGzipBomb(misnamed, {
      entries: Array.from({ length: 12 }, (_, index) => ({
        name: `blobs/sha256/${String(index % 10).repeat(64)}`,
        size: 16 * MiB,
      })),
    });
    const mismatch = await failure(readArchiveFile(misnamed));
    expect(mismatch.code).toBe("DataLoss");
    expect(mismatch.message).toContain(`content has digest sha256:${zeros}`);
  });

  it("keeps digests honest: a blob whose content does not match is DataLoss", async () => {
    const blob = Buffer.from("{}");
    const fake = `sha256:${"1".repeat(64)}` as const;
    const index = {
      schemaVersion: 2,
      manifests: [
        { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: fake, size: 2 },
      ],
    };
    const path = join(work, "mismatch.tar");
    await writeFile(
      path,
      writeTar([
        { name: "index.json", type: "file", data: Buffer.from(JSON.stringify(index)) },
        { name: `blobs/sha256/${"1".repeat(64)}`, type: "file", data: blob },
      ]),
    );
    const error = await failure(loadArchiveFile(path));
    expect(error.code).toBe("DataLoss");
    expect(error.message).toContain(sha256Digest(blob));
  });

  it("honours cancellation while inflating, and stops reading", async () => {
    const path = join(work, "slow.tar.gz");
    await writeGzipBomb(path, {
      entries: [{ name: `blobs/sha256/${"2".repeat(64)}`, size: 1 * GiB }],
    });
    const controller = new AbortController();
    const reading = readArchiveFile(path, {
      signal: controller.signal,
      limits: {
        maxEntryBytes: 4 * GiB,
        maxUncompressedBytes: 4 * GiB,
      },
    });
    setTimeout(() => controller.abort(new Error("caller went away")), 50);
    await expect(reading).rejects.toThrow("caller went away");
    await expect(readArchiveFile(path, { signal: AbortSignal.abort() })).rejects.toThrow(/abort/i);
  });

  it("documents its defaults", () => {
    expect(defaultArchiveLimits).toEqual({
      maxArchiveBytes: 256 * MiB,
      maxUncompressedBytes: 256 * MiB,
      maxEntryBytes: 256 * MiB,
      maxMetadataBytes: 4 * MiB,
      maxEntries: 65_536,
    });
  });
});
