import { CodedError, type CodedErrorOptions, type ErrorCode } from "@nix-snapshotter/errdefs";

/** The workspace's one code set (`@nix-snapshotter/errdefs`). */
export type OciErrorCode = ErrorCode;

export type OciErrorOptions = CodedErrorOptions;

/**
 * Every failure of this package is an `OciError` (`InvalidArgument`, `NotFound`,
 * `FailedPrecondition`, `DataLoss` or `Internal` in practice).
 */
export class OciError extends CodedError {
  static override readonly marker: symbol = Symbol.for("@nix-snapshotter/oci.OciError");
  override readonly name: string = "OciError";
}

export function invalidArgument(message: string, options?: OciErrorOptions): OciError {
  return new OciError("InvalidArgument", message, options);
}
