import { constants, gunzipSync, gzipSync, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { OciError } from "./errors.js";
import type { LayerCompression } from "./media-types.js";

/** The compression of `data`, from its magic bytes. */
export function detectCompression(data: Uint8Array): LayerCompression {
  if (data[0] === 0x1f && data[1] === 0x8b) return "gzip";
  if (data[0] === 0x28 && data[1] === 0xb5 && data[2] === 0x2f && data[3] === 0xfd) return "zstd";
  return "none";
}

export interface CompressOptions {
  /** gzip level 0-9 (default 6) or zstd level 1-22 (default 3). */
  level?: number;
}

/**
 * Compresses deterministically. gzip: no name, mtime 0, OS byte set to 255 ("unknown", as Go's
 * compress/gzip writes it) so the output does not depend on the platform zlib was built for.
 * The deflate stream itself comes from Node's bundled zlib: same Node release, same bytes.
 */
export function compress(
  data: Uint8Array,
  compression: LayerCompression,
  options: CompressOptions = {},
): Buffer {
  switch (compression) {
    case "gzip": {
      const output = gzipSync(data, { level: options.level ?? 6 });
      output[9] = 0xff;
      return output;
    }
    case "zstd":
      return zstdCompressSync(data, {
        params: {
          [constants.ZSTD_c_compressionLevel]: options.level ?? 3,
          [constants.ZSTD_c_checksumFlag]: 1,
        },
      });
    default:
      return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
}

export interface DecompressOptions {
  /** Refuse output larger than this many bytes (default 4 GiB). */
  maxOutputLength?: number;
}

/** Decompresses gzip or zstd (detected from the data); uncompressed data is returned as is. */
export function decompress(data: Uint8Array, options: DecompressOptions = {}): Buffer {
  const maxOutputLength = options.maxOutputLength ?? 4 * 1024 ** 3;
  const kind = detectCompression(data);
  try {
    if (kind === "gzip") return gunzipSync(data, { maxOutputLength });
    if (kind === "zstd") return zstdDecompressSync(data, { maxOutputLength });
  } catch (error) {
    throw new OciError("DataLoss", `cannot decompress ${kind} data: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
