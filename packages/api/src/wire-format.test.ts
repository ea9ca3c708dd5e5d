// Encodings checked against bytes computed by hand from the protobuf wire format
// (tag = field_number << 3 | wire_type; 0 = varint, 2 = length-delimited), so that a wrong
// field number or type in our .proto files is caught without any upstream file at hand.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { WriteAction, WriteContentRequestSchema } from "./content-v1.js";
import { ImageSpecSchema, ImageStatusResponseSchema, PullImageRequestSchema } from "./cri-v1.js";
import { DiffResponseSchema } from "./diff-v1.js";
import { HealthCheckResponse_ServingStatus, HealthCheckResponseSchema } from "./health-v1.js";
import { ImageSchema } from "./images-v1.js";
import {
  InfoSchema,
  Kind,
  ListSnapshotsResponseSchema,
  PrepareSnapshotRequestSchema,
  UsageResponseSchema,
} from "./snapshots-v1.js";
import { ImageStoreSchema } from "./transfer-v1.js";
import { MountSchema } from "./types.js";

const ascii = (text: string): number[] => [...Buffer.from(text, "utf8")];
const bytes = (...parts: (number | number[])[]): Uint8Array => new Uint8Array(parts.flat());

describe("snapshots PrepareSnapshotRequest", () => {
  const request = create(PrepareSnapshotRequestSchema, {
    snapshotter: "nix",
    key: "k",
    parent: "p",
    labels: { a: "b" },
  });
  const expected = bytes(
    [0x0a, 3, ...ascii("nix")], // 1: snapshotter
    [0x12, 1, ...ascii("k")], // 2: key
    [0x1a, 1, ...ascii("p")], // 3: parent
    [0x22, 6, 0x0a, 1, ...ascii("a"), 0x12, 1, ...ascii("b")], // 4: labels entry {1: key, 2: value}
  );

  it("encodes to the bytes the wire format prescribes", () => {
    expect(toBinary(PrepareSnapshotRequestSchema, request)).toEqual(expected);
  });

  it("decodes those bytes back", () => {
    const decoded = fromBinary(PrepareSnapshotRequestSchema, expected);
    expect(decoded.snapshotter).toBe("nix");
    expect(decoded.key).toBe("k");
    expect(decoded.parent).toBe("p");
    expect(decoded.labels).toEqual({ a: "b" });
  });

  it("round-trips many labels, including the nix annotations", () => {
    const labels: Record<string, string> = {
      "containerd.io/snapshot.ref": `sha256:${"0".repeat(64)}`,
      "containerd.io/snapshot/nix-layer": "true",
    };
    for (let index = 0; index < 50; index += 1) {
      labels[`containerd.io/snapshot/nix-store-path.${index}`] =
        `/nix/store/${"a".repeat(32)}-package-${index}`;
    }
    const original = create(PrepareSnapshotRequestSchema, { key: "k8s.io/1/extract", labels });
    const decoded = fromBinary(
      PrepareSnapshotRequestSchema,
      toBinary(PrepareSnapshotRequestSchema, original),
    );
    expect(decoded.labels).toEqual(labels);
    expect(decoded.key).toBe("k8s.io/1/extract");
  });
});

