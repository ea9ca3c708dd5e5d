/**
 * HPACK (RFC 7541) for the daemon's HTTP/2 server: a decoder for request header blocks (static
 * and dynamic tables, Huffman-coded strings) with bounds on everything a client controls, and
 * an encoder for answers that uses only the static table and literals without indexing (no
 * dynamic table, no Huffman: the decoder's state on the peer never changes).
 */

/** A decoding failure: the connection ends with COMPRESSION_ERROR. */
export class HpackError extends Error {}

/** RFC 7541 Appendix A. */
export const staticTable: ReadonlyArray<readonly [string, string]> = [
  [":authority", ""],
  [":method", "GET"],
  [":method", "POST"],
  [":path", "/"],
  [":path", "/index.html"],
  [":scheme", "http"],
  [":scheme", "https"],
  [":status", "200"],
  [":status", "204"],
  [":status", "206"],
  [":status", "304"],
  [":status", "400"],
  [":status", "404"],
  [":status", "500"],
  ["accept-charset", ""],
  ["accept-encoding", "gzip, deflate"],
  ["accept-language", ""],
  ["accept-ranges", ""],
  ["accept", ""],
  ["access-control-allow-origin", ""],
  ["age", ""],
  ["allow", ""],
  ["authorization", ""],
  ["cache-control", ""],
  ["content-disposition", ""],
  ["content-encoding", ""],
  ["content-language", ""],
  ["content-length", ""],
  ["content-location", ""],
  ["content-range", ""],
  ["content-type", ""],
  ["cookie", ""],
  ["date", ""],
  ["etag", ""],
  ["expect", ""],
  ["expires", ""],
  ["from", ""],
  ["host", ""],
  ["if-match", ""],
  ["if-modified-since", ""],
  ["if-none-match", ""],
  ["if-range", ""],
  ["if-unmodified-since", ""],
  ["last-modified", ""],
  ["link", ""],
  ["location", ""],
  ["max-forwards", ""],
  ["proxy-authenticate", ""],
  ["proxy-authorization", ""],
  ["range", ""],
  ["referer", ""],
  ["refresh", ""],
  ["retry-after", ""],
  ["server", ""],
  ["set-cookie", ""],
  ["strict-transport-security", ""],
  ["transfer-encoding", ""],
  ["user-agent", ""],
  ["vary", ""],
  ["via", ""],
  ["www-authenticate", ""],
];

/**
 * Bit lengths of the Huffman code of symbols 0..256 (256 is EOS), RFC 7541 Appendix B. The code
 * is canonical (codes of one length are consecutive, in symbol order, shorter lengths first), so
 * the codes follow from the lengths; the unit tests check the RFC's examples.
 */
const huffmanLengths = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
  28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5,
  6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
  7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6,
  7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23,
  23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22,
  22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22,
  23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27,
  27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25,
  24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

const eos = 256;

/**
 * The decoding tree of the Huffman code, as arrays: node `n` has children `zero[n]` and
 * `one[n]`; a leaf holds `-(symbol + 1)`; 0 is no child (the root is node 0 and no child).
 */
const tree = (() => {
  const symbols = huffmanLengths.map((length, symbol) => ({ length, symbol }));
  symbols.sort((a, b) => a.length - b.length || a.symbol - b.symbol);
  const zero = [0];
  const one = [0];
  let code = 0;
  let previous = symbols[0]!.length;
  symbols.forEach(({ length, symbol }, index) => {
    if (index > 0) code = (code + 1) * 2 ** (length - previous);
    previous = length;
    let node = 0;
    for (let bit = length - 1; bit >= 0; bit--) {
      const side = Math.floor(code / 2 ** bit) % 2 === 1 ? one : zero;
      if (bit === 0) {
        side[node] = -(symbol + 1);
      } else {
        if (side[node] === 0) {
          side[node] = zero.length;
          zero.push(0);
          one.push(0);
        }
        node = side[node]!;
      }
    }
  });
  return { zero: Int32Array.from(zero), one: Int32Array.from(one) };
})();

