/**
 * The one code set of every package: gRPC's status codes (without OK), named as connect-es names
 * them (`Code.Canceled`, `Code.NotFound`, ...). containerd's errdefs map onto the same set.
 */
export const ErrorCode = {
  Canceled: "Canceled",
  Unknown: "Unknown",
  InvalidArgument: "InvalidArgument",
  DeadlineExceeded: "DeadlineExceeded",
  NotFound: "NotFound",
  AlreadyExists: "AlreadyExists",
  PermissionDenied: "PermissionDenied",
  ResourceExhausted: "ResourceExhausted",
  FailedPrecondition: "FailedPrecondition",
  Aborted: "Aborted",
  OutOfRange: "OutOfRange",
  Unimplemented: "Unimplemented",
  Internal: "Internal",
  Unavailable: "Unavailable",
  DataLoss: "DataLoss",
  Unauthenticated: "Unauthenticated",
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Every code, in gRPC's numeric order. */
export const errorCodes: readonly ErrorCode[] = Object.freeze(Object.values(ErrorCode));

/** True when `value` is one of the code names (`"NotFound"`, not `"NOT_FOUND"` or `5`). */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.hasOwn(ErrorCode, value);
}