describe("field numbers that are easy to get wrong", () => {
  it("Mount: type 1, source 2, target 3, options 4 (repeated)", () => {
    const mount = create(MountSchema, {
      type: "bind",
      source: "/s",
      target: "/t",
      options: ["ro", "rbind"],
    });
    expect(toBinary(MountSchema, mount)).toEqual(
      bytes(
        [0x0a, 4, ...ascii("bind")],
        [0x12, 2, ...ascii("/s")],
        [0x1a, 2, ...ascii("/t")],
        [0x22, 2, ...ascii("ro")],
        [0x22, 5, ...ascii("rbind")],
      ),
    );
  });

  it("snapshots Info.kind is the enum at field 3; ListSnapshotsResponse.info is repeated 1", () => {
    const info = create(InfoSchema, { name: "n", kind: Kind.COMMITTED });
    const encodedInfo = bytes([0x0a, 1, ...ascii("n")], [0x18, 3]);
    expect(toBinary(InfoSchema, info)).toEqual(encodedInfo);
    const list = create(ListSnapshotsResponseSchema, { info: [info, info] });
    expect(toBinary(ListSnapshotsResponseSchema, list)).toEqual(
      bytes([0x0a, encodedInfo.length, ...encodedInfo], [0x0a, encodedInfo.length, ...encodedInfo]),
    );
  });

  it("UsageResponse: size 1 and inodes 2 as int64 varints", () => {
    const usage = create(UsageResponseSchema, { size: 300n, inodes: 1n });
    // 300 = 0b1_0010_1100 -> varint 0xac 0x02
    expect(toBinary(UsageResponseSchema, usage)).toEqual(bytes([0x08, 0xac, 0x02], [0x10, 1]));
  });

  it("Image.created_at is field 7 and updated_at 8 (4 to 6 are unused upstream)", () => {
    const image = create(ImageSchema, {
      name: "x",
      createdAt: timestampFromMs(1000),
      updatedAt: timestampFromMs(2000),
    });
    // Timestamp {1: seconds}
    expect(toBinary(ImageSchema, image)).toEqual(
      bytes([0x0a, 1, ...ascii("x")], [0x3a, 2, 0x08, 1], [0x42, 2, 0x08, 2]),
    );
  });

  it("DiffResponse.diff is field 3", () => {
    const response = create(DiffResponseSchema, { diff: { size: 1n } });
    expect(toBinary(DiffResponseSchema, response)).toEqual(bytes([0x1a, 2, 0x18, 1]));
  });

  it("WriteContentRequest: action 1 (COMMIT = 2), labels 7", () => {
    const request = create(WriteContentRequestSchema, {
      action: WriteAction.COMMIT,
      labels: { k: "v" },
    });
    expect(toBinary(WriteContentRequestSchema, request)).toEqual(
      bytes([0x08, 2], [0x3a, 6, 0x0a, 1, ...ascii("k"), 0x12, 1, ...ascii("v")]),
    );
  });

  it("ImageStore.unpacks is field 10", () => {
    const store = create(ImageStoreSchema, { unpacks: [{ snapshotter: "nix" }] });
    // tag 10 << 3 | 2 = 0x52; UnpackConfiguration {2: snapshotter}
    expect(toBinary(ImageStoreSchema, store)).toEqual(bytes([0x52, 5, 0x12, 3, ...ascii("nix")]));
  });

  it("HealthCheckResponse.status: SERVING = 1, SERVICE_UNKNOWN = 3", () => {
    const serving = create(HealthCheckResponseSchema, {
      status: HealthCheckResponse_ServingStatus.SERVING,
    });
    expect(toBinary(HealthCheckResponseSchema, serving)).toEqual(bytes([0x08, 1]));
    expect(HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN).toBe(3);
  });
});

describe("CRI runtime.v1", () => {
  it("PullImageRequest.image is an ImageSpec at field 1 whose image is field 1", () => {
    const request = create(PullImageRequestSchema, { image: { image: "x" } });
    expect(toBinary(PullImageRequestSchema, request)).toEqual(
      bytes([0x0a, 3, 0x0a, 1, ...ascii("x")]),
    );
  });

  it("ImageSpec: annotations 2, user_specified_image 18, runtime_handler 19, image_ref 20", () => {
    const spec = create(ImageSpecSchema, {
      annotations: { a: "b" },
      userSpecifiedImage: "u",
      runtimeHandler: "r",
      imageRef: "i",
    });
    // Tags above 15 take two varint bytes: 18 << 3 | 2 = 146 -> 0x92 0x01.
    expect(toBinary(ImageSpecSchema, spec)).toEqual(
      bytes(
        [0x12, 6, 0x0a, 1, ...ascii("a"), 0x12, 1, ...ascii("b")],
        [0x92, 0x01, 1, ...ascii("u")],
        [0x9a, 0x01, 1, ...ascii("r")],
        [0xa2, 0x01, 1, ...ascii("i")],
      ),
    );
  });

  it("ImageStatusResponse: image 1 (Image: id 1, size 4 as uint64), info 2", () => {
    const response = create(ImageStatusResponseSchema, {
      image: { id: "sha256:1", size: 2n },
      info: { k: "v" },
    });
    const image = [0x0a, 8, ...ascii("sha256:1"), 0x20, 2];
    expect(toBinary(ImageStatusResponseSchema, response)).toEqual(
      bytes(
        [0x0a, image.length, ...image],
        [0x12, 6, 0x0a, 1, ...ascii("k"), 0x12, 1, ...ascii("v")],
      ),
    );
  });
});

describe("hostile input", () => {
  it("rejects truncated messages", () => {
    // Declares a 3-byte snapshotter but carries 1 byte.
    expect(() => fromBinary(PrepareSnapshotRequestSchema, bytes([0x0a, 3, 0x6e]))).toThrow();
    // A varint that never ends.
    expect(() => fromBinary(UsageResponseSchema, bytes([0x08, 0xff, 0xff]))).toThrow();
  });

  it("rejects a field whose wire type does not match its declaration", () => {
    // Field 1 (string) sent as a varint.
    expect(() => fromBinary(PrepareSnapshotRequestSchema, bytes([0x08, 1]))).toThrow();
  });

  it("rejects invalid UTF-8 in a string field", () => {
    expect(() => fromBinary(PrepareSnapshotRequestSchema, bytes([0x12, 2, 0xc3, 0x28]))).toThrow();
  });

  it("skips unknown fields and keeps the known ones", () => {
    const decoded = fromBinary(
      PrepareSnapshotRequestSchema,
      bytes([0x7a, 2, 0x01, 0x02], [0x12, 1, ...ascii("k")]), // field 15 unknown, then key
    );
    expect(decoded.key).toBe("k");
    expect(decoded.snapshotter).toBe("");
  });
});
