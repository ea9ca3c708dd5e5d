import { ErrorCode, SnapshotterError } from "../errors.js";

/**
 * Bounds on the labels of one snapshot, checked by the service before a call reaches the
 * snapshotter, so that nothing stored can make containerd's own calls fail: containerd's client
 * receives at most 16 MiB per message (1.6's proxy plugin client; grpc-go's default is 4 MiB),
 * and a snapshot's labels travel whole in Stat, Update and every List (Walk) message, which
 * containerd's garbage collector reads.
 */
export interface LabelLimits {
  /** Key plus value of one label, in bytes: containerd's own limit (4096). */
  maxLabelBytes: number;
  /** Labels on one snapshot. */
  maxLabels: number;
  /** Keys plus values of all labels of one snapshot, in bytes. */
  maxTotalBytes: number;
}

/**
 * 4096 bytes per label (containerd's rule), 16 384 labels and 1 MiB in all per snapshot: a nix
 * layer naming 5000 store paths one label each takes about 0.5 MiB; 1 MiB leaves any one
 * snapshot's Info far below a 4 MiB message, and List sends its messages by size (see
 * `maxListMessageBytes`).
 */
export const defaultLabelLimits: Readonly<LabelLimits> = Object.freeze({
  maxLabelBytes: 4096,
  maxLabels: 16_384,
  maxTotalBytes: 1024 * 1024,
});

/** Size of a label map as it is bounded: the bytes of its keys and values (UTF-8). */
export function labelBytes(labels: Readonly<Record<string, string>>): number {
  let total = 0;
  for (const [key, value] of Object.entries(labels)) {
    total += Buffer.byteLength(key) + Buffer.byteLength(value);
  }
  return total;
}

function quote(text: string): string {
  return text.length <= 64 ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, 64))}...`;
}

/**
 * Throws InvalidArgument, naming the bound, when `labels` exceed `limits`. `what` names the
 * snapshot (e.g. `snapshot "k8s.io/3/x"`).
 */
export function checkLabelLimits(
  labels: Readonly<Record<string, string>>,
  what: string,
  limits: Readonly<LabelLimits> = defaultLabelLimits,
): void {
  const entries = Object.entries(labels);
  if (entries.length > limits.maxLabels) {
    throw new SnapshotterError(
      ErrorCode.InvalidArgument,
      `${what}: ${entries.length} labels, more than maxLabels (${limits.maxLabels})`,
    );
  }
  let total = 0;
  for (const [key, value] of entries) {
    const size = Buffer.byteLength(key) + Buffer.byteLength(value);
    if (size > limits.maxLabelBytes) {
      throw new SnapshotterError(
        ErrorCode.InvalidArgument,
        `${what}: label ${quote(key)} is ${size} bytes (key and value), more than maxLabelBytes (${limits.maxLabelBytes})`,
      );
    }
    total += size;
  }
  if (total > limits.maxTotalBytes) {
    throw new SnapshotterError(
      ErrorCode.InvalidArgument,
      `${what}: labels total ${total} bytes, more than maxTotalBytes (${limits.maxTotalBytes})`,
    );
  }
}

/**
 * The labels an Update leaves on a snapshot that has `current`, as containerd's metadata store
 * computes them: an empty mask or `labels` replaces them all, `labels.<key>` sets or (with an
 * empty or absent value) removes one key. Other paths are left for the snapshotter to refuse.
 */
export function labelsAfterUpdate(
  current: Readonly<Record<string, string>>,
  requested: Readonly<Record<string, string>>,
  paths: readonly string[],
): Record<string, string> {
  let labels: Record<string, string> = { ...current };
  if (paths.length === 0) labels = { ...requested };
  for (const path of paths) {
    if (path === "labels") labels = { ...requested };
    else if (path.startsWith("labels.")) {
      const key = path.slice("labels.".length);
      labels[key] = Object.hasOwn(requested, key) ? requested[key]! : "";
    }
  }
  for (const [key, value] of Object.entries(labels)) if (value === "") delete labels[key];
  return labels;
}
