/**
 * Error codes of the snapshotter, equal to gRPC status codes (the names and numbers of
 * `google.rpc.Code`), so the service adapter maps them one to one.
 */
export const ErrorCode = {
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const codeNames = new Map<number, string>(
  Object.entries(ErrorCode).map(([name, code]) => [code, name]),
);

/** The name of a code, e.g. `"NotFound"`. */
export function errorCodeName(code: ErrorCode): string {
  return codeNames.get(code) ?? "Unknown";
}

export interface SnapshotterErrorOptions {
  cause?: unknown;
}

/**
 * The one error class of the snapshotter. `code` is a gRPC status code; the message names the
 * snapshot, label or path involved.
 */
export class SnapshotterError extends Error {
  override readonly name = "SnapshotterError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options: SnapshotterErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }

  /** True when `error` is a SnapshotterError, optionally with the given code. */
  static is(error: unknown, code?: ErrorCode): error is SnapshotterError {
    return error instanceof SnapshotterError && (code === undefined || error.code === code);
  }

  /**
   * Wraps any thrown value: SnapshotterErrors pass through, a full disk or quota becomes
   * ResourceExhausted, anything else Internal.
   */
  static from(error: unknown, message?: string): SnapshotterError {
    if (error instanceof SnapshotterError) return error;
    const detail = error instanceof Error ? error.message : String(error);
    return new SnapshotterError(
      isNoSpace(error) ? ErrorCode.ResourceExhausted : ErrorCode.Internal,
      message === undefined ? detail : `${message}: ${detail}`,
      { cause: error },
    );
  }
}

/** SQLite's result code for "database or disk is full". */
const sqliteFull = 13;

/**
 * True for a full file system or exhausted quota: `ENOSPC`/`EDQUOT` from a file system call, or
 * SQLite's `SQLITE_FULL` (node:sqlite reports it in `errcode`).
 */
export function isNoSpace(error: unknown): boolean {
  const value = error as { code?: unknown; errcode?: unknown } | null;
  if (value?.code === "ENOSPC" || value?.code === "EDQUOT") return true;
  return typeof value?.errcode === "number" && (value.errcode & 0xff) === sqliteFull;
}
