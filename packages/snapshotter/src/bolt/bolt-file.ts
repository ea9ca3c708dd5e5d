import { open } from "node:fs/promises";
import { ErrorCode, SnapshotterError } from "../errors.js";

/**
 * A read-only reader of bolt (go.etcd.io/bbolt) database files, the format of containerd's
 * `snapshots/storage` MetaStore. Layout, as bbolt 1.3 writes it on little-endian machines:
 *
 * - The file is a sequence of pages of `pageSize` bytes. Every page starts with a 16-byte
 *   header: id (u64), flags (u16: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist), count
 *   (u16, elements on the page) and overflow (u32, further pages the page spans).
 * - Pages 0 and 1 are meta pages: magic 0xED0CDAED (u32), version 2 (u32), pageSize (u32),
 *   flags (u32), root bucket (root page id u64, sequence u64), freelist page id (u64), high water
 *   mark (u64, the first page id past the data), transaction id (u64) and an FNV-1a 64 checksum
 *   (u64) of the 56 bytes before it. The valid one with the higher transaction id is current.
 * - A bucket is a B+tree. Branch elements are 16 bytes (pos u32, ksize u32, child page id u64);
 *   leaf elements are 16 bytes (flags u32, pos u32, ksize u32, vsize u32). `pos` counts from the
 *   element itself; the value follows the key.
 * - A leaf element with flag 0x01 is a nested bucket: its value is a 16-byte bucket header (root
 *   page id, sequence). A root of 0 means the bucket is inline: its single leaf page follows the
 *   header inside the value.
 */

const pageHeaderSize = 16;
const elementSize = 16;
const metaSize = 64;
const magic = 0xed0cdaed;
/** The only data file version bbolt has written. */
export const boltVersion = 2;
const branchFlag = 0x01;
const leafFlag = 0x02;
const metaFlag = 0x04;
const bucketLeafFlag = 0x01;
const bucketHeaderSize = 16;
/** A B+tree deeper than this is a loop or garbage: bbolt trees of any real size are shallow. */
const maxDepth = 64;
/** Page sizes bbolt may have used when meta page 0 is unreadable. */
const candidatePageSizes = [4096, 8192, 16384, 32768, 65536];

/** Default bound on a bolt file read into memory. */
export const defaultMaxBoltFileSize = 1024 * 1024 * 1024;

export interface BoltMeta {
  version: number;
  pageSize: number;
  /** The first page id past the data. */
  highWaterMark: number;
  transactionId: bigint;
  /** 0 or 1: which meta page is current. */
  page: number;
}

/** A bucket of a bolt database; keys are bytes, values bytes or nested buckets. */
export interface BoltBucket {
  /** The bucket's sequence (bbolt `NextSequence` hands out sequence + 1). */
  readonly sequence: bigint;
  /** The value stored at `key`, or undefined (also when `key` names a nested bucket). */
  get(key: string | Uint8Array): Uint8Array | undefined;
  /** The nested bucket at `key`, or undefined. */
  bucket(key: string | Uint8Array): BoltBucket | undefined;
  /** Every entry in key order; `value` is undefined for a nested bucket, `bucket` otherwise. */
  entries(): Iterable<BoltEntry>;
}

export interface BoltEntry {
  key: Uint8Array;
  value: Uint8Array | undefined;
  bucket: BoltBucket | undefined;
}

export interface BoltDatabase {
  readonly file: string;
  readonly meta: BoltMeta;
  /** The root bucket (its entries are the top-level buckets). */
  readonly root: BoltBucket;
}

export interface ReadBoltFileOptions {
  /** Refuse files larger than this many bytes (default 1 GiB). */
  maxSize?: number;
}

/** The file cannot be read as a bolt database. */
export class BoltFormatError extends SnapshotterError {
  readonly file: string;
  constructor(code: ErrorCode, file: string, problem: string) {
    super(code, `bolt database ${file}: ${problem}`);
    this.file = file;
  }
}

const textEncoder = new TextEncoder();

function keyBytes(key: string | Uint8Array): Uint8Array {
  return typeof key === "string" ? textEncoder.encode(key) : key;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let index = 0; index < length; index++) {
    const difference = a[index]! - b[index]!;
    if (difference !== 0) return difference;
  }
  return a.length - b.length;
}

