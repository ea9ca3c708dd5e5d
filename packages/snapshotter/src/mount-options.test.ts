import { describe, expect, it } from "vitest";
import { overlayMounts, storePathMounts } from "./mount-options.js";
import { Kind } from "./types.js";

const kernel = { indexOff: true, userxattr: false, fuseOverlayfs: false };

describe("overlayMounts", () => {
  it("bind mounts a snapshot without parent, read-only for a view", () => {
    const layout = { upperDir: "/r/1/fs", workDir: "/r/1/work", lowerDirs: [] };
    expect(overlayMounts({ ...layout, kind: Kind.Active }, kernel)).toEqual([
      { type: "bind", source: "/r/1/fs", options: ["rw", "rbind"] },
    ]);
    expect(overlayMounts({ ...layout, kind: Kind.View }, kernel)).toEqual([
      { type: "bind", source: "/r/1/fs", options: ["ro", "rbind"] },
    ]);
  });

  it("bind mounts the parent read-only for a view of one layer", () => {
    expect(
      overlayMounts(
        { kind: Kind.View, upperDir: "/r/2/fs", workDir: "/r/2/work", lowerDirs: ["/r/1/fs"] },
        kernel,
      ),
    ).toEqual([{ type: "bind", source: "/r/1/fs", options: ["ro", "rbind"] }]);
  });

  it("builds an overlay with the parent first in lowerdir", () => {
    expect(
      overlayMounts(
        {
          kind: Kind.Active,
          upperDir: "/r/3/fs",
          workDir: "/r/3/work",
          lowerDirs: ["/r/2/fs", "/r/1/fs"],
        },
        { indexOff: true, userxattr: true, fuseOverlayfs: false },
      ),
    ).toEqual([
      {
        type: "overlay",
        source: "overlay",
        options: [
          "index=off",
          "userxattr",
          "workdir=/r/3/work",
          "upperdir=/r/3/fs",
          "lowerdir=/r/2/fs:/r/1/fs",
        ],
      },
    ]);
  });

  it("gives a view of several layers no upper dir", () => {
    const [mount] = overlayMounts(
      { kind: Kind.View, upperDir: "/r/3/fs", workDir: "/r/3/work", lowerDirs: ["/a", "/b"] },
      { indexOff: false, userxattr: false, fuseOverlayfs: false },
    );
    expect(mount?.options).toEqual(["lowerdir=/a:/b"]);
  });

  it("switches the type for fuse-overlayfs and drops kernel-only options", () => {
    const [mount] = overlayMounts(
      { kind: Kind.Active, upperDir: "/u", workDir: "/w", lowerDirs: ["/a"] },
      { indexOff: true, userxattr: true, fuseOverlayfs: true },
    );
    expect(mount).toEqual({
      type: "fuse3.fuse-overlayfs",
      source: "overlay",
      options: ["workdir=/w", "upperdir=/u", "lowerdir=/a"],
    });
  });
});

describe("storePathMounts", () => {
  it("mounts each store path read-only at its own path", () => {
    expect(storePathMounts(["/nix/store/a-x"])).toEqual([
      {
        type: "bind",
        source: "/nix/store/a-x",
        target: "/nix/store/a-x",
        options: ["ro", "rbind"],
      },
    ]);
  });
});
