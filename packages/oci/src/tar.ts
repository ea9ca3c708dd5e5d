import { posix } from "node:path";
import { invalidArgument, OciError } from "./errors.js";

/** Entry types this tar implementation writes and understands. */
export type TarEntryType = "file" | "directory" | "symlink" | "hardlink";

/** An entry to write. Owner, group and mtime default to 0, the mode to 0644/0755/0777. */
export interface TarWriteEntry {
  name: string;
  type: TarEntryType;
  mode?: number;
  data?: Uint8Array;
  linkname?: string;
  uid?: number;
  gid?: number;
  mtime?: number;
}

const blockSize = 512;

function writeString(header: Buffer, offset: number, length: number, value: string): void {
  header.write(value, offset, length, "utf8");
}

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  // Digits written in place (this runs five times per entry); a value too large for the field
  // keeps the string path, which writes its leading digits as before.
  if (Number.isSafeInteger(value) && value >= 0 && value < 8 ** (length - 1)) {
    let rest = value;
    for (let index = offset + length - 2; index >= offset; index--) {
      header[index] = 0x30 + (rest % 8);
      rest = Math.floor(rest / 8);
    }
    header[offset + length - 1] = 0;
    return;
  }
  header.write(`${value.toString(8).padStart(length - 1, "0")}\0`, offset, length, "ascii");
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body) + 1;
  while (String(length).length + Buffer.byteLength(body) !== length) length++;
  return `${length}${body}`;
}

/** Bytes of padding after `size` bytes of data, up to the next block. */
function paddingLength(size: number): number {
  const rest = size % blockSize;
  return rest === 0 ? 0 : blockSize - rest;
}

/** Splits a long name into ustar prefix (<=155 bytes) and name (<=100 bytes), when possible. */
function splitUstarName(name: string): [string, string] | undefined {
  const bytes = Buffer.byteLength(name);
  if (bytes <= 100) return ["", name];
  if (bytes > 256 || bytes !== name.length) return undefined;
  for (let index = name.length - 1; index > 0; index--) {
    if (name[index] !== "/") continue;
    const prefix = name.slice(0, index);
    const rest = name.slice(index + 1);
    if (prefix.length <= 155 && rest.length <= 100 && rest.length > 0) return [prefix, rest];
    if (prefix.length <= 155) return undefined;
  }
  return undefined;
}

const typeFlags: Record<TarEntryType, string> = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  directory: "5",
};

interface HeaderFields {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
}

function sumBytes(block: Buffer, start: number, end: number): number {
  let sum = 0;
  for (let index = start; index < end; index++) sum += block[index]!;
  return sum;
}

/** Writes one header block at `offset` of `target`, whose block must be zero-filled. */
function writeHeader(target: Buffer, offset: number, fields: HeaderFields): void {
  const block = target.subarray(offset, offset + blockSize);
  writeString(block, 0, 100, fields.name);
  writeOctal(block, 100, 8, fields.mode);
  writeOctal(block, 108, 8, fields.uid);
  writeOctal(block, 116, 8, fields.gid);
  writeOctal(block, 124, 12, fields.size);
  writeOctal(block, 136, 12, fields.mtime);
  block.fill(0x20, 148, 156);
  writeString(block, 156, 1, fields.typeflag);
  if (fields.linkname !== "") writeString(block, 157, 100, fields.linkname);
  writeString(block, 257, 6, "ustar\0");
  writeString(block, 263, 2, "00");
  if (fields.prefix !== "") writeString(block, 345, 155, fields.prefix);
  // The checksum over the bytes that can be non-zero (the block was zero-filled): name to type
  // flag, the link name when there is one, magic and version, the prefix when there is one.
  let sum = sumBytes(block, 0, 157) + sumBytes(block, 257, 265);
  if (fields.linkname !== "") sum += sumBytes(block, 157, 257);
  if (fields.prefix !== "") sum += sumBytes(block, 345, 500);
  writeOctal(block, 148, 7, sum);
  block[155] = 0x20;
}

/**
 * A tar archive written into one buffer that grows by doubling: one allocation for many entries
 * instead of a header, a padding and a concatenation per entry.
 */
class TarBuffer {
  private buffer: Buffer;
  length = 0;

  constructor(capacity: number) {
    this.buffer = Buffer.alloc(Math.max(capacity, blockSize * 2));
  }