const fnvOffset = 0xcbf29ce484222325n;
const fnvPrime = 0x100000001b3n;
const mask64 = (1n << 64n) - 1n;

/** FNV-1a, 64 bits. */
function fnv1a64(bytes: Uint8Array): bigint {
  let hash = fnvOffset;
  for (const byte of bytes) {
    hash ^= BigInt(byte);
    hash = (hash * fnvPrime) & mask64;
  }
  return hash;
}

type MetaResult = { meta: BoltMeta; root: bigint; rootSequence: bigint } | { problem: string };

/** Reads and validates the meta page whose page starts at `offset`. */
function readMeta(bytes: Uint8Array, offset: number, expectedPage: number): MetaResult {
  if (bytes.length < offset + pageHeaderSize + metaSize) {
    return { problem: `meta page ${expectedPage} is cut off (file has ${bytes.length} bytes)` };
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, pageHeaderSize + metaSize);
  const flags = view.getUint16(8, true);
  const at = pageHeaderSize;
  if (view.getUint32(at, true) !== magic) {
    return { problem: `meta page ${expectedPage} has no bolt magic number` };
  }
  const version = view.getUint32(at + 4, true);
  if (version !== boltVersion) {
    return { problem: `meta page ${expectedPage} has data file version ${version}` };
  }
  const stored = view.getBigUint64(at + 56, true);
  const computed = fnv1a64(bytes.subarray(offset + at, offset + at + 56));
  if (stored !== 0n && stored !== computed) {
    return { problem: `meta page ${expectedPage} fails its checksum` };
  }
  if ((flags & metaFlag) === 0) {
    return { problem: `page ${expectedPage} is not a meta page (flags 0x${flags.toString(16)})` };
  }
  const pageSize = view.getUint32(at + 8, true);
  if (pageSize < 1024 || pageSize > 1 << 20 || (pageSize & (pageSize - 1)) !== 0) {
    return { problem: `meta page ${expectedPage} has page size ${pageSize}` };
  }
  const highWaterMark = view.getBigUint64(at + 40, true);
  if (highWaterMark > BigInt(Number.MAX_SAFE_INTEGER)) {
    return { problem: `meta page ${expectedPage} has high water mark ${highWaterMark}` };
  }
  return {
    meta: {
      version,
      pageSize,
      highWaterMark: Number(highWaterMark),
      transactionId: view.getBigUint64(at + 48, true),
      page: expectedPage,
    },
    root: view.getBigUint64(at + 16, true),
    rootSequence: view.getBigUint64(at + 24, true),
  };
}

/**
 * Parses a bolt database held in memory. Throws a {@link BoltFormatError} naming `file` when it
 * is not a bolt file, has an unknown version, is truncated or is corrupt. Buckets are read
 * lazily, and every page is checked when it is reached: read every bucket you rely on (as
 * `entries()` does) before acting on what you read.
 */
