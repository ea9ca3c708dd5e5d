import { mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorCode } from "../errors.js";
import {
  buildGoMetastore,
  goMetastoreUnavailable,
  runGoMetastore,
} from "../testing/go-metastore.js";
import { BoltFormatError, looksLikeBolt, parseBolt, readBoltFile } from "./bolt-file.js";

const unavailable = goMetastoreUnavailable();
const decode = (bytes: Uint8Array | undefined) =>
  bytes === undefined ? undefined : new TextDecoder().decode(bytes);

let directory: string;
let shapes: string;
let pristine: Uint8Array;

describe.skipIf(unavailable !== undefined)("bolt reader on files written by bbolt", () => {
  beforeAll(async () => {
    await buildGoMetastore();
    directory = await mkdtemp(join(tmpdir(), "bolt-file-"));
    shapes = join(directory, "shapes.db");
    await runGoMetastore(["shapes", shapes]);
    pristine = new Uint8Array(await readFile(shapes));
  }, 600_000);

  afterAll(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  async function variant(name: string, change: (bytes: Uint8Array) => Uint8Array | undefined) {
    const bytes = new Uint8Array(pristine);
    const changed = change(bytes) ?? bytes;
    const file = join(directory, name);
    await writeFile(file, changed);
    return file;
  }

  it("reads the current meta page", async () => {
    const database = await readBoltFile(shapes);
    expect(database.meta.page).toBe(0);
    expect(database.meta.version).toBe(2);
    expect(database.meta.pageSize).toBe(4096);
    expect(database.meta.highWaterMark * database.meta.pageSize).toBeLessThanOrEqual(
      pristine.length,
    );
    expect(looksLikeBolt(pristine.subarray(0, 64))).toBe(true);
    // Meta page 0 destroyed: recognised by meta page 1, and read from it, as bbolt does. Meta 1
    // is the transaction before the one that wrote the buckets (the empty database).
    const damaged = new Uint8Array(pristine);
    damaged.fill(0, 0, 4096);
    expect(looksLikeBolt(damaged.subarray(0, 64))).toBe(false);
    expect(looksLikeBolt(damaged)).toBe(true);
    const fromMeta1 = parseBolt(damaged, "damaged.db");
    expect(fromMeta1.meta.page).toBe(1);
    expect(fromMeta1.meta.transactionId).toBe(database.meta.transactionId - 1n);
    expect([...fromMeta1.root.entries()]).toEqual([]);
  });

  it("lists top-level buckets in key order", async () => {
    const database = await readBoltFile(shapes);
    const names = [...database.root.entries()].map((entry) => decode(entry.key));
    expect(names).toEqual(["inline", "outer", "overflow", "wide"]);
    for (const entry of database.root.entries()) expect(entry.bucket).toBeDefined();
  });

  it("reads an inline bucket", async () => {
    const inline = (await readBoltFile(shapes)).root.bucket("inline")!;
    expect(decode(inline.get("a"))).toBe("1");
    expect(decode(inline.get("b"))).toBe("2");
    expect(inline.get("c")).toBeUndefined();
    expect(inline.bucket("a")).toBeUndefined();
  });

  it("walks a bucket spread over branch and leaf pages", async () => {
    const wide = (await readBoltFile(shapes)).root.bucket("wide")!;
    const entries = [...wide.entries()];
    expect(entries).toHaveLength(3000);
    entries.forEach((entry, index) => {
      const suffix = String(index).padStart(5, "0");
      expect(decode(entry.key)).toBe(`key-${suffix}`);
      expect(decode(entry.value)).toBe(`value-${suffix}`);
    });
    expect(decode(wide.get("key-02999"))).toBe("value-02999");
  });

  it("reads a value spanning overflow pages", async () => {
    const value = (await readBoltFile(shapes)).root.bucket("overflow")!.get("big")!;
    expect(value).toHaveLength(20000);
    expect(value.every((byte, index) => byte === index % 251)).toBe(true);
  });

  it("reads nested buckets, their sequences, and keys beside them", async () => {
    const outer = (await readBoltFile(shapes)).root.bucket("outer")!;
    expect(outer.sequence).toBe(42n);
    expect(decode(outer.get("plain"))).toBe("value");
    expect(outer.get("middle")).toBeUndefined();
    const middle = outer.bucket("middle")!;
    expect([...middle.entries()].filter((entry) => entry.value !== undefined)).toHaveLength(400);
    expect(decode(middle.bucket("inner")!.get("leaf"))).toBe("deep");
  });

  describe("refuses what it cannot read, naming the file", () => {
    async function refusal(file: string): Promise<BoltFormatError> {
      const error = await (async () => {
        const database = await readBoltFile(file);
        // Pages are checked when reached: read everything.
        const visit = (bucket: typeof database.root): void => {
          for (const entry of bucket.entries()) if (entry.bucket) visit(entry.bucket);
        };
        visit(database.root);
      })().then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(error).toBeInstanceOf(BoltFormatError);
      expect((error as Error).message).toContain(file);
      return error as BoltFormatError;
    }

    it("a truncated file", async () => {
      const file = await variant("truncated.db", (bytes) => bytes.subarray(0, 3 * 4096));
      const error = await refusal(file);
      expect(error.code).toBe(ErrorCode.DataLoss);
      expect(error.message).toMatch(/truncated/);
    });

    it("a file cut inside its first page", async () => {
      const file = join(directory, "cut.db");
      await writeFile(file, pristine.subarray(0, 40));
      await refusal(file);
      await truncate(file, 0);
      expect((await refusal(file)).message).toMatch(/empty/);
    });

    it("both meta pages failing their checksums", async () => {
      const file = await variant("checksum.db", (bytes) => {
        bytes[16 + 48]! ^= 0xff; // transaction id of meta 0
        bytes[4096 + 16 + 48]! ^= 0xff; // and of meta 1
        return undefined;
      });
      const error = await refusal(file);
      expect(error.code).toBe(ErrorCode.DataLoss);
      expect(error.message).toMatch(/checksum/);
    });

    it("an unknown data file version", async () => {
      const file = await variant("version.db", (bytes) => {
        for (const page of [0, 4096]) new DataView(bytes.buffer).setUint32(page + 20, 3, true);
        return undefined;
      });
      const error = await refusal(file);
      expect(error.code).toBe(ErrorCode.FailedPrecondition);
      expect(error.message).toMatch(/unknown bolt data file version.*version 3/);
    });

    it("a file that is not bolt", async () => {
      const file = join(directory, "sqlite.db");
      await writeFile(file, Buffer.concat([Buffer.from("SQLite format 3\0"), Buffer.alloc(8192)]));
      expect(looksLikeBolt(await readFile(file))).toBe(false);
      expect((await refusal(file)).message).toMatch(/not a bolt database/);
    });

    it("a data page overwritten with zeros", async () => {
      const database = parseBolt(pristine, "x");
      const pages = database.meta.highWaterMark;
      // Zero every data page in turn: each must be refused (or not reached), never misread.
      let refused = 0;
      for (let page = 2; page < pages; page++) {
        const bytes = new Uint8Array(pristine);
        bytes.fill(0, page * 4096, (page + 1) * 4096);
        try {
          const copy = parseBolt(bytes, "zeroed.db");
          const visit = (bucket: typeof copy.root): number => {
            let count = 0;
            for (const entry of bucket.entries()) count += entry.bucket ? visit(entry.bucket) : 1;
            return count;
          };
          // Unreached pages (free ones) change nothing.
          expect(visit(copy.root)).toBe(visit(database.root));
        } catch (error) {
          expect(error).toBeInstanceOf(BoltFormatError);
          refused++;
        }
      }
      expect(refused).toBeGreaterThan(3);
    });

    it("a file larger than the bound, before reading it", async () => {
      const error = await readBoltFile(shapes, { maxSize: 1000 }).catch((error: unknown) => error);
      expect(error).toBeInstanceOf(BoltFormatError);
      expect((error as BoltFormatError).code).toBe(ErrorCode.ResourceExhausted);
    });
  });
});
