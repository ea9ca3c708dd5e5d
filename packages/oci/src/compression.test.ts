import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { compress, decompress, detectCompression } from "./compression.js";

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

  it("refuses output beyond the limit and corrupt input", () => {
    const bomb = compress(Buffer.alloc(1024 * 1024), "gzip");
    expect(() => decompress(bomb, { maxOutputLength: 1024 })).toThrow(/cannot decompress gzip/);
    const corrupt = Buffer.from(compress(data, "zstd"));
    corrupt[corrupt.length - 2] = (corrupt.at(-2) ?? 0) ^ 0xff;
    expect(() => decompress(corrupt)).toThrow(/cannot decompress zstd/);
  });
});
