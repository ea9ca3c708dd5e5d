import { ErrorCode } from "./error-code.js";

/**
 * The numeric gRPC status of each code (`google.rpc.Code`; connect-es's `Code` enum and grpc-js's
 * `status` have the same numbers). Pure data: converting at a gRPC edge needs no gRPC library here.
 */
export const grpcStatusByCode: Readonly<Record<ErrorCode, number>> = Object.freeze({
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
  Unauthenticated: 16,
});

const codeByGrpcStatus: ReadonlyMap<number, ErrorCode> = new Map(
  (Object.keys(grpcStatusByCode) as ErrorCode[]).map((code) => [grpcStatusByCode[code], code]),
);

/** The numeric gRPC status of a code. */
export function codeToGrpcStatus(code: ErrorCode): number {
  return grpcStatusByCode[code] ?? grpcStatusByCode[ErrorCode.Unknown];
}

/**
 * The code of a numeric gRPC status; `Unknown` for a number outside the set (and for 0, OK, which
 * is no error).
 */
export function codeFromGrpcStatus(status: number): ErrorCode {
  return codeByGrpcStatus.get(status) ?? ErrorCode.Unknown;
}
