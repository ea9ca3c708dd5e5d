import { describe, expect, it } from "vitest";
import { isNixStoreError } from "./errors.js";
import {
  isStorePath,
  isValidStoreDir,
  NIX_BASE32_ALPHABET,
  parseStorePath,
  parseStorePaths,
  storePathOf,
  validateStoreDir,
} from "./store-path.js";

const hash = "0c8q7j2v00d7h9kf8ys3vip9b4rv1j6r";

function rejection(path: string, storeDir?: string): string {
  try {
    parseStorePath(path, storeDir === undefined ? {} : { storeDir });
  } catch (error) {
    expect(isNixStoreError(error, "InvalidArgument")).toBe(true);
    return (error as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(path)}`);
}

describe("parseStorePath", () => {
  it("splits a canonical path into its parts", () => {
    expect(parseStorePath(`/nix/store/${hash}-hello-2.12.1`)).toEqual({
      path: `/nix/store/${hash}-hello-2.12.1`,
      storeDir: "/nix/store",
      baseName: `${hash}-hello-2.12.1`,
      hash,
      name: "hello-2.12.1",
    });
  });

  it("accepts every character Nix allows in names", () => {
    const name = "aZ09+-._?=";
    expect(parseStorePath(`/nix/store/${hash}-${name}`).name).toBe(name);
    expect(parseStorePath(`/nix/store/${hash}-${"a".repeat(211)}`).name).toHaveLength(211);
  });

  it("uses a configured store directory", () => {
    const parsed = parseStorePath(`/opt/nix/store/${hash}-x`, { storeDir: "/opt/nix/store" });
    expect(parsed.storeDir).toBe("/opt/nix/store");
    expect(rejection(`/nix/store/${hash}-x`, "/opt/nix/store")).toMatch(
      /not in the store directory/,
    );
  });

  it.each([
    ["empty", ""],
    ["relative", `nix/store/${hash}-x`],
    ["store dir only", "/nix/store"],
    ["store dir with slash", "/nix/store/"],
    ["parent component", `/nix/store/../store/${hash}-x`],
    ["dot-dot name", `/nix/store/${hash}-..`],
    ["dot name", `/nix/store/${hash}-.`],
    ["leading dot name", `/nix/store/${hash}-.hidden`],
    ["escape after name", `/nix/store/${hash}-x/../../../etc`],
    ["sub path", `/nix/store/${hash}-x/bin/sh`],
    ["trailing slash", `/nix/store/${hash}-x/`],
    ["double slash", `/nix//store/${hash}-x`],
    ["double slash before base name", `/nix/store//${hash}-x`],
    ["host etc", "/etc"],
    ["letter e in hash", `/nix/store/${"e".repeat(32)}-x`],
    ["letter o in hash", `/nix/store/${"o".repeat(32)}-x`],
    ["letter u in hash", `/nix/store/${"u".repeat(32)}-x`],
    ["letter t in hash", `/nix/store/${"t".repeat(32)}-x`],
    ["upper-case hash", `/nix/store/${hash.toUpperCase()}-x`],
    ["short hash", `/nix/store/${hash.slice(1)}-x`],
    ["long hash", `/nix/store/${hash}0-x`],
    ["no dash", `/nix/store/${hash}_x`],
    ["empty name", `/nix/store/${hash}-`],
    ["name too long", `/nix/store/${hash}-${"a".repeat(212)}`],
    ["space in name", `/nix/store/${hash}-a b`],
    ["slash-like unicode", `/nix/store/${hash}-a\u2215b`],
    ["NUL", `/nix/store/${hash}-a\0b`],
    ["newline", `/nix/store/${hash}-a\nb`],
    ["option-like", `--option`],
    ["url", `file:///nix/store/${hash}-x`],
    ["symlink-ish prefix", `/nix/store-evil/${hash}-x`],
  ])("rejects %s", (_label, path) => {
    expect(rejection(path)).toContain("store path");
    expect(isStorePath(path)).toBe(false);
  });

  it("rejects values that are not strings", () => {
    for (const value of [undefined, null, 42, {}, ["/nix/store/x"]]) {
      expect(isStorePath(value)).toBe(false);
    }
  });

  it("names the offending path in the error", () => {
    try {
      parseStorePath("/etc/passwd");
      expect.unreachable();
    } catch (error) {
      expect((error as Error).message).toContain('"/etc/passwd"');
      expect(isNixStoreError(error) && error.failedPaths).toEqual(["/etc/passwd"]);
    }
  });

  it("has the 32-letter alphabet without e, o, u, t", () => {
    expect(NIX_BASE32_ALPHABET).toHaveLength(32);
    expect(NIX_BASE32_ALPHABET).not.toMatch(/[eout]/);
  });
});

describe("validateStoreDir", () => {
  it.each([
    "",
    "/",
    "relative/store",
    "/nix/store/",
    "/nix/../store",
    "/nix/./store",
    "/nix//store",
    "/nix/st\0re",
  ])("rejects %j", (storeDir) => {
    expect(() => validateStoreDir(storeDir)).toThrow(/store directory/);
    expect(isValidStoreDir(storeDir)).toBe(false);
    expect(isStorePath(`${storeDir}/${hash}-x`, { storeDir })).toBe(false);
  });

  it("accepts canonical absolute directories", () => {
    expect(validateStoreDir("/gnu/store")).toBe("/gnu/store");
    expect(isValidStoreDir("/gnu/store")).toBe(true);
    expect(isStorePath(`/gnu/store/${hash}-x`, { storeDir: "/gnu/store" })).toBe(true);
  });
});

describe("storePathOf", () => {
  it("finds the store path a path lies in", () => {
    expect(storePathOf(`/nix/store/${hash}-x`)).toBe(`/nix/store/${hash}-x`);
    expect(storePathOf(`/nix/store/${hash}-x/bin/sh`)).toBe(`/nix/store/${hash}-x`);
    expect(storePathOf(`/s/${hash}-x/lib`, { storeDir: "/s" })).toBe(`/s/${hash}-x`);
  });

  it.each([
    "/etc/passwd",
    "/nix/store",
    `/nix/store/${hash}-x/../y`,
    `/nix/store/${hash}-x/./bin`,
    `/nix/store/${hash}-x//bin`,
    `/nix/store//${hash}-x`,
    `/nix/store/${hash}-.hidden/bin`,
    `/nix/store-evil/${hash}-x`,
  ])("gives nothing for %j", (path) => {
    expect(storePathOf(path)).toBeUndefined();
  });
});

describe("parseStorePaths", () => {
  it("drops duplicates and keeps order", () => {
    const a = `/nix/store/${hash}-a`;
    const b = `/nix/store/${"1".repeat(32)}-b`;
    expect(parseStorePaths([b, a, b]).map((storePath) => storePath.path)).toEqual([b, a]);
  });

  it("rejects the whole list at one bad path", () => {
    expect(() => parseStorePaths([`/nix/store/${hash}-a`, "/etc"])).toThrow(/"\/etc"/);
  });

  it("rejects a string instead of a list", () => {
    expect(() => parseStorePaths(`/nix/store/${hash}-a` as unknown as string[])).toThrow(
      /list of strings/,
    );
  });
});