export function parseBolt(bytes: Uint8Array, file: string): BoltDatabase {
  const fail = (code: ErrorCode, problem: string): never => {
    throw new BoltFormatError(code, file, problem);
  };
  if (bytes.length === 0) fail(ErrorCode.DataLoss, "the file is empty");

  const meta0 = readMeta(bytes, 0, 0);
  let pageSize: number | undefined = "meta" in meta0 ? meta0.meta.pageSize : undefined;
  let meta1: MetaResult = { problem: "meta page 1 not found" };
  if (pageSize !== undefined) {
    meta1 = readMeta(bytes, pageSize, 1);
  } else {
    for (const candidate of candidatePageSizes) {
      const found = readMeta(bytes, candidate, 1);
      if ("meta" in found && found.meta.pageSize === candidate) {
        meta1 = found;
        pageSize = candidate;
        break;
      }
    }
  }
  const valid = [meta0, meta1].filter(
    (result): result is Extract<MetaResult, { meta: BoltMeta }> => "meta" in result,
  );
  if (valid.length === 0) {
    const problems = [meta0, meta1].map((result) => ("problem" in result ? result.problem : ""));
    if (problems.every((problem) => /no bolt magic|not found/.test(problem))) {
      fail(ErrorCode.FailedPrecondition, "not a bolt database (no bolt magic number)");
    }
    const version = problems.find((problem) => problem.includes("data file version"));
    if (version !== undefined) {
      fail(
        ErrorCode.FailedPrecondition,
        `unknown bolt data file version (${version}; this reader knows version ${boltVersion})`,
      );
    }
    fail(ErrorCode.DataLoss, `no valid meta page: ${problems.join("; ")}`);
  }
  valid.sort((a, b) => (a.meta.transactionId > b.meta.transactionId ? -1 : 1));
  const current = valid[0]!;
  const { meta } = current;
  pageSize = meta.pageSize;
  const needed = meta.highWaterMark * pageSize;
  if (bytes.length < needed) {
    fail(
      ErrorCode.DataLoss,
      `truncated: ${bytes.length} bytes, but its meta page says ${meta.highWaterMark} pages of ${pageSize} bytes (${needed} bytes)`,
    );
  }

  /** The bytes of page `id` (with its overflow pages), checked. */
  const pageAt = (id: bigint, context: string): Uint8Array => {
    if (id < 2n || id >= BigInt(meta.highWaterMark)) {
      fail(
        ErrorCode.DataLoss,
        `${context}: page id ${id} is outside the data (2..${meta.highWaterMark - 1})`,
      );
    }
    const start = Number(id) * pageSize;
    const view = new DataView(bytes.buffer, bytes.byteOffset + start, pageHeaderSize);
    const storedId = view.getBigUint64(0, true);
    if (storedId !== id) {
      fail(ErrorCode.DataLoss, `${context}: page ${id} has id ${storedId} in its header`);
    }
    const overflow = view.getUint32(12, true);
    if (Number(id) + overflow >= meta.highWaterMark) {
      fail(
        ErrorCode.DataLoss,
        `${context}: page ${id} overflows past the data (${overflow} pages)`,
      );
    }
    return bytes.subarray(start, start + (overflow + 1) * pageSize);
  };

  /** The elements of a branch or leaf page, checked against the page's bounds. */
  function* walkPage(
    page: Uint8Array,
    context: string,
    depth: number,
    visited: Set<bigint>,
    bounds: { last: Uint8Array | undefined },
  ): Generator<{ flags: number; key: Uint8Array; value: Uint8Array }> {
    if (depth > maxDepth) fail(ErrorCode.DataLoss, `${context}: B+tree deeper than ${maxDepth}`);
    if (page.length < pageHeaderSize) fail(ErrorCode.DataLoss, `${context}: page cut off`);
    const view = new DataView(page.buffer, page.byteOffset, page.length);
    const flags = view.getUint16(8, true);
    const count = view.getUint16(10, true);
    if (pageHeaderSize + count * elementSize > page.length) {
      fail(ErrorCode.DataLoss, `${context}: ${count} elements do not fit in the page`);
    }
    const slice = (elementOffset: number, position: number, length: number): Uint8Array => {
      const start = elementOffset + position;
      if (start + length > page.length) {
        fail(ErrorCode.DataLoss, `${context}: an element points past the end of its page`);
      }
      return page.subarray(start, start + length);
    };
    if ((flags & branchFlag) !== 0) {
      for (let index = 0; index < count; index++) {
        const elementOffset = pageHeaderSize + index * elementSize;
        const child = view.getBigUint64(elementOffset + 8, true);
        if (visited.has(child)) {
          fail(ErrorCode.DataLoss, `${context}: page ${child} is reached twice`);
        }
        visited.add(child);
        yield* walkPage(pageAt(child, context), context, depth + 1, visited, bounds);
      }
      return;
    }
    if ((flags & leafFlag) === 0) {
      fail(
        ErrorCode.DataLoss,
        `${context}: page is neither branch nor leaf (flags 0x${flags.toString(16)})`,
      );
    }
    for (let index = 0; index < count; index++) {
      const elementOffset = pageHeaderSize + index * elementSize;
      const elementFlags = view.getUint32(elementOffset, true);
      const position = view.getUint32(elementOffset + 4, true);
      const keySize = view.getUint32(elementOffset + 8, true);
      const valueSize = view.getUint32(elementOffset + 12, true);
      const key = slice(elementOffset, position, keySize);
      const value = slice(elementOffset, position + keySize, valueSize);
      if (bounds.last !== undefined && compareBytes(bounds.last, key) >= 0) {
        fail(ErrorCode.DataLoss, `${context}: keys out of order`);
      }
      bounds.last = key;
      yield { flags: elementFlags, key, value };
    }
  }

  const makeBucket = (
    rootPage: bigint,
    sequence: bigint,
    inline: Uint8Array | undefined,
    context: string,
    depth: number,
  ): BoltBucket => {
    if (depth > maxDepth)
      fail(ErrorCode.DataLoss, `${context}: buckets nested deeper than ${maxDepth}`);
    const elements = () => {
      const visited = new Set<bigint>();
      const page = inline ?? pageAt(rootPage, context);
      if (inline === undefined) visited.add(rootPage);
      return walkPage(page, context, 0, visited, { last: undefined });
    };
    const nested = (key: Uint8Array, value: Uint8Array): BoltBucket => {
      const name = `${context}/${new TextDecoder().decode(key).slice(0, 100)}`;
      if (value.length < bucketHeaderSize) {
        fail(ErrorCode.DataLoss, `${name}: bucket header cut off (${value.length} bytes)`);
      }
      const header = new DataView(value.buffer, value.byteOffset, bucketHeaderSize);
      const root = header.getBigUint64(0, true);
      const childSequence = header.getBigUint64(8, true);
      if (root === 0n) {
        return makeBucket(0n, childSequence, value.subarray(bucketHeaderSize), name, depth + 1);
      }
      return makeBucket(root, childSequence, undefined, name, depth + 1);
    };
    const find = (key: string | Uint8Array) => {
      const wanted = keyBytes(key);
      for (const element of elements()) {
        const order = compareBytes(element.key, wanted);
        if (order === 0) return element;
        if (order > 0) return undefined;
      }
      return undefined;
    };
    return {
      sequence,
      get(key) {
        const element = find(key);
        if (element === undefined || (element.flags & bucketLeafFlag) !== 0) return undefined;
        return element.value;
      },
      bucket(key) {
        const element = find(key);
        if (element === undefined || (element.flags & bucketLeafFlag) === 0) return undefined;
        return nested(element.key, element.value);
      },
      *entries() {
        for (const element of elements()) {
          if ((element.flags & bucketLeafFlag) !== 0) {
            yield {
              key: element.key,
              value: undefined,
              bucket: nested(element.key, element.value),
            };
          } else {
            yield { key: element.key, value: element.value, bucket: undefined };
          }
        }
      },
    };
  };

  return {
    file,
    meta,
    root: makeBucket(current.root, current.rootSequence, undefined, "root bucket", 0),
  };
}

