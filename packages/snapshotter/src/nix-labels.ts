import { isStorePath } from "@nix-snapshotter/nix-store";
import { Annotation } from "@nix-snapshotter/oci";
import { ErrorCode, SnapshotterError } from "./errors.js";

/** `"true"` marks a layer whose store paths come from the labels below. */
export const nixLayerLabel: string = Annotation.NixLayer;
/** Per-path form: `containerd.io/snapshot/nix-store-path.<i>: <store path>`. */
export const nixStorePathLabelPrefix: string = Annotation.NixStorePathPrefix;
/** Closure form: the store path of a `closureInfo` whose `store-paths` file lists the closure. */
export const nixClosureLabel: string = Annotation.NixClosure;
/**
 * The earliest Go releases' per-path form: `containerd.io/snapshot/nix/store.<i>: <hash>-<name>`
 * (a base name, relative to the store directory). Read for compatibility with old images.
 */
export const legacyNixStoreLabelPrefix = "containerd.io/snapshot/nix/store.";

/** What the labels of a snapshot ask for. */
export interface NixLayerRequest {
  /** Per-path form, in index order, deduplicated, each canonical. */
  storePaths: string[];
  /** Closure form: the closure-info store path (canonical), if given. */
  closure?: string;
  /** The label each per-path store path came from (for error messages). */
  labelOf: Map<string, string>;
}

function invalid(label: string, value: string, storeDir: string): SnapshotterError {
  return new SnapshotterError(
    ErrorCode.InvalidArgument,
    `label "${label}": ${JSON.stringify(value)} is not a store path under ${storeDir}`,
  );
}

/**
 * Reads both annotation forms from snapshot labels. Returns undefined when the labels carry no
 * nix label at all. Every value must be a canonical store path; otherwise InvalidArgument
 * naming the label (nothing is realised, linked or mounted).
 */
export function parseNixLabels(
  labels: Readonly<Record<string, string>>,
  storeDir: string,
): NixLayerRequest | undefined {
  const indexed: Array<{ index: number; path: string; label: string }> = [];
  let closure: string | undefined;
  let any = false;
  for (const [label, value] of Object.entries(labels)) {
    if (label === nixLayerLabel) {
      any = true;
      if (value !== "true") {
        throw new SnapshotterError(
          ErrorCode.InvalidArgument,
          `label "${label}": expected "true", got ${JSON.stringify(value)}`,
        );
      }
    } else if (
      label.startsWith(nixStorePathLabelPrefix) ||
      label.startsWith(legacyNixStoreLabelPrefix)
    ) {
      any = true;
      const legacy = label.startsWith(legacyNixStoreLabelPrefix);
      const suffix = label.slice(
        (legacy ? legacyNixStoreLabelPrefix : nixStorePathLabelPrefix).length,
      );
      if (!/^(0|[1-9][0-9]{0,8})$/.test(suffix)) {
        throw new SnapshotterError(
          ErrorCode.InvalidArgument,
          `label "${label}": index ${JSON.stringify(suffix)} is not a decimal number`,
        );
      }
      const path = legacy && !value.includes("/") ? `${storeDir}/${value}` : value;
      if (!isStorePath(path, { storeDir })) throw invalid(label, value, storeDir);
      indexed.push({ index: Number(suffix), path, label });
    } else if (label === nixClosureLabel) {
      any = true;
      if (!isStorePath(value, { storeDir })) throw invalid(label, value, storeDir);
      closure = value;
    }
  }
  if (!any) return undefined;
  // Current-form labels first, then legacy ones, each in index order.
  indexed.sort(
    (a, b) =>
      Number(a.label.startsWith(legacyNixStoreLabelPrefix)) -
        Number(b.label.startsWith(legacyNixStoreLabelPrefix)) || a.index - b.index,
  );
  const labelOf = new Map<string, string>();
  for (const entry of indexed) {
    if (!labelOf.has(entry.path)) labelOf.set(entry.path, entry.label);
  }
  const storePaths = [...labelOf.keys()];
  return closure === undefined ? { storePaths, labelOf } : { storePaths, closure, labelOf };
}

/**
 * Validates the lines of a closure-info `store-paths` file: every non-empty line must be a
 * canonical store path. Returns them deduplicated in file order.
 */
export function parseClosureStorePaths(
  lines: readonly string[],
  closure: string,
  storeDir: string,
): string[] {
  const paths = new Set<string>();
  for (const line of lines) {
    if (line === "") continue;
    if (!isStorePath(line, { storeDir })) {
      throw new SnapshotterError(
        ErrorCode.InvalidArgument,
        `label "${nixClosureLabel}": closure ${closure} lists ${JSON.stringify(line)}, which is not a store path under ${storeDir}`,
      );
    }
    paths.add(line);
  }
  return [...paths];
}
