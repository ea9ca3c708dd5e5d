import { describe, expect, it } from "vitest";
import { Annotation, nixLayerAnnotations, readNixLayerAnnotations } from "./annotations.js";

describe("nix annotations", () => {
  it("uses the Go tool's keys", () => {
    expect(Annotation.NixLayer).toBe("containerd.io/snapshot/nix-layer");
    expect(Annotation.NixStorePathPrefix).toBe("containerd.io/snapshot/nix-store-path.");
  });

  it("writes and reads both forms", () => {
    const annotations = nixLayerAnnotations(["/nix/store/a", "/nix/store/b"], "/nix/store/c");
    expect(annotations).toEqual({
      "containerd.io/snapshot/nix-layer": "true",
      "containerd.io/snapshot/nix-store-path.0": "/nix/store/a",
      "containerd.io/snapshot/nix-store-path.1": "/nix/store/b",
      "containerd.io/snapshot/nix-closure": "/nix/store/c",
    });
    expect(readNixLayerAnnotations(annotations)).toEqual({
      storePaths: ["/nix/store/a", "/nix/store/b"],
      closure: "/nix/store/c",
    });
    expect(
      readNixLayerAnnotations({ "containerd.io/snapshot/nix-closure": "/nix/store/c" }),
    ).toEqual({
      storePaths: [],
      closure: "/nix/store/c",
    });
    expect(readNixLayerAnnotations({ other: "x" })).toBeUndefined();
  });
});