  /** Reserves `size` zero bytes at the end and returns their offset. */
  reserve(size: number): number {
    const needed = this.length + size;
    if (needed > this.buffer.byteLength) {
      let capacity = this.buffer.byteLength * 2;
      while (capacity < needed) capacity *= 2;
      const grown = Buffer.alloc(capacity);
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    const offset = this.length;
    this.length = needed;
    return offset;
  }

  /** Appends `data` and its padding to the next block. */
  appendPadded(data: Uint8Array): void {
    const offset = this.reserve(data.byteLength + paddingLength(data.byteLength));
    this.buffer.set(data, offset);
  }

  appendHeader(fields: HeaderFields): void {
    const offset = this.reserve(blockSize);
    writeHeader(this.buffer, offset, fields);
  }

  /** The bytes written; copied to a buffer of their own when more than an eighth is slack. */
  result(): Buffer {
    const written = this.buffer.subarray(0, this.length);
    return this.buffer.byteLength - this.length > this.length / 8 ? Buffer.from(written) : written;
  }
}

/** Appends one entry (its pax header when needed, its header, data and padding) to `target`. */
function appendEntry(target: TarBuffer, entry: TarWriteEntry): void {
  let name = entry.name;
  if (name === "" || name.includes("\0"))
    throw invalidArgument(`tar entry "${name}": invalid name`);
  if (entry.type === "directory" && !name.endsWith("/")) name = `${name}/`;
  const data = entry.type === "file" ? (entry.data ?? new Uint8Array(0)) : new Uint8Array(0);
  const linkname = entry.linkname ?? "";
  if ((entry.type === "symlink" || entry.type === "hardlink") && linkname === "") {
    throw invalidArgument(`tar entry "${name}": ${entry.type} without a target`);
  }
  const mode =
    entry.mode ?? (entry.type === "directory" ? 0o755 : entry.type === "symlink" ? 0o777 : 0o644);
  const uid = entry.uid ?? 0;
  const gid = entry.gid ?? 0;
  const mtime = entry.mtime ?? 0;
  const records: string[] = [];
  let split = splitUstarName(name);
  if (split === undefined) {
    records.push(paxRecord("path", name));
    split = ["", name.slice(0, 100)];
  }
  let headerLinkname = linkname;
  if (Buffer.byteLength(linkname) > 100 || Buffer.byteLength(linkname) !== linkname.length) {
    records.push(paxRecord("linkpath", linkname));
    headerLinkname = linkname.slice(0, 100);
  }
  let headerSize = data.byteLength;
  if (data.byteLength > 0o77777777777) {
    records.push(paxRecord("size", String(data.byteLength)));
    headerSize = 0;
  }
  if (records.length > 0) {
    const body = Buffer.from(records.join(""), "utf8");
    const paxName = `PaxHeaders.0/${posix.basename(name)}`.slice(0, 100);
    target.appendHeader({
      name: Buffer.from(paxName).subarray(0, 100).toString("latin1"),
      prefix: "",
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: body.byteLength,
      mtime: 0,
      typeflag: "x",
      linkname: "",
    });
    target.appendPadded(body);
  }
  target.appendHeader({
    name: split[1],
    prefix: split[0],
    mode,
    uid,
    gid,
    size: headerSize,
    mtime,
    typeflag: typeFlags[entry.type],
    linkname: headerLinkname,
  });
  if (data.byteLength > 0) target.appendPadded(data);
}

/**
 * Encodes one entry (its pax header when needed, its header, data and padding). Output depends
 * only on the entry: same entries, same bytes.
 */
export function encodeTarEntry(entry: TarWriteEntry): Buffer[] {
  const target = new TarBuffer(blockSize + (entry.data?.byteLength ?? 0));
  appendEntry(target, entry);
  return [target.result()];
}

/** The end-of-archive marker: two zero blocks. */
export function tarTrailer(): Buffer {
  return Buffer.alloc(blockSize * 2);
}

/**
 * The archive's size when no entry needs a pax header, plus room for one where a long name or
 * link target may need it: the buffer is allocated once, without doubling or a final copy, in
 * the common case. Only a capacity: a low estimate makes the buffer grow, nothing else.
 */
function estimateTarSize(entries: readonly TarWriteEntry[]): number {
  let size = blockSize * 2;
  for (const entry of entries) {
    size += blockSize;
    const dataLength = entry.type === "file" ? (entry.data?.byteLength ?? 0) : 0;
    size += dataLength + paddingLength(dataLength);
    const linkLength = entry.linkname?.length ?? 0;
    if (entry.name.length >= 100 || linkLength > 100) {
      const paxLength = 3 * (entry.name.length + 1 + linkLength) + 64;
      size += blockSize + paxLength + paddingLength(paxLength);
    }
  }
  return size;
}

/** Writes a whole tar archive in memory, entries in the given order. */
export function writeTar(entries: Iterable<TarWriteEntry>): Buffer {
  const list = Array.isArray(entries) ? (entries as readonly TarWriteEntry[]) : [...entries];
  const target = new TarBuffer(estimateTarSize(list));
  for (const entry of list) appendEntry(target, entry);
  target.reserve(blockSize * 2);
  return target.result();
}

/** An entry read from an archive. `data` is a view into the archive buffer. */
export interface TarReadEntry {
  /** Normalised relative name: no leading `./` or `/`, no trailing `/`. */
  name: string;
  type: TarEntryType | "other";
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  linkname: string;
  data: Buffer;
}

function readString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? length : end).toString("utf8");
}

