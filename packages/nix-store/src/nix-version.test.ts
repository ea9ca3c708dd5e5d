import { describe, expect, it } from "vitest";
import { nixFeatures, parseNixVersion } from "./nix-version.js";

describe("parseNixVersion", () => {
  it("reads Debian's Nix 2.8", () => {
    const version = parseNixVersion("nix-store (Nix) 2.8.0\n");
    expect(version).toMatchObject({ implementation: "nix", major: 2, minor: 8, patch: 0 });
    expect(nixFeatures(version)).toEqual({ internalJsonLog: true, maxSubstitutionJobs: false });
  });

  it("reads current Nix and pre-release suffixes", () => {
    const version = parseNixVersion("nix-store (Nix) 2.34.1pre20260101_abcdef");
    expect(version).toMatchObject({ major: 2, minor: 34, patch: 1 });
    expect(nixFeatures(version).maxSubstitutionJobs).toBe(true);
  });

  it("reads Lix", () => {
    const version = parseNixVersion("nix-store (Lix, like Nix) 2.91.1");
    expect(version.implementation).toBe("lix");
    expect(nixFeatures(version)).toEqual({ internalJsonLog: true, maxSubstitutionJobs: true });
  });

  it("knows Nix before 2.4 has no JSON log on legacy commands", () => {
    expect(nixFeatures(parseNixVersion("nix-store (Nix) 2.3.16")).internalJsonLog).toBe(false);
  });

  it("rejects text that is not a version", () => {
    expect(() => parseNixVersion("command not found")).toThrow(/cannot read the Nix version/);
  });
});
