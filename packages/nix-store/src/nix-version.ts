import { NixStoreError } from "./errors.js";

/** The Nix implementation and version found by `nix-store --version`. */
export interface NixVersion {
  /** `nix` or `lix` (Lix prints "Lix, like Nix"). */
  implementation: "nix" | "lix";
  major: number;
  minor: number;
  patch: number;
  /** The line `nix-store --version` printed. */
  text: string;
}

/** What the installed Nix supports, derived from its version. */
export interface NixFeatures {
  /** `--log-format internal-json` on the legacy commands (Nix >= 2.4, all Lix). */
  internalJsonLog: boolean;
  /**
   * A separate `max-substitution-jobs` setting (Nix >= 2.17, Lix). Older Nix runs
   * substitutions in build slots, so parallel substitution needs `--max-jobs`.
   */
  maxSubstitutionJobs: boolean;
}

/** Parses the first line of `nix-store --version`. */
export function parseNixVersion(text: string): NixVersion {
  const line = text.trim().split("\n")[0] ?? "";
  const match = /\(([^)]*)\)\s+(\d+)\.(\d+)(?:\.(\d+))?/.exec(line);
  if (match === null) {
    throw new NixStoreError(
      "FailedPrecondition",
      `cannot read the Nix version from ${JSON.stringify(line)}`,
    );
  }
  return {
    implementation: /lix/i.test(match[1] ?? "") ? "lix" : "nix",
    major: Number(match[2]),
    minor: Number(match[3]),
    patch: Number(match[4] ?? 0),
    text: line,
  };
}

export function nixFeatures(version: NixVersion): NixFeatures {
  const atLeast = (major: number, minor: number) =>
    version.major > major || (version.major === major && version.minor >= minor);
  if (version.implementation === "lix") {
    return { internalJsonLog: true, maxSubstitutionJobs: atLeast(2, 90) };
  }
  return { internalJsonLog: atLeast(2, 4), maxSubstitutionJobs: atLeast(2, 17) };
}