/** Decodes a Huffman-coded string (RFC 7541 5.2) as latin1 (one character per octet). */
export function huffmanDecode(input: Uint8Array, start: number, end: number): string {
  const out = Buffer.allocUnsafe(Math.ceil(((end - start) * 8) / 5));
  let written = 0;
  let node = 0;
  // Bits read since the last symbol ended, and whether they were all ones.
  let pending = 0;
  let allOnes = true;
  for (let i = start; i < end; i++) {
    const byte = input[i]!;
    for (let bit = 7; bit >= 0; bit--) {
      const set = (byte >> bit) & 1;
      const next = set === 1 ? tree.one[node]! : tree.zero[node]!;
      pending++;
      allOnes &&= set === 1;
      if (next < 0) {
        const symbol = -next - 1;
        if (symbol === eos) throw new HpackError("Huffman string contains EOS");
        out[written++] = symbol;
        node = 0;
        pending = 0;
        allOnes = true;
      } else if (next === 0) {
        throw new HpackError("invalid Huffman code");
      } else {
        node = next;
      }
    }
  }
  // Padding: fewer than 8 bits, all ones (a prefix of EOS).
  if (pending > 7 || !allOnes) throw new HpackError("invalid Huffman padding");
  return out.toString("latin1", 0, written);
}

/** One decoded field. */
export type Field = [name: string, value: string];

/** Overhead of a dynamic table entry (RFC 7541 4.1). */
const entryOverhead = 32;

export interface DecoderOptions {
  /** Our SETTINGS_HEADER_TABLE_SIZE: the largest dynamic table the peer may ask for. */
  maxTableSize: number;
}

/** Longest integer accepted (RFC 7541 5.1 sets no bound): far beyond any frame's size. */
const maxInteger = 2 ** 24;

/**
 * Decodes the header blocks of one connection, in order (the dynamic table is the connection's
 * state). Any error is a COMPRESSION_ERROR for the whole connection.
 */
export class HpackDecoder {
  private table: Field[] = [];
  private tableSize = 0;
  private maxSize: number;
  private readonly limit: number;

  constructor(options: DecoderOptions) {
    this.limit = options.maxTableSize;
    this.maxSize = options.maxTableSize;
  }

  /** Current dynamic table size in octets (tests). */
  get size(): number {
    return this.tableSize;
  }

  /** Dynamic table entries, newest first (tests). */
  get entries(): readonly Field[] {
    return this.table;
  }

  /**
   * Decodes `block`. `maxListSize` bounds the decoded list (RFC 9113's header list size: names,
   * values and 32 per field); beyond it the block is still decoded (the table must stay in step)
   * but `undefined` is returned instead of the fields.
   */
  decode(block: Uint8Array, maxListSize: number): Field[] | undefined {
    let fields: Field[] | undefined = [];
    let listSize = 0;
    let position = 0;
    let first = true;
    const end = block.byteLength;

    const integer = (prefixBits: number): number => {
      if (position >= end) throw new HpackError("truncated integer");
      const mask = (1 << prefixBits) - 1;
      let value = block[position++]! & mask;
      if (value < mask) return value;
      let factor = 1;
      for (;;) {
        if (position >= end) throw new HpackError("truncated integer");
        const byte = block[position++]!;
        value += (byte & 0x7f) * factor;
        factor *= 128;
        if (value > maxInteger) throw new HpackError("integer too large");
        if ((byte & 0x80) === 0) return value;
      }
    };
    const string = (): string => {
      if (position >= end) throw new HpackError("truncated string");
      const huffman = (block[position]! & 0x80) !== 0;
      const length = integer(7);
      if (length > end - position) throw new HpackError("string longer than its block");
      const start = position;
      position += length;
      return huffman
        ? huffmanDecode(block, start, position)
        : Buffer.from(block.buffer, block.byteOffset + start, length).toString("latin1");
    };
    const lookup = (index: number): Field => {
      if (index === 0) throw new HpackError("index 0");
      if (index <= staticTable.length) {
        const [name, value] = staticTable[index - 1]!;
        return [name, value];
      }
      const entry = this.table[index - staticTable.length - 1];
      if (entry === undefined) throw new HpackError(`index ${index} beyond the tables`);
      return [entry[0], entry[1]];
    };
    const emit = (field: Field) => {
      listSize += field[0].length + field[1].length + entryOverhead;
      if (listSize > maxListSize) fields = undefined;
      fields?.push(field);
    };

    while (position < end) {
      const byte = block[position]!;
      if ((byte & 0x80) !== 0) {
        emit(lookup(integer(7)));
      } else if ((byte & 0xc0) === 0x40) {
        const index = integer(6);
        const name = index === 0 ? string() : lookup(index)[0];
        const field: Field = [name, string()];
        this.insert(field);
        emit(field);
      } else if ((byte & 0xe0) === 0x20) {
        // Dynamic table size update: only at the start of a block (RFC 7541 4.2).
        if (!first) throw new HpackError("table size update after a field");
        const size = integer(5);
        if (size > this.limit) throw new HpackError(`table size ${size} beyond ${this.limit}`);
        this.maxSize = size;
        this.evict(0);
        continue;
      } else {
        // Literal without indexing (0000) or never indexed (0001).
        const index = integer(4);
        const name = index === 0 ? string() : lookup(index)[0];
        emit([name, string()]);
      }
      first = false;
    }
    return fields;
  }

