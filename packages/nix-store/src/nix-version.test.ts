import { describe, expect, it } from "vitest";
import {
  detectNixFeatures,
  FEATURE_PROBE_SETTING,
  featureProbeArgs,
  nixFeatures,
  parseNixVersion,
} from "./nix-version.js";

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

describe("detectNixFeatures", () => {
  const old = { internalJsonLog: false, maxSubstitutionJobs: false };
  const current = { internalJsonLog: true, maxSubstitutionJobs: true };
  // What Nix 2.8 printed for the probe (seen on Debian 12), and what 2.34 printed (sid).
  const json = (msg: string) => `@nix ${JSON.stringify({ action: "msg", level: 1, msg })}`;
  const warning = (name: string) => `\u001b[35;1mwarning:\u001b[0m unknown setting '${name}'`;
  const nix28 = `${json(warning("max-substitution-jobs"))}\n${json(warning(FEATURE_PROBE_SETTING))}\n`;
  const nix234 = `${json(warning(FEATURE_PROBE_SETTING))}\n`;

  it("probes with a path that cannot exist and both settings", () => {
    const args = featureProbeArgs("/nix/store");
    expect(args.slice(0, 4)).toEqual([
      "--check-validity",
      "--print-invalid",
      "--log-format",
      "internal-json",
    ]);
    expect(args).toContain("max-substitution-jobs");
    expect(args).toContain(FEATURE_PROBE_SETTING);
    expect(args.at(-1)).toBe(`/nix/store/${"0".repeat(32)}-${FEATURE_PROBE_SETTING}`);
  });

  it("reads Nix 2.8's and 2.34's answers whatever the version said", () => {
    expect(detectNixFeatures(current, { exitCode: 0, stderr: nix28 })).toEqual({
      internalJsonLog: true,
      maxSubstitutionJobs: false,
    });
    expect(detectNixFeatures(old, { exitCode: 0, stderr: nix234 })).toEqual(current);
  });

  it("reads plain warnings, and a refused --log-format", () => {
    const plain = `warning: unknown setting 'max-substitution-jobs'\nwarning: unknown setting '${FEATURE_PROBE_SETTING}'\n`;
    expect(detectNixFeatures(current, { exitCode: 0, stderr: plain }).maxSubstitutionJobs).toBe(
      false,
    );
    expect(
      detectNixFeatures(current, {
        exitCode: 1,
        stderr: "error: unrecognised flag '--log-format'",
      }),
    ).toEqual({ internalJsonLog: false, maxSubstitutionJobs: true });
  });

  it("keeps the version's answer without evidence (a failed probe, nothing printed)", () => {
    expect(detectNixFeatures(old, { exitCode: 0, stderr: "" })).toEqual(old);
    expect(detectNixFeatures(current, { exitCode: 1, stderr: "error: cannot connect" })).toEqual(
      current,
    );
  });
});
