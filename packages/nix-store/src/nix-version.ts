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

/** What the installed Nix supports: from its version, then confirmed by asking Nix itself. */
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

/** What a Nix of this version is expected to support (the prior of {@link detectNixFeatures}). */
export function nixFeatures(version: NixVersion): NixFeatures {
  const atLeast = (major: number, minor: number) =>
    version.major > major || (version.major === major && version.minor >= minor);
  if (version.implementation === "lix") {
    return { internalJsonLog: true, maxSubstitutionJobs: atLeast(2, 90) };
  }
  return { internalJsonLog: atLeast(2, 4), maxSubstitutionJobs: atLeast(2, 17) };
}

/** A setting no Nix knows: its "unknown setting" warning shows that Nix reports them. */
export const FEATURE_PROBE_SETTING = "nix-snapshotter-probe";

/**
 * The arguments of the feature probe: a validity check of one path that cannot exist, with the
 * JSON log and two settings, one that only newer Nix knows and one that no Nix knows. It reads
 * the store (also through a daemon), changes nothing and costs one short process.
 */
export function featureProbeArgs(storeDir: string): string[] {
  return [
    "--check-validity",
    "--print-invalid",
    "--log-format",
    "internal-json",
    "--option",
    "max-substitution-jobs",
    "1",
    "--option",
    FEATURE_PROBE_SETTING,
    "1",
    `${storeDir}/${"0".repeat(32)}-${FEATURE_PROBE_SETTING}`,
  ];
}

/**
 * Corrects the version's expectations with what the probe ({@link featureProbeArgs}) showed.
 * Evidence wins over the version number, and its absence keeps the version's answer:
 * - JSON log: any `@nix ` line means yes; a refused `--log-format` means no.
 * - `max-substitution-jobs`: once Nix has warned about the made-up setting (so it reports unknown
 *   settings), a warning about this one means no, its absence means yes.
 */
export function detectNixFeatures(
  prior: NixFeatures,
  probe: { exitCode: number | null; stderr: string },
): NixFeatures {
  const detected = { ...prior };
  const lines = probe.stderr.split("\n");
  if (lines.some((line) => line.startsWith("@nix "))) detected.internalJsonLog = true;
  else if (probe.exitCode !== 0 && /log-format/.test(probe.stderr))
    detected.internalJsonLog = false;
  // The messages as text: JSON log entries unwrapped, colours removed.
  const text = lines
    .map((line) => {
      if (!line.startsWith("@nix ")) return line;
      try {
        const entry = JSON.parse(line.slice(5)) as { msg?: unknown };
        return typeof entry.msg === "string" ? entry.msg : "";
      } catch {
        return line;
      }
    })
    .join("\n")
    .replace(/\u001b\[[0-9;]*[A-Za-z]/g, "");
  const unknown = (name: string) => text.includes(`unknown setting '${name}'`);
  if (unknown(FEATURE_PROBE_SETTING)) {
    detected.maxSubstitutionJobs = !unknown("max-substitution-jobs");
  }
  return detected;
}