  private evict(room: number): void {
    while (this.tableSize + room > this.maxSize && this.table.length > 0) {
      const [name, value] = this.table.pop()!;
      this.tableSize -= name.length + value.length + entryOverhead;
    }
  }

  private insert(field: Field): void {
    const size = field[0].length + field[1].length + entryOverhead;
    // An entry larger than the table empties it and is not added (RFC 7541 4.4).
    this.evict(size);
    if (size > this.maxSize) return;
    this.table.unshift(field);
    this.tableSize += size;
  }
}

/** Static-table index of each name (first entry with that name). */
const staticNames = new Map<string, number>();
/** Static-table index of each name and value pair with a value. */
const staticPairs = new Map<string, number>();
staticTable.forEach(([name, value], index) => {
  if (!staticNames.has(name)) staticNames.set(name, index + 1);
  if (value !== "") staticPairs.set(`${name}\0${value}`, index + 1);
});

function pushInteger(out: number[], value: number, prefixBits: number, flags: number): void {
  const max = (1 << prefixBits) - 1;
  if (value < max) {
    out.push(flags | value);
    return;
  }
  out.push(flags | max);
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
}

/** A field value or name that may go on the wire: visible ASCII, space and tab, not at the ends. */
const safeValue = /^(?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?$/;
const safeName = /^[a-z0-9!#$%&'*+\-.^_`|~]+$/;

/** Whether `name: value` may be sent (lowercase token name, value without CR, LF or NUL). */
export function sendable(name: string, value: string): boolean {
  return safeName.test(name) && safeValue.test(value);
}

/**
 * Encodes fields as one header block: pairs in the static table by index, the rest as literals
 * without indexing (static name index when there is one). Callers pass only sendable fields
 * (see {@link sendable}); `:status` first.
 */
export function encodeFields(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const out: number[] = [];
  const parts: Buffer[] = [];
  const flush = () => {
    if (out.length > 0) parts.push(Buffer.from(out));
    out.length = 0;
  };
  for (const [name, value] of fields) {
    const pair = staticPairs.get(`${name}\0${value}`);
    if (pair !== undefined) {
      pushInteger(out, pair, 7, 0x80);
      continue;
    }
    const nameIndex = staticNames.get(name);
    if (nameIndex !== undefined) {
      pushInteger(out, nameIndex, 4, 0x00);
    } else {
      out.push(0x00);
      pushInteger(out, Buffer.byteLength(name, "latin1"), 7, 0x00);
      flush();
      parts.push(Buffer.from(name, "latin1"));
    }
    pushInteger(out, Buffer.byteLength(value, "latin1"), 7, 0x00);
    flush();
    parts.push(Buffer.from(value, "latin1"));
  }
  flush();
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}
