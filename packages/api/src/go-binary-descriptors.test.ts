import { randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import { toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { generatedFiles } from "./generated-files.js";
import {
  extractFileDescriptors,
  extractGzippedFileDescriptors,
  extractRawFileDescriptors,
} from "./go-binary-descriptors.js";

const files = generatedFiles();
const snapshots = files.find((file) => file.name.endsWith("snapshots"))!.proto;
const health = files.find((file) => file.name.endsWith("health"))!.proto;
const snapshotsBytes = toBinary(FileDescriptorProtoSchema, snapshots);
const healthBytes = toBinary(FileDescriptorProtoSchema, health);

/** Bytes that look like a program: text, zeros, and the descriptors at arbitrary offsets. */
function fakeBinary(...parts: Uint8Array[]): Uint8Array {
  const noise = () => Buffer.concat([Buffer.from("go.buildid\0runtime.main\0"), randomBytes(64)]);
  return Buffer.concat(parts.flatMap((part) => [noise(), Buffer.from(part)]).concat([noise()]));
}

describe("extractRawFileDescriptors", () => {
  it("finds uncompressed descriptors among other bytes and decodes them whole", () => {
    // A string following a descriptor may begin with bytes that look like fields.
    const found = extractRawFileDescriptors(
      fakeBinary(snapshotsBytes, Buffer.from("pkg/zzz"), healthBytes, Buffer.from("b\x05proto")),
    );
    expect(found.map((descriptor) => descriptor.name)).toEqual([snapshots.name, health.name]);
    expect(toBinary(FileDescriptorProtoSchema, found[0]!)).toEqual(snapshotsBytes);
    expect(toBinary(FileDescriptorProtoSchema, found[1]!)).toEqual(healthBytes);
  });

  it("ignores file names that are not descriptors and truncated descriptors", () => {
    const truncated = snapshotsBytes.subarray(0, 80);
    const found = extractRawFileDescriptors(
      fakeBinary(Buffer.from("\x0a\x0bfake/.proto\x12\x03abc"), Buffer.from("x.proto"), truncated),
    );
    expect(found).toEqual([]);
  });

  it("finds nothing in random bytes", () => {
    expect(extractRawFileDescriptors(randomBytes(1 << 16))).toEqual([]);
  });
});

describe("extractGzippedFileDescriptors", () => {
  it("finds gzip-compressed descriptors and skips compressed data that is not one", () => {
    const found = extractGzippedFileDescriptors(
      fakeBinary(
        gzipSync(snapshotsBytes),
        gzipSync(Buffer.from("not a descriptor")),
        gzipSync(healthBytes),
      ),
    );
    expect(found.map((descriptor) => descriptor.name)).toEqual([snapshots.name, health.name]);
    expect(toBinary(FileDescriptorProtoSchema, found[0]!)).toEqual(snapshotsBytes);
  });

  it("survives a gzip header followed by garbage", () => {
    const header = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff]);
    expect(extractGzippedFileDescriptors(fakeBinary(header, randomBytes(100)))).toEqual([]);
  });
});

describe("extractFileDescriptors", () => {
  it("returns each file once when a binary holds it both compressed and not", () => {
    const found = extractFileDescriptors(fakeBinary(gzipSync(snapshotsBytes), snapshotsBytes));
    expect(found.map((descriptor) => descriptor.name)).toEqual([snapshots.name]);
  });
});
