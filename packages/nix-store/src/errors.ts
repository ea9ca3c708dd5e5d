import { CodedError, type CodedErrorOptions, type ErrorCode } from "@nix-snapshotter/errdefs";

/** The workspace's one code set (`@nix-snapshotter/errdefs`); a service adapter converts it. */
export type NixStoreErrorCode = ErrorCode;

export interface NixStoreErrorOptions extends CodedErrorOptions {
  /** Store paths that the failed operation could not make valid (realise) or rejected. */
  failedPaths?: readonly string[];
  /** The last lines of the Nix process's stderr, when a process was involved. */
  stderrTail?: string;
}

/** Every failure of this package is a `NixStoreError` whose message names the path involved. */
export class NixStoreError extends CodedError {
  static override readonly marker: symbol = Symbol.for("@nix-snapshotter/nix-store.NixStoreError");
  override readonly name: string = "NixStoreError";
  readonly failedPaths: readonly string[];
  readonly stderrTail: string;

  constructor(code: ErrorCode, message: string, options: NixStoreErrorOptions = {}) {
    super(code, message, options);
    this.failedPaths = options.failedPaths ?? [];
    this.stderrTail = options.stderrTail ?? "";
  }
}

/** True when `error` is a {@link NixStoreError}, optionally with the given code. */
export function isNixStoreError(error: unknown, code?: ErrorCode): error is NixStoreError {
  return code === undefined ? NixStoreError.is(error) : NixStoreError.is(error, code);
}
