import { describe, expect, it } from "vitest";
import { isCanonicalStorePath, storePathOf } from "./store-path.js";

const hash = "0c0s3b6kqhq8sd6d0gn9ng9kz1c4dx0q";

describe("isCanonicalStorePath", () => {
  it("accepts canonical store paths", () => {
    expect(isCanonicalStorePath(`/nix/store/${hash}-hello-2.12`)).toBe(true);
    expect(isCanonicalStorePath(`/nix/store/${hash}-a+b_c.d?e=f`)).toBe(true);
    expect(isCanonicalStorePath(`/s/${hash}-x`, "/s")).toBe(true);
    expect(isCanonicalStorePath(`/s/${hash}-x`, "/s/")).toBe(true);
  });

  it.each([
    `/nix/store/${hash}`,
    `/nix/store/${hash}-`,
    `/nix/store/${hash}-x/`,
    `/nix/store/${hash}-x/bin`,
    `/nix/store/${hash}-.hidden`,
    `/nix/store/${hash}-a b`,
    `/nix/store/${hash}-a/../b`,
    `/nix/store/${"e".repeat(32)}-x`,
    `/nix/store/${hash.toUpperCase()}-x`,
    `/nix/store//${hash}-x`,
    `nix/store/${hash}-x`,
    `/nix/store/${hash}-${"a".repeat(212)}`,
    `/etc/${hash}-x`,
  ])("rejects %j", (path) => {
    expect(isCanonicalStorePath(path)).toBe(false);
  });

  it("finds the store path of a path inside it", () => {
    expect(storePathOf(`/nix/store/${hash}-x/bin/sh`)).toBe(`/nix/store/${hash}-x`);
    expect(storePathOf(`/nix/store/${hash}-x/../y`)).toBeUndefined();
    expect(storePathOf("/etc/passwd")).toBeUndefined();
  });
});