/** How many leading bytes {@link looksLikeBolt} needs to see both meta pages. */
export const boltHeadSize = candidatePageSizes.at(-1)! + pageHeaderSize + 4;

/**
 * True when `head` (the first bytes of a file, up to {@link boltHeadSize}) starts like a bolt
 * database: the bolt magic number in meta page 0, or in meta page 1 at one of the page sizes bbolt
 * uses (page 0 may be the damaged one).
 */
export function looksLikeBolt(head: Uint8Array): boolean {
  const view = new DataView(head.buffer, head.byteOffset, head.length);
  return [0, ...candidatePageSizes].some(
    (offset) =>
      head.length >= offset + pageHeaderSize + 4 &&
      view.getUint32(offset + pageHeaderSize, true) === magic,
  );
}

/**
 * Reads a bolt database file (at most `maxSize` bytes, checked before reading) and parses its
 * meta pages. Errors name the file.
 */
export async function readBoltFile(
  file: string,
  options: ReadBoltFileOptions = {},
): Promise<BoltDatabase> {
  const maxSize = options.maxSize ?? defaultMaxBoltFileSize;
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(file, "r");
  } catch (error) {
    throw SnapshotterError.from(error, `bolt database ${file}`);
  }
  try {
    const { size } = await handle.stat();
    if (size > maxSize) {
      throw new BoltFormatError(
        ErrorCode.ResourceExhausted,
        file,
        `${size} bytes, more than the ${maxSize} this reader accepts`,
      );
    }
    const bytes = new Uint8Array(size);
    let filled = 0;
    while (filled < size) {
      const { bytesRead } = await handle.read(bytes, filled, size - filled, filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    return parseBolt(bytes.subarray(0, filled), file);
  } finally {
    await handle.close();
  }
}
