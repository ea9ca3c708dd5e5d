import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream";
import * as zlib from "node:zlib";
import {
  type ArchiveContents,
  type ArchiveImage,
  archiveContents,
  type LoadImageOptions,
  loadArchiveImage,
} from "./archive.js";
import {
  type ArchiveLimits,
  formatBytes,
  limitExceeded,
  quoteTruncated,
  resolveArchiveLimits,
} from "./archive-limits.js";
import { detectCompression } from "./compression.js";
import { createDigester, type Digest } from "./digest.js";
import { OciError } from "./errors.js";
import type { LayerCompression } from "./media-types.js";
import { isTarMetadataType, resolveLinkTarget, TarHeaderDecoder, tarBlockSize } from "./tar.js";

export interface ReadArchiveFileOptions {
  /** Overrides of {@link defaultArchiveLimits}. */
  limits?: Partial<ArchiveLimits>;
  /** Stops reading and decompressing; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface LoadArchiveFileOptions extends ReadArchiveFileOptions, LoadImageOptions {}

/** An OCI layout's blob: its name is its digest. */
const blobName = /^blobs\/sha256\/([0-9a-f]{64})$/;

/** The names whose content is a JSON document bounded by `maxMetadataBytes`. */
const metadataNames = new Set(["oci-layout", "index.json", "manifest.json"]);

function describeFileType(stats: {
  isDirectory(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
}): string {
  if (stats.isDirectory()) return "a directory";
  if (stats.isFIFO()) return "a FIFO";
  if (stats.isSocket()) return "a socket";
  if (stats.isCharacterDevice()) return "a character device";
  if (stats.isBlockDevice()) return "a block device";
  return "not a regular file";
}

/** What a read rejects with when `signal` aborts: the signal's reason (an `AbortError`). */
function canceled(signal: AbortSignal | undefined, what: string): unknown {
  return signal?.reason ?? new DOMException(`${what}: canceled`, "AbortError");
}

/**
 * Opens `path` for reading only if it is a regular file no larger than `maxBytes`: the last
 * component is never followed when it is a symbolic link (`O_NOFOLLOW`), FIFOs do not block the
 * open (`O_NONBLOCK`), and the type and size checks are made on the opened descriptor (`fstat`),
 * so what is checked is what is read. Nothing is read here.
 */
export async function openRegularFile(
  path: string,
  maxBytes: number,
  what = "archive",
): Promise<{ handle: FileHandle; size: number }> {
  const quoted = quoteTruncated(path);
  let handle: FileHandle;
  try {
    handle = await open(
      path,
      constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY,
    );
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ELOOP")
      throw new OciError(
        "FailedPrecondition",
        `${what} ${quoted} is a symbolic link; only a regular file is read`,
        { cause: error },
      );
    if (code === "ENOENT")
      throw new OciError("NotFound", `${what} ${quoted} does not exist`, { cause: error });
    throw new OciError("FailedPrecondition", `${what} ${quoted} cannot be opened (${code})`, {
      cause: error,
    });
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) {
      throw new OciError(
        "FailedPrecondition",
        `${what} ${quoted} is ${describeFileType(stats)}; only a regular file is read`,
      );
    }
    if (stats.size > maxBytes) {
      throw limitExceeded(
        `${what} ${quoted} (${formatBytes(stats.size)})`,
        "maxArchiveBytes",
        maxBytes,
      );
    }
    return { handle, size: stats.size };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/**
 * Pulls exact byte counts out of a stream of chunks. Counts the bytes handed out: more than
 * `maxBytes` (plus the end-of-archive blocks) is an error, a safety net behind the checks made on
 * each header's declared size.
 */
class ChunkReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  /** Bytes handed out so far. */
  consumed = 0;

  constructor(
    private readonly source: AsyncIterator<Buffer>,
    private readonly maxBytes: number,
  ) {}

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.source.next();
    if (next.done === true) {
      this.ended = true;
      return false;
    }
    const chunk = next.value;
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    return true;
  }

  /** Up to `count` bytes, fewer only at the end of the stream; each piece passed to `sink`. */
  async take(count: number, sink: (piece: Buffer) => void): Promise<number> {
    let taken = 0;
    while (taken < count) {
      if (this.buffered === 0 && !(await this.fill())) break;
      const head = this.chunks[0]!;
      const length = Math.min(head.byteLength, count - taken);
      sink(head.subarray(0, length));
      if (length === head.byteLength) this.chunks.shift();
      else this.chunks[0] = head.subarray(length);
      this.buffered -= length;
      taken += length;
      this.consumed += length;
      if (this.consumed > this.maxBytes + 2 * tarBlockSize) {
        throw limitExceeded("archive: decompressed stream", "maxUncompressedBytes", this.maxBytes);
      }
    }
    return taken;
  }
}

/**
 * Reads an OCI layout or docker-archive tar from a stream of (decompressed) chunks, enforcing
 * `limits` from the tar headers before any entry's data is read, and hashing every file as it
 * arrives. Stops at the end-of-archive marker without reading what follows.
 */
export async function readArchiveStream(
  source: AsyncIterable<Buffer>,
  options: ReadArchiveFileOptions = {},
): Promise<ArchiveContents> {
  const limits = resolveArchiveLimits(options.limits);
  const { signal } = options;
  const reader = new ChunkReader(source[Symbol.asyncIterator](), limits.maxUncompressedBytes);
  const decoder = new TarHeaderDecoder();
  const files = new Map<string, Buffer>();
  const digests = new Map<string, Digest>();
  const links = new Map<string, string>();
  let offset = 0;
  let entries = 0;
  let ended = false;

  const readExact = async (count: number, what: string): Promise<Buffer> => {
    const output = Buffer.allocUnsafe(count);
    let at = 0;
    await reader.take(count, (piece) => {
      piece.copy(output, at);
      at += piece.byteLength;
    });
    if (at < count) throw new OciError("DataLoss", `tar archive: truncated ${what}`);
    return output;
  };
  const skip = async (count: number, what: string) => {
    if ((await reader.take(count, () => {})) < count)
      throw new OciError("DataLoss", `tar archive: truncated ${what}`);
  };

  for (;;) {
    if (signal?.aborted === true) throw canceled(signal, "archive");
    const block = Buffer.allocUnsafe(tarBlockSize);
    let at = 0;
    await reader.take(tarBlockSize, (piece) => {
      piece.copy(block, at);
      at += piece.byteLength;
    });
    if (at === 0) break;
    if (at < tarBlockSize) throw new OciError("DataLoss", "tar archive: truncated header");
    if (block.every((byte) => byte === 0)) {
      ended = true;
      break;
    }
    const { typeflag, size } = decoder.header(block, offset);
    offset += tarBlockSize;
    const padded = Math.ceil(size / tarBlockSize) * tarBlockSize;
    const checkTotal = () => {
      if (offset + padded > limits.maxUncompressedBytes) {
        throw limitExceeded(
          `archive: entry at offset ${offset - tarBlockSize} (${formatBytes(size)})`,
          "maxUncompressedBytes",
          limits.maxUncompressedBytes,
        );
      }
    };
    if (isTarMetadataType(typeflag)) {
      if (size > limits.maxMetadataBytes) {
        throw limitExceeded(
          `archive: ${typeflag} header at offset ${offset - tarBlockSize} (${formatBytes(size)})`,
          "maxMetadataBytes",
          limits.maxMetadataBytes,
        );
      }
      checkTotal();
      const body = await readExact(padded, "header data");
      decoder.metadata(typeflag, body.subarray(0, size));
      offset += padded;
      continue;
    }
    const entry = decoder.entry(block, typeflag, size, {});
    entries++;
    if (entries > limits.maxEntries) {
      throw limitExceeded("archive: entry count", "maxEntries", limits.maxEntries);
    }
    const name = quoteTruncated(entry.name);
    if (entry.type === "other") {
      throw new OciError(
        "InvalidArgument",
        `archive entry ${name}: unsupported type "${entry.typeflag}"`,
      );
    }
    if (entry.type === "file") {
      if (size > limits.maxEntryBytes) {
        throw limitExceeded(
          `archive entry ${name} (${formatBytes(size)})`,
          "maxEntryBytes",
          limits.maxEntryBytes,
        );
      }
      if (metadataNames.has(entry.name) && size > limits.maxMetadataBytes) {
        throw limitExceeded(
          `archive entry ${name} (${formatBytes(size)})`,
          "maxMetadataBytes",
          limits.maxMetadataBytes,
        );
      }
      checkTotal();
      const digester = createDigester();
      // A blob is checked against its name as soon as it is read. A second copy of a blob
      // already held is hashed but not kept: repeating one blob costs no memory.
      const named = blobName.exec(entry.name);
      const expected = named === null ? undefined : (`sha256:${named[1]}` as Digest);
      const held = expected !== undefined && digests.get(entry.name) === expected;
      const data = held ? undefined : Buffer.allocUnsafe(size);
      let filled = 0;
      await reader.take(size, (piece) => {
        if (signal?.aborted === true) throw canceled(signal, "archive");
        data?.set(piece, filled);
        filled += piece.byteLength;
        digester.update(piece);
      });
      if (filled < size) throw new OciError("DataLoss", "tar archive: truncated entry data");
      await skip(padded - size, "entry padding");
      const digest = digester.digest();
      if (expected !== undefined && digest !== expected) {
        throw new OciError("DataLoss", `archive entry ${name}: content has digest ${digest}`);
      }
      if (data !== undefined) {
        files.set(entry.name, data);
        digests.set(entry.name, digest);
      }
    } else {
      if (entry.type === "symlink" || entry.type === "hardlink")
        links.set(entry.name, resolveLinkTarget(entry));
      checkTotal();
      await skip(padded, "entry data");
    }
    offset += padded;
  }
  if (!ended && entries === 0)
    throw new OciError("InvalidArgument", "tar archive: empty or not a tar archive");
  return archiveContents(files, links, digests);
}

/**
 * Output chunk of the decompressors: 256 KiB rather than zlib's 16 KiB, so that a stream costs
 * 16 times fewer trips to the thread pool (measured here: 256 MiB of zeros inflated in about
 * 0.5-0.8 s instead of 1.7-3.7 s on a loaded machine), each still a small slice of main-thread work.
 */
const decompressedChunkBytes = 256 * 1024;

function decompressor(kind: LayerCompression): zlib.Gunzip | zlib.ZstdDecompress | undefined {
  if (kind === "gzip") return zlib.createGunzip({ chunkSize: decompressedChunkBytes });
  if (kind === "zstd") return zlib.createZstdDecompress({ chunkSize: decompressedChunkBytes });
  return undefined;
}

/**
 * Reads an archive file (plain, gzip or zstd) without loading it whole and without blocking the
 * event loop: the file is opened with {@link openRegularFile}, decompressed by zlib's streams (on
 * libuv's thread pool) and parsed by {@link readArchiveStream}, every bound of `limits` enforced
 * before the work it bounds. When `signal` aborts, reading stops at once and the call rejects with the signal's reason.
 */
export async function readArchiveFile(
  path: string,
  options: ReadArchiveFileOptions = {},
): Promise<ArchiveContents> {
  const limits = resolveArchiveLimits(options.limits);
  const { signal } = options;
  if (signal?.aborted === true) throw canceled(signal, `archive ${quoteTruncated(path)}`);
  const { handle, size } = await openRegularFile(path, limits.maxArchiveBytes);
  const streams: Readable[] = [];
  const onAbort = () => {
    for (const stream of streams) stream.destroy(canceled(signal, "archive") as Error);
  };
  try {
    const head = Buffer.alloc(4);
    await handle.read(head, 0, Math.min(4, size), 0);
    const kind = size < 4 ? "none" : detectCompression(head);
    // `end` is inclusive: never more than the size checked above, whatever the file does later.
    const input = handle.createReadStream({
      start: 0,
      end: Math.max(0, size - 1),
      autoClose: false,
      highWaterMark: 64 * 1024,
    });
    streams.push(input);
    let output: Readable = input;
    const inflate = decompressor(kind);
    if (inflate !== undefined) {
      streams.push(inflate);
      output = pipeline(input, inflate, () => {});
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await readArchiveStream(size === 0 ? emptySource() : output, {
        limits,
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      if ((signal as AbortSignal | undefined)?.aborted) throw canceled(signal, "archive");
      if (error instanceof OciError) throw error;
      throw new OciError(
        "InvalidArgument",
        `archive ${quoteTruncated(path)}: cannot decompress ${kind} data (${(error as Error).message})`,
        { cause: error },
      );
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    for (const stream of streams) stream.destroy();
    await handle.close();
  }
}

async function* emptySource(): AsyncGenerator<Buffer> {}

/** {@link readArchiveFile}, then the single image it holds (every blob verified). */
export async function loadArchiveFile(
  path: string,
  options: LoadArchiveFileOptions = {},
): Promise<ArchiveImage> {
  const limits = resolveArchiveLimits(options.limits);
  const contents = await readArchiveFile(path, { ...options, limits });
  return loadArchiveImage(contents, {
    ...(options.platform ? { platform: options.platform } : {}),
    maxMetadataBytes: limits.maxMetadataBytes,
  });
}
