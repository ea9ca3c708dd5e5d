/** A file system object to serialise as a NAR. */
export type NarNode =
  | { type: "regular"; contents: string | Uint8Array; executable?: boolean }
  | { type: "symlink"; target: string }
  | { type: "directory"; entries: Readonly<Record<string, NarNode>> };

/** One path of a `nix-store --export` stream. */
export interface ExportEntry {
  storePath: string;
  node: NarNode;
  references: readonly string[];
  deriver?: string;
}

const exportMagic = 0x4558494e;

/** Accumulates Nix wire-format data: u64 little-endian integers and padded strings. */
class WireWriter {
  private readonly chunks: Buffer[] = [];

  int(value: number): void {
    const buffer = Buffer.alloc(8);
    buffer.writeBigUInt64LE(BigInt(value));
    this.chunks.push(buffer);
  }

  bytes(value: string | Uint8Array): void {
    const data = typeof value === "string" ? Buffer.from(value, "utf8") : Buffer.from(value);
    this.int(data.length);
    this.chunks.push(data);
    const padding = (8 - (data.length % 8)) % 8;
    if (padding > 0) this.chunks.push(Buffer.alloc(padding));
  }

  node(node: NarNode): void {
    this.bytes("(");
    this.bytes("type");
    switch (node.type) {
      case "regular":
        this.bytes("regular");
        if (node.executable === true) {
          this.bytes("executable");
          this.bytes("");
        }
        this.bytes("contents");
        this.bytes(node.contents);
        break;
      case "symlink":
        this.bytes("symlink");
        this.bytes("target");
        this.bytes(node.target);
        break;
      case "directory": {
        this.bytes("directory");
        const names = Object.keys(node.entries).sort((a, b) =>
          Buffer.compare(Buffer.from(a), Buffer.from(b)),
        );
        for (const name of names) {
          this.bytes("entry");
          this.bytes("(");
          this.bytes("name");
          this.bytes(name);
          this.bytes("node");
          this.node(node.entries[name]!);
          this.bytes(")");
        }
        break;
      }
    }
    this.bytes(")");
  }

  take(): Buffer {
    const result = Buffer.concat(this.chunks);
    this.chunks.length = 0;
    return result;
  }
}

/** The NAR serialisation of one file system object. */
export function narSerialise(node: NarNode): Buffer {
  const writer = new WireWriter();
  writer.bytes("nix-archive-1");
  writer.node(node);
  return writer.take();
}

/**
 * A stream in the format of `nix-store --export`, for `nix-store --import`. Entries must come
 * after the paths they reference.
 */
export function exportStream(entries: Iterable<ExportEntry>): Buffer {
  const writer = new WireWriter();
  const parts: Buffer[] = [];
  for (const entry of entries) {
    writer.int(1);
    writer.bytes("nix-archive-1");
    writer.node(entry.node);
    writer.int(exportMagic);
    writer.bytes(entry.storePath);
    writer.int(entry.references.length);
    for (const reference of [...entry.references].sort()) writer.bytes(reference);
    writer.bytes(entry.deriver ?? "");
    writer.int(0);
    parts.push(writer.take());
  }
  writer.int(0);
  parts.push(writer.take());
  return Buffer.concat(parts);
}
