import { status as Status } from "@grpc/grpc-js";

/** The closed set of error codes, named as gRPC names them (containerd's errdefs map onto them). */
export type ContainerdErrorCode =
  | "Cancelled"
  | "Unknown"
  | "InvalidArgument"
  | "DeadlineExceeded"
  | "NotFound"
  | "AlreadyExists"
  | "PermissionDenied"
  | "ResourceExhausted"
  | "FailedPrecondition"
  | "Aborted"
  | "OutOfRange"
  | "Unimplemented"
  | "Internal"
  | "Unavailable"
  | "DataLoss"
  | "Unauthenticated";

export interface ContainerdErrorOptions {
  cause?: unknown;
}

/** Every failure of this package: a gRPC code name and a message naming what was involved. */
export class ContainerdError extends Error {
  readonly code: ContainerdErrorCode;

  constructor(code: ContainerdErrorCode, message: string, options: ContainerdErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ContainerdError";
    this.code = code;
  }
}

const codeNames: Record<number, ContainerdErrorCode> = {
  [Status.CANCELLED]: "Cancelled",
  [Status.UNKNOWN]: "Unknown",
  [Status.INVALID_ARGUMENT]: "InvalidArgument",
  [Status.DEADLINE_EXCEEDED]: "DeadlineExceeded",
  [Status.NOT_FOUND]: "NotFound",
  [Status.ALREADY_EXISTS]: "AlreadyExists",
  [Status.PERMISSION_DENIED]: "PermissionDenied",
  [Status.RESOURCE_EXHAUSTED]: "ResourceExhausted",
  [Status.FAILED_PRECONDITION]: "FailedPrecondition",
  [Status.ABORTED]: "Aborted",
  [Status.OUT_OF_RANGE]: "OutOfRange",
  [Status.UNIMPLEMENTED]: "Unimplemented",
  [Status.INTERNAL]: "Internal",
  [Status.UNAVAILABLE]: "Unavailable",
  [Status.DATA_LOSS]: "DataLoss",
  [Status.UNAUTHENTICATED]: "Unauthenticated",
};

/** The code name of a numeric gRPC status (`Unknown` for anything outside the set). */
export function codeFromStatus(code: number): ContainerdErrorCode {
  return codeNames[code] ?? "Unknown";
}

/** The numeric gRPC status of a code name. */
export function statusFromCode(code: ContainerdErrorCode): number {
  for (const [number, name] of Object.entries(codeNames)) if (name === code) return Number(number);
  return Status.UNKNOWN;
}

/** True when `error` is a {@link ContainerdError} with one of the given codes (any code if none). */
export function isContainerdError(
  error: unknown,
  ...codes: ContainerdErrorCode[]
): error is ContainerdError {
  return error instanceof ContainerdError && (codes.length === 0 || codes.includes(error.code));
}