function readNumber(block: Buffer, offset: number, length: number, what: string): number {
  const field = block.subarray(offset, offset + length);
  if (((field[0] ?? 0) & 0x80) !== 0) {
    // base-256 (GNU): big-endian two's complement with the top bit as marker.
    let value = 0n;
    for (let index = 0; index < field.length; index++) {
      const byte = index === 0 ? (field[index] ?? 0) & 0x7f : (field[index] ?? 0);
      value = (value << 8n) | BigInt(byte);
    }
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw tarError(`${what} too large`);
    return Number(value);
  }
  const text = field.toString("ascii").replace(/\0.*$/s, "").trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw tarError(`invalid ${what} field "${text}"`);
  return Number.parseInt(text, 8);
}

function tarError(message: string): OciError {
  return invalidArgument(`tar archive: ${message}`);
}

function parsePax(body: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let offset = 0;
  while (offset < body.length) {
    const space = body.indexOf(0x20, offset);
    if (space < 0) throw tarError("malformed pax record");
    const length = Number.parseInt(body.subarray(offset, space).toString("ascii"), 10);
    if (
      !Number.isSafeInteger(length) ||
      length <= space - offset ||
      offset + length > body.length
    ) {
      throw tarError("malformed pax record length");
    }
    const record = body.subarray(space + 1, offset + length - 1).toString("utf8");
    const equals = record.indexOf("=");
    if (equals < 0) throw tarError("malformed pax record");
    records.set(record.slice(0, equals), record.slice(equals + 1));
    offset += length;
  }
  return records;
}

/**
 * Checks and normalises an entry name: rejects absolute names, `..` segments and NUL bytes;
 * strips a leading `./` and trailing slashes.
 */
export function normalizeEntryName(name: string): string {
  if (name.includes("\0")) throw tarError(`entry "${name}": name contains a NUL byte`);
  if (name.startsWith("/")) throw tarError(`entry "${name}": absolute path`);
  const segments = name.split("/").filter((segment) => segment !== "" && segment !== ".");
  if (segments.includes("..")) throw tarError(`entry "${name}": path contains ".."`);
  if (segments.length === 0) return ".";
  return segments.join("/");
}

/** Resolves a link target inside the archive; throws when it escapes the archive root. */
export function resolveLinkTarget(entry: Pick<TarReadEntry, "name" | "type" | "linkname">): string {
  const { linkname } = entry;
  if (linkname.startsWith("/")) {
    throw tarError(
      `entry "${entry.name}": link to absolute path "${linkname}" escapes the archive`,
    );
  }
  const base = entry.type === "symlink" ? posix.dirname(entry.name) : ".";
  const resolved = posix.normalize(posix.join(base, linkname));
  if (resolved === ".." || resolved.startsWith("../")) {
    throw tarError(`entry "${entry.name}": link to "${linkname}" escapes the archive`);
  }
  return resolved;
}

export interface ReadTarOptions {
  /** Reject links whose target leaves the archive root (default true). */
  rejectEscapingLinks?: boolean;
}

/** Whether a tar header type flag carries metadata for the next entry (pax, GNU long names). */
export function isTarMetadataType(typeflag: string): boolean {
  return typeflag === "x" || typeflag === "g" || typeflag === "L" || typeflag === "K";
}

/**
 * Decodes tar headers one block at a time, carrying pax and GNU long-name state from one header
 * to the next. Shared by the in-memory reader and the streaming one.
 */
export class TarHeaderDecoder {
  private globalPax = new Map<string, string>();
  private localPax = new Map<string, string>();
  private longName: string | undefined;
  private longLink: string | undefined;

