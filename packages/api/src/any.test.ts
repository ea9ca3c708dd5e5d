import { create, fromBinary } from "@bufbuild/protobuf";
import { anyIs, anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { packAny } from "./any.js";
import { ImageStoreSchema, WindowUpdateSchema } from "./transfer-v1.js";

describe("packAny", () => {
  const store = create(ImageStoreSchema, {
    name: "docker.io/library/hello:latest",
    unpacks: [{ platform: { os: "linux", architecture: "amd64" }, snapshotter: "nix" }],
  });

  it("uses the bare full name as type_url, as containerd expects", () => {
    const any = packAny(ImageStoreSchema, store);
    expect(any.typeUrl).toBe("containerd.types.transfer.ImageStore");
    expect(anyPack(ImageStoreSchema, store).typeUrl).toBe(
      "type.googleapis.com/containerd.types.transfer.ImageStore",
    );
  });

  it("carries the message's binary encoding, which anyUnpack restores", () => {
    const any = packAny(ImageStoreSchema, store);
    expect(fromBinary(ImageStoreSchema, any.value)).toEqual(store);
    expect(anyIs(any, ImageStoreSchema)).toBe(true);
    expect(anyIs(any, WindowUpdateSchema)).toBe(false);
    expect(anyUnpack(any, ImageStoreSchema)).toEqual(store);
    expect(anyUnpack(any, WindowUpdateSchema)).toBeUndefined();
  });
});
