/**
 * The closed set of error codes of this package. They are gRPC's codes (as in containerd's
 * errdefs), so a service adapter converts them to a gRPC status one to one.
 */
export type NixStoreErrorCode =
  | "InvalidArgument"
  | "NotFound"
  | "AlreadyExists"
  | "PermissionDenied"
  | "FailedPrecondition"
  | "Unavailable"
  | "Internal"
  | "Canceled"
  | "DeadlineExceeded";

export interface NixStoreErrorOptions {
  cause?: unknown;
  /** Store paths that the failed operation could not make valid (realise) or rejected. */
  failedPaths?: readonly string[];
  /** The last lines of the Nix process's stderr, when a process was involved. */
  stderrTail?: string;
}

/** Every failure of this package is a `NixStoreError` whose message names the path involved. */
export class NixStoreError extends Error {
  override readonly name = "NixStoreError";
  readonly code: NixStoreErrorCode;
  readonly failedPaths: readonly string[];
  readonly stderrTail: string;

  constructor(code: NixStoreErrorCode, message: string, options: NixStoreErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.failedPaths = options.failedPaths ?? [];
    this.stderrTail = options.stderrTail ?? "";
  }
}

/** True when `error` is a {@link NixStoreError}, optionally with the given code. */
export function isNixStoreError(error: unknown, code?: NixStoreErrorCode): error is NixStoreError {
  return error instanceof NixStoreError && (code === undefined || error.code === code);
}
