import { CodedError, type CodedErrorOptions, ErrorCode } from "@nix-snapshotter/errdefs";

export { isNoSpace } from "@nix-snapshotter/errdefs";
/**
 * The snapshotter's codes: the workspace's one code set (`@nix-snapshotter/errdefs`), gRPC's codes
 * by name; the service adapter converts them to a gRPC status.
 */
export { ErrorCode };

export type SnapshotterErrorOptions = CodedErrorOptions;

/**
 * The one error class of the snapshotter. The message names the snapshot, label or path involved.
 * `SnapshotterError.is(error, ErrorCode.NotFound)` and `SnapshotterError.from(error, context)`
 * come from `CodedError`: `from` keeps a SnapshotterError as it is, keeps another package's code,
 * maps abort reasons and a full disk or quota (ResourceExhausted), and anything else is Internal.
 */
export class SnapshotterError extends CodedError {
  static override readonly marker: symbol = Symbol.for(
    "@nix-snapshotter/snapshotter.SnapshotterError",
  );
  override readonly name: string = "SnapshotterError";
}
