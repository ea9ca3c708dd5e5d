// Every generated file descriptor of this package, for tests that check them as a whole.
import type { DescFile } from "@bufbuild/protobuf";
import * as content from "./content-v1.js";
import * as cri from "./cri-v1.js";
import * as diff from "./diff-v1.js";
import * as health from "./health-v1.js";
import * as images from "./images-v1.js";
import * as leases from "./leases-v1.js";
import * as namespaces from "./namespaces-v1.js";
import * as snapshots from "./snapshots-v1.js";
import * as streaming from "./streaming-v1.js";
import * as transfer from "./transfer-v1.js";
import * as types from "./types.js";
import * as version from "./version-v1.js";

const modules: readonly Record<string, unknown>[] = [
  content,
  cri,
  diff,
  health,
  images,
  leases,
  namespaces,
  snapshots,
  streaming,
  transfer,
  types,
  version,
];

function isFile(value: unknown): value is DescFile {
  return (
    typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "file"
  );
}

/** The generated files (`file_*` exports), each once, sorted by name. */
export function generatedFiles(): DescFile[] {
  const files = new Map<string, DescFile>();
  for (const module of modules) {
    for (const value of Object.values(module)) {
      if (isFile(value)) {
        files.set(value.name, value);
      }
    }
  }
  return [...files.values()].sort((left, right) => left.name.localeCompare(right.name));
}
