import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { encodeTarEntry, readTar, type TarWriteEntry, tarTrailer, writeTar } from "./tar.js";

function rawHeader(name: string, typeflag: string, linkname = "", size = 0): Buffer {
  // Build one entry with encodeTarEntry, then patch name/linkname to hostile values and fix the
  // checksum, as an attacker's tool would.
  const [block] = encodeTarEntry({ name: "placeholder", type: "file", data: new Uint8Array(0) });
  const header = Buffer.from(block!);
  header.fill(0, 0, 100);
  header.write(name, 0, 100, "utf8");
  header.write(typeflag, 156, 1, "ascii");
  header.fill(0, 157, 257);
  header.write(linkname, 157, 100, "utf8");
  header.write(`${size.toString(8).padStart(11, "0")}\0`, 124, 12, "ascii");
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "ascii");
  return header;
}

describe("tar", () => {
  it("round-trips files, directories, symlinks and hard links", () => {
    const archive = writeTar([
      { name: "dir", type: "directory" },
      { name: "dir/file", type: "file", data: Buffer.from("content"), mode: 0o555 },
      { name: "dir/link", type: "symlink", linkname: "file" },
      { name: "hard", type: "hardlink", linkname: "dir/file" },
    ]);
    expect(archive.length % 512).toBe(0);
    const entries = readTar(archive);
    expect(entries.map((entry) => [entry.name, entry.type, entry.mode, entry.linkname])).toEqual([
      ["dir", "directory", 0o755, ""],
      ["dir/file", "file", 0o555, ""],
      ["dir/link", "symlink", 0o777, "file"],
      ["hard", "hardlink", 0o644, "dir/file"],
    ]);
    expect(entries[1]?.data.toString()).toBe("content");
    expect(entries.every((entry) => entry.uid === 0 && entry.gid === 0 && entry.mtime === 0)).toBe(
      true,
    );
  });

  it("is deterministic", () => {
    const entries = [{ name: "a", type: "file" as const, data: Buffer.from("x") }];
    expect(writeTar(entries).equals(writeTar(entries))).toBe(true);
  });

  it("writes the same bytes as the writer it replaced, across buffer growth", () => {
    // 1.3 MB: the output buffer grows from 64 KiB several times. The digest is of the archive the
    // previous writer (one Buffer per header, padding and data, then Buffer.concat) produced for
    // these entries; pax records, the ustar prefix, links and an oversized uid included.
    const entries: TarWriteEntry[] = [];
    for (let index = 0; index < 400; index++) {
      entries.push({ name: `nix/store/${"a".repeat(32)}-package-${index}`, type: "directory" });
      entries.push({
        name: `dir-${index}/file`,
        type: "file",
        data: Buffer.alloc(index * 7, index),
        mode: 0o755,
        uid: index,
        gid: 2 * index,
        mtime: 1000 + index,
      });
    }
    entries.push(
      { name: "big", type: "file", data: Buffer.alloc(300_000, 7) },
      { name: `long/${"x".repeat(150)}/${"y".repeat(90)}`, type: "file", data: Buffer.from("hi") },
      {
        name: `verylong-${"z".repeat(300)}`,
        type: "symlink",
        linkname: `target-${"q".repeat(200)}`,
      },
      { name: "hard", type: "hardlink", linkname: "big" },
      { name: "\u00fcber", type: "file", data: Buffer.from("u"), uid: 0o7777777 + 5 },
    );
    const archive = writeTar(entries);
    expect(archive.byteLength).toBe(1_380_864);
    expect(createHash("sha256").update(archive).digest("hex")).toBe(
      "d25e26ca410cf74e55bbd728cbcf35755655b16d426a0ef382a99f865e54a15c",
    );
    expect(readTar(archive).map((entry) => entry.name)).toHaveLength(entries.length);
  });

  it("stores long names in the ustar prefix or in pax records", () => {
    const storeName = `nix/store/${"a".repeat(32)}-${"n".repeat(150)}`;
    const veryLong = `${"d".repeat(200)}/${"f".repeat(120)}`;
    const longLink = `/nix/store/${"b".repeat(32)}-${"l".repeat(150)}/bin/x`;
    const entries = readTar(
      writeTar([
        { name: storeName, type: "directory" },
        { name: veryLong, type: "file", data: Buffer.from("1") },
        { name: "s", type: "symlink", linkname: longLink },
        { name: "ünïcode", type: "file" },
      ]),
      { rejectEscapingLinks: false },
    );
    expect(entries.map((entry) => entry.name)).toEqual([storeName, veryLong, "s", "ünïcode"]);
    expect(entries[2]?.linkname).toBe(longLink);
  });

  it.each([
    ["/etc/passwd", "0", "", /absolute path/],
    ["../escape", "0", "", /contains "\.\."/],
    ["a/../../escape", "0", "", /contains "\.\."/],
    ["link", "2", "/etc/passwd", /escapes the archive/],
    ["a/link", "2", "../../etc", /escapes the archive/],
    ["hard", "1", "../outside", /escapes the archive/],
  ])("rejects hostile entry %s (%s -> %s)", (name, typeflag, linkname, message) => {
    const archive = Buffer.concat([rawHeader(name, typeflag, linkname), tarTrailer()]);
    expect(() => readTar(archive)).toThrow(message);
  });

  it("accepts links that stay inside the archive", () => {
    const archive = Buffer.concat([rawHeader("a/b/link", "2", "../c"), tarTrailer()]);
    expect(readTar(archive)[0]?.linkname).toBe("../c");
  });

  it("rejects corrupt and truncated archives", () => {
    const archive = writeTar([{ name: "f", type: "file", data: Buffer.alloc(1000, 1) }]);
    const corrupt = Buffer.from(archive);
    corrupt[0] = 0x41;
    expect(() => readTar(corrupt)).toThrow(/not a tar archive/);
    const second = Buffer.concat([archive.subarray(0, 1536), archive]);
    second[1536] = 0x41;
    expect(() => readTar(second)).toThrow(/checksum mismatch at offset 1536/);
    expect(() => readTar(Buffer.alloc(1024, "x"))).toThrow(/not a tar archive/);
    expect(() => readTar(archive.subarray(0, 700))).toThrow(/truncated/);
    expect(() => readTar(Buffer.from("not a tar"))).toThrow(/not a tar archive/);
  });
});
