import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { gzipSync } from "node:zlib";
import { encodeTarEntry } from "../tar.js";

const chunkBytes = 16 * 1024 * 1024;
let zeroMember: Buffer | undefined;

/** One gzip member inflating to 16 MiB of zeros (about 16 KB), made once per process. */
function zeros16MiB(): Buffer {
  zeroMember ??= gzipSync(Buffer.alloc(chunkBytes), { level: 9 });
  return zeroMember;
}

/**
 * A tar header block for a regular file `name` that declares `size` bytes of data (the data
 * itself is not part of the block): what a decompression bomb puts in front of its zeros.
 */
export function tarFileHeader(name: string, size: number): Buffer {
  const [block] = encodeTarEntry({ name, type: "file" });
  const header = Buffer.from(block!);
  header.write(`${size.toString(8).padStart(11, "0")}\0`, 124, 12, "ascii");
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
  return header;
}

export interface GzipBombOptions {
  /**
   * Tar entries in front of the zeros, each a header declaring this many bytes followed by that
   * many zeros (multiples of 16 MiB). None: the stream is only zeros.
   */
  entries?: { name: string; size: number }[];
  /** Zeros to inflate to when `entries` is empty (a multiple of 16 MiB). */
  zeros?: number;
}

/**
 * Writes a gzip file whose decompressed stream is huge and mostly zeros: concatenated gzip
 * members (one small member per 16 MiB of zeros), so a 10 GiB stream takes about 10 MB on disk
 * and a moment to write. Returns the decompressed size.
 */
export async function writeGzipBomb(path: string, options: GzipBombOptions): Promise<number> {
  const output = createWriteStream(path);
  const write = async (chunk: Buffer) => {
    if (!output.write(chunk)) await once(output, "drain");
  };
  let total = 0;
  const writeZeros = async (bytes: number) => {
    if (bytes % chunkBytes !== 0) throw new Error(`${bytes} is not a multiple of 16 MiB`);
    for (let written = 0; written < bytes; written += chunkBytes) await write(zeros16MiB());
    total += bytes;
  };
  if (options.entries === undefined || options.entries.length === 0) {
    await writeZeros(options.zeros ?? chunkBytes);
  }
  for (const entry of options.entries ?? []) {
    await write(gzipSync(tarFileHeader(entry.name, entry.size)));
    total += 512;
    await writeZeros(entry.size);
  }
  output.end();
  await once(output, "finish");
  return total;
}
