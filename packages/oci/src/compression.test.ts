import { createHash } from "node:crypto";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { compress, compressAsync, decompress, detectCompression } from "./compression.js";

describe("compression", () => {
  const data = Buffer.from("nix ".repeat(1000));

  it("round-trips gzip and zstd and detects them", () => {
    for (const kind of ["gzip", "zstd"] as const) {
      const packed = compress(data, kind);
      expect(detectCompression(packed)).toBe(kind);
      expect(decompress(packed).equals(data)).toBe(true);
      expect(compress(data, kind).equals(packed)).toBe(true);
    }
    expect(detectCompression(data)).toBe("none");
  });

  it("writes a platform-independent gzip header", () => {
    const packed = compress(data, "gzip");
    expect([...packed.subarray(4, 8)]).toEqual([0, 0, 0, 0]);
    expect(packed[9]).toBe(0xff);
    expect(gunzipSync(packed).equals(data)).toBe(true);
  });

  it("compresses to the same bytes on the thread pool as on the main thread", async () => {
    // Several output chunks (the chunk is a quarter of the input), part compressible, part not.
    const large = Buffer.concat(
      Array.from({ length: 400 }, (_, index) =>
        Buffer.concat([
          Buffer.from(`nix/store/${index}-entry/`.repeat(40)),
          createHash("sha256").update(String(index)).digest(),
        ]),
      ),
    );
    for (const input of [data, large, Buffer.alloc(0)]) {
      for (const kind of ["gzip", "zstd", "none"] as const) {
        const packed = await compressAsync(input, kind);
        expect(packed.equals(compress(input, kind))).toBe(true);
      }
    }
    expect(
      (await compressAsync(large, "gzip", { level: 9 })).equals(
        compress(large, "gzip", { level: 9 }),
      ),
    ).toBe(true);
  });

  it("refuses output beyond the limit and corrupt input", () => {
    const bomb = compress(Buffer.alloc(1024 * 1024), "gzip");
    expect(() => decompress(bomb, { maxOutputLength: 1024 })).toThrow(/cannot decompress gzip/);
    const corrupt = Buffer.from(compress(data, "zstd"));
    corrupt[corrupt.length - 2] = (corrupt.at(-2) ?? 0) ^ 0xff;
    expect(() => decompress(corrupt)).toThrow(/cannot decompress zstd/);
  });
});
