import { ErrorCode } from "./error-code.js";

export interface CodedErrorOptions {
  cause?: unknown;
}

/** A class of coded errors as `is()` and `from()` see it: its marker and its instances' type. */
export interface CodedErrorClass<T extends CodedError> {
  readonly marker: symbol;
  readonly prototype: T;
}

/** A class of coded errors whose constructor takes `(code, message, options)`. */
export type CodedErrorConstructor<T extends CodedError> = CodedErrorClass<T> &
  (new (
    code: ErrorCode,
    message: string,
    options?: CodedErrorOptions,
  ) => T);

/**
 * The base of every error of this workspace: a {@link ErrorCode}, a message naming the snapshot,
 * store path, reference or file involved, and the `cause` when one was caught.
 *
 * Each class has a `marker` (a `Symbol.for` key) set on its instances, so `is()` recognises an
 * error made by another copy of the package (two versions in one `node_modules`), where
 * `instanceof` would not. A subclass that needs its own `is()` declares its own marker:
 * `static override readonly marker = Symbol.for("@nix-snapshotter/<package>.<Class>")`.
 */
export class CodedError extends Error {
  static readonly marker: symbol = Symbol.for("@nix-snapshotter/errdefs.CodedError");

  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options: CodedErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CodedError";
    this.code = code;
    // Mark the instance with the marker of its class and of every class above it.
    let type: unknown = new.target;
    while (typeof type === "function") {
      if (Object.hasOwn(type, "marker")) {
        Object.defineProperty(this, (type as unknown as { marker: symbol }).marker, {
          value: true,
        });
      }
      if (type === CodedError) break;
      type = Object.getPrototypeOf(type);
    }
  }

  /**
   * True when `error` is an instance of this class (by marker, from any copy of the package) and,
   * when codes are given, has one of them. `CodedError.is(e)` accepts every package's errors,
   * `SnapshotterError.is(e, ErrorCode.NotFound)` only the snapshotter's.
   */
  static is<T extends CodedError>(
    this: CodedErrorClass<T>,
    error: unknown,
    ...codes: readonly ErrorCode[]
  ): error is T {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class is() was called on (a subclass's marker)
    return hasMarker(error, this.marker, codes);
  }

  /**
   * Wraps any thrown value in this class, like connect-es's `ConnectError.from`: an instance of
   * this class is returned as it is; another coded error keeps its code; an abort keeps its
   * reason (`TimeoutError` is DeadlineExceeded, `AbortError` Canceled); a full disk or quota is
   * ResourceExhausted; anything else Internal. `message` goes in front of the error's own.
   */
  static from<T extends CodedError>(
    this: CodedErrorConstructor<T>,
    error: unknown,
    message?: string,
  ): T {
    // biome-ignore lint/complexity/noThisInStatic: `this` is the class from() was called on
    if (hasMarker(error, this.marker, [])) return error as T;
    const detail = messageOf(error);
    return new this(errorCodeOf(error), message === undefined ? detail : `${message}: ${detail}`, {
      cause: error,
    });
  }
}

function hasMarker(error: unknown, marker: symbol, codes: readonly ErrorCode[]): boolean {
  if (typeof error !== "object" || error === null) return false;
  if ((error as Record<symbol, unknown>)[marker] !== true) return false;
  return codes.length === 0 || codes.includes((error as CodedError).code);
}

/** The message of any thrown value. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The code of any thrown value: a coded error's own code; for anything else the code
 * {@link CodedError.from} gives it (abort reasons, full disk, else Internal).
 */
export function errorCodeOf(error: unknown): ErrorCode {
  if (CodedError.is(error)) return error.code;
  const name = (error as { name?: unknown } | null)?.name;
  if (name === "TimeoutError") return ErrorCode.DeadlineExceeded;
  if (name === "AbortError") return ErrorCode.Canceled;
  if (isNoSpace(error)) return ErrorCode.ResourceExhausted;
  return ErrorCode.Internal;
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