  /** Type flag and data size of the header `block` at `offset`; checks its checksum. */
  header(block: Buffer, offset: number): { typeflag: string; size: number } {
    let unsigned = 0;
    let signed = 0;
    for (let index = 0; index < blockSize; index++) {
      const byte = index >= 148 && index < 156 ? 0x20 : (block[index] ?? 0);
      unsigned += byte;
      signed += byte > 127 ? byte - 256 : byte;
    }
    let checksum: number | undefined;
    try {
      checksum = readNumber(block, 148, 8, "checksum");
    } catch {
      checksum = undefined;
    }
    if (checksum !== unsigned && checksum !== signed) {
      throw tarError(
        offset === 0
          ? "not a tar archive (no valid header at offset 0)"
          : `header checksum mismatch at offset ${offset}`,
      );
    }
    const typeflag = String.fromCharCode(block[156] ?? 0);
    let size = readNumber(block, 124, 12, "size");
    const paxSize = this.localPax.get("size") ?? this.globalPax.get("size");
    if (paxSize !== undefined && !isTarMetadataType(typeflag)) size = Number(paxSize);
    if (!Number.isSafeInteger(size) || size < 0) throw tarError(`invalid size at offset ${offset}`);
    return { typeflag, size };
  }

  /** Takes the body of a metadata entry (see {@link isTarMetadataType}). */
  metadata(typeflag: string, body: Buffer): void {
    if (typeflag === "x") this.localPax = parsePax(body);
    else if (typeflag === "g") this.globalPax = new Map([...this.globalPax, ...parsePax(body)]);
    else if (typeflag === "L") this.longName = body.toString("utf8").replace(/\0+$/, "");
    else if (typeflag === "K") this.longLink = body.toString("utf8").replace(/\0+$/, "");
  }

  /** The entry a non-metadata header describes (data left empty); resets per-entry state. */
  entry(block: Buffer, typeflag: string, size: number, options: ReadTarOptions): TarReadEntry {
    const pax = new Map([...this.globalPax, ...this.localPax]);
    const magic = block.subarray(257, 263).toString("latin1");
    const prefix = magic.startsWith("ustar") ? readString(block, 345, 155) : "";
    const rawName =
      pax.get("path") ??
      this.longName ??
      (prefix === "" ? "" : `${prefix}/`) + readString(block, 0, 100);
    const linkname = pax.get("linkpath") ?? this.longLink ?? readString(block, 157, 100);
    this.localPax = new Map();
    this.longName = undefined;
    this.longLink = undefined;
    const type: TarReadEntry["type"] =
      typeflag === "0" || typeflag === "\0" || typeflag === "7"
        ? rawName.endsWith("/") && typeflag === "\0"
          ? "directory"
          : "file"
        : typeflag === "1"
          ? "hardlink"
          : typeflag === "2"
            ? "symlink"
            : typeflag === "5"
              ? "directory"
              : "other";
    const entry: TarReadEntry = {
      name: normalizeEntryName(rawName),
      type,
      typeflag,
      mode: readNumber(block, 100, 8, "mode"),
      uid: Number(pax.get("uid") ?? readNumber(block, 108, 8, "uid")),
      gid: Number(pax.get("gid") ?? readNumber(block, 116, 8, "gid")),
      mtime: Math.floor(Number(pax.get("mtime") ?? readNumber(block, 136, 12, "mtime"))),
      size: type === "file" ? size : 0,
      linkname,
      data: Buffer.alloc(0),
    };
    if ((type === "symlink" || type === "hardlink") && options.rejectEscapingLinks !== false) {
      resolveLinkTarget(entry);
    }
    return entry;
  }
}

/** Size of a tar block; headers and data are padded to it. */
export const tarBlockSize = blockSize;

/**
 * Reads a whole tar archive from memory (ustar, pax and GNU long names). Rejects truncated
 * archives, bad header checksums, absolute names, `..` segments, and links escaping the archive.
 */
export function readTar(archive: Uint8Array, options: ReadTarOptions = {}): TarReadEntry[] {
  const buffer = Buffer.from(archive.buffer, archive.byteOffset, archive.byteLength);
  const entries: TarReadEntry[] = [];
  const decoder = new TarHeaderDecoder();
  let offset = 0;
  let ended = false;
  while (offset + blockSize <= buffer.length) {
    const block = buffer.subarray(offset, offset + blockSize);
    if (block.every((byte) => byte === 0)) {
      ended = true;
      break;
    }
    const { typeflag, size } = decoder.header(block, offset);
    const dataStart = offset + blockSize;
    const dataEnd = dataStart + size;
    if (dataEnd > buffer.length)
      throw new OciError("DataLoss", "tar archive: truncated entry data");
    const data = buffer.subarray(dataStart, dataEnd);
    offset = dataStart + Math.ceil(size / blockSize) * blockSize;
    if (isTarMetadataType(typeflag)) {
      decoder.metadata(typeflag, data);
      continue;
    }
    const entry = decoder.entry(block, typeflag, size, options);
    if (entry.type === "file") entry.data = data;
    entries.push(entry);
  }
  if (!ended && entries.length === 0) throw tarError("empty or not a tar archive");
  if (!ended && offset < buffer.length) {
    throw new OciError("DataLoss", "tar archive: truncated header");
  }
  return entries;
}
