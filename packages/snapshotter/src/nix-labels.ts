import { Annotation } from "@nix-snapshotter/oci";
import { ErrorCode, SnapshotterError } from "./errors.js";
import { isCanonicalStorePath } from "./store-path.js";

/** `"true"` marks a layer whose store paths come from the labels below. */
export const nixLayerLabel: string = Annotation.NixLayer;
/** Per-path form: `containerd.io/snapshot/nix-store-path.<i>: <store path>`. */
export const nixStorePathLabelPrefix: string = Annotation.NixStorePathPrefix;
/** Closure form: the store path of a `closureInfo` whose `store-paths` file lists the closure. */
export const nixClosureLabel: string = Annotation.NixClosure;

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
  const indexed: Array<{ index: number; path: string }> = [];
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
    } else if (label.startsWith(nixStorePathLabelPrefix)) {
      any = true;
      const suffix = label.slice(nixStorePathLabelPrefix.length);
      if (!/^(0|[1-9][0-9]{0,8})$/.test(suffix)) {
        throw new SnapshotterError(
          ErrorCode.InvalidArgument,
          `label "${label}": index ${JSON.stringify(suffix)} is not a decimal number`,
        );
      }
      if (!isCanonicalStorePath(value, storeDir)) throw invalid(label, value, storeDir);
      indexed.push({ index: Number(suffix), path: value });
    } else if (label === nixClosureLabel) {
      any = true;
      if (!isCanonicalStorePath(value, storeDir)) throw invalid(label, value, storeDir);
      closure = value;
    }
  }
  if (!any) return undefined;
  indexed.sort((a, b) => a.index - b.index);
  const labelOf = new Map<string, string>();
  for (const entry of indexed) {
    if (!labelOf.has(entry.path)) labelOf.set(entry.path, nixStorePathLabelPrefix + entry.index);
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
    if (!isCanonicalStorePath(line, storeDir)) {
      throw new SnapshotterError(
        ErrorCode.InvalidArgument,
        `label "${nixClosureLabel}": closure ${closure} lists ${JSON.stringify(line)}, which is not a store path under ${storeDir}`,
      );
    }
    paths.add(line);
  }
  return [...paths];
}
