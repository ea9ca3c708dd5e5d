import * as zlib from "node:zlib";
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

// zstd arrived in node:zlib with Node 22.15 / 23.8; look it up at call time so that loading this
// module works on older Node and only zstd itself fails, with a clear message.
type ZstdZlib = {
  zstdCompressSync?: (data: Uint8Array, options: { params: Record<number, number> }) => Buffer;
  zstdCompress?: (
    data: Uint8Array,
    options: { params: Record<number, number>; pledgedSrcSize: number },
    callback: (error: Error | null, result: Buffer) => void,
  ) => void;
  zstdDecompressSync?: (data: Uint8Array, options: { maxOutputLength: number }) => Buffer;
};
const zstd = zlib as unknown as ZstdZlib;

function requireZstd<K extends keyof ZstdZlib>(name: K): NonNullable<ZstdZlib[K]> {
  const implementation = zstd[name];
  if (implementation === undefined) {
    throw new OciError(
      "FailedPrecondition",
      `zstd needs Node >= 22.15 (node:zlib has no ${name} in Node ${process.version})`,
    );
  }
  return implementation as NonNullable<ZstdZlib[K]>;
}

/**
 * gzip's own default (level 6, zlib's default strategy and memLevel). The output chunk is sized to
 * the input (within 16 KiB..4 MiB) so that a layer's deflate stream comes out in a few chunks
 * instead of one per 16 KiB; the compressed bytes do not depend on it.
 */
function gzipOptions(data: Uint8Array, options: CompressOptions): zlib.ZlibOptions {
  return {
    level: options.level ?? 6,
    chunkSize: Math.min(Math.max(data.byteLength >>> 2, 16 * 1024), 4 * 1024 * 1024),
  };
}

function zstdOptions(options: CompressOptions): { params: Record<number, number> } {
  // ZSTD_c_compressionLevel = 100, ZSTD_c_checksumFlag = 201 (zstd.h, stable API).
  return { params: { 100: options.level ?? 3, 201: 1 } };
}

/** Sets the gzip header's OS byte to 255 ("unknown"). */
function gzipOsUnknown(output: Buffer): Buffer {
  output[9] = 0xff;
  return output;
}

/**
 * Compresses deterministically. gzip: no name, mtime 0, OS byte set to 255 ("unknown", as Go's
 * compress/gzip writes it) so the output does not depend on the platform zlib was built for.
 * The deflate stream itself comes from the zlib bundled with Node and may differ between Node
 * releases.
 */
export function compress(
  data: Uint8Array,
  compression: LayerCompression,
  options: CompressOptions = {},
): Buffer {
  switch (compression) {
    case "gzip":
      return gzipOsUnknown(zlib.gzipSync(data, gzipOptions(data, options)));
    case "zstd":
      return requireZstd("zstdCompressSync")(data, zstdOptions(options));
    default:
      return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
}

/**
 * {@link compress} on libuv's thread pool: the same bytes, and the event loop stays free (and the
 * caller can do other work on the main thread) while a large layer compresses.
 */
export function compressAsync(
  data: Uint8Array,
  compression: LayerCompression,
  options: CompressOptions = {},
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const done = (error: Error | null, output: Buffer) => {
      if (error !== null) reject(error);
      else resolve(compression === "gzip" ? gzipOsUnknown(output) : output);
    };
    switch (compression) {
      case "gzip":
        zlib.gzip(data, gzipOptions(data, options), done);
        return;
      case "zstd":
        // The one-shot call writes the content size into the frame header; the stream writes it
        // only when told the size up front (without it the bytes differ).
        requireZstd("zstdCompress")(
          data,
          { ...zstdOptions(options), pledgedSrcSize: data.byteLength },
          done,
        );
        return;
      default:
        resolve(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    }
  });
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
    if (kind === "gzip") return zlib.gunzipSync(data, { maxOutputLength });
    if (kind === "zstd") return requireZstd("zstdDecompressSync")(data, { maxOutputLength });
  } catch (error) {
    if (error instanceof OciError) throw error;
    throw new OciError("DataLoss", `cannot decompress ${kind} data: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
