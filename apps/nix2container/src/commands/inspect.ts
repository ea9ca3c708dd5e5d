import { realpath } from "node:fs/promises";
import { CodedError } from "@nix-snapshotter/errdefs";
import {
  type ArchiveImage,
  defaultArchiveLimits,
  formatBytes,
  loadArchiveFile,
  readNixLayerAnnotations,
} from "@nix-snapshotter/oci";
import type { Command } from "commander";
import { CliError } from "../cli-error.js";

/** What `inspect` prints (as JSON with `--json`). */
export interface InspectResult {
  references: string[];
  format: "oci" | "docker";
  manifest: string;
  platform: string;
  config: ArchiveImage["config"];
  layers: Array<{
    digest: string;
    mediaType: string;
    size: number;
    nix?: { storePaths: number; closure?: string };
  }>;
  storePaths: string[];
  closures: string[];
}

export function inspectImage(image: ArchiveImage): InspectResult {
  const storePaths = new Set<string>();
  const closures: string[] = [];
  const layers = image.layers.map(({ descriptor }) => {
    const nix = readNixLayerAnnotations(descriptor.annotations);
    const layer: InspectResult["layers"][number] = {
      digest: descriptor.digest,
      mediaType: descriptor.mediaType,
      size: descriptor.size,
    };
    if (nix !== undefined) {
      for (const path of nix.storePaths) storePaths.add(path);
      if (nix.closure !== undefined) closures.push(nix.closure);
      layer.nix =
        nix.closure === undefined
          ? { storePaths: nix.storePaths.length }
          : { storePaths: nix.storePaths.length, closure: nix.closure };
    }
    return layer;
  });
  const { config } = image;
  return {
    references: image.names,
    format: image.format,
    manifest: image.manifestDescriptor.digest,
    platform: [config.os, config.architecture, config.variant]
      .filter((part) => part !== undefined)
      .join("/"),
    config,
    layers,
    storePaths: [...storePaths],
    closures,
  };
}

export function formatInspect(result: InspectResult): string {
  const lines = [
    `Reference:   ${result.references.length === 0 ? "(none)" : result.references.join(", ")}`,
    `Format:      ${result.format}`,
    `Manifest:    ${result.manifest}`,
    `Platform:    ${result.platform}`,
    "Config:",
    ...JSON.stringify(result.config.config ?? {}, null, 2)
      .split("\n")
      .map((line) => `  ${line}`),
    "Layers:",
    ...result.layers.map((layer) => {
      const nix =
        layer.nix === undefined
          ? ""
          : `  nix: ${layer.nix.storePaths} store paths${layer.nix.closure === undefined ? "" : `, closure ${layer.nix.closure}`}`;
      return `  ${layer.digest}  ${layer.mediaType}  ${layer.size} bytes${nix}`;
    }),
    `Store paths (${result.storePaths.length}):`,
    ...result.storePaths.map((path) => `  ${path}`),
  ];
  if (result.closures.length > 0)
    lines.push("Closures:", ...result.closures.map((path) => `  ${path}`));
  return `${lines.join("\n")}\n`;
}

/** The bounds `inspect` reads an archive within, for its help text. */
export const inspectLimitsHelp = `archives over ${formatBytes(defaultArchiveLimits.maxArchiveBytes)} (or ${formatBytes(defaultArchiveLimits.maxUncompressedBytes)} decompressed) are refused`;

export function registerInspectCommand(program: Command): void {
  program
    .command("inspect")
    .description("print an archive's reference, platform, config and store paths")
    .argument("<archive>", `OCI or docker archive (plain, gzip or zstd); ${inspectLimitsHelp}`)
    .option("--json", "print JSON")
    .action(async (path: string, flags: { json?: boolean }) => {
      let result: InspectResult;
      try {
        // Streamed: a regular file only, bounded (defaultArchiveLimits), never read whole.
        // The user's own links (nix-build's `result`) are followed here; the file they point
        // at is then opened without following links and must be a regular file.
        result = inspectImage(await loadArchiveFile(await realpath(path)));
      } catch (error) {
        if (CodedError.is(error) || (error as NodeJS.ErrnoException).code !== undefined)
          throw new CliError(`cannot read archive "${path}": ${(error as Error).message}`, {
            cause: error,
          });
        throw error;
      }
      process.stdout.write(
        flags.json === true ? `${JSON.stringify(result, null, 2)}\n` : formatInspect(result),
      );
    });
}
