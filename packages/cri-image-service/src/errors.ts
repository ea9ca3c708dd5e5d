import { Code, ConnectError } from "@connectrpc/connect";
import { ContainerdError } from "@nix-snapshotter/containerd-client";
import { NixStoreError } from "@nix-snapshotter/nix-store";
import { OciError } from "@nix-snapshotter/oci";

/** gRPC code names this package reports. */
export type ImageServiceErrorCode =
  | "InvalidArgument"
  | "NotFound"
  | "FailedPrecondition"
  | "Unavailable"
  | "Internal"
  | "DeadlineExceeded"
  | "Canceled";

export class ImageServiceError extends Error {
  readonly code: ImageServiceErrorCode;

  constructor(code: ImageServiceErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ImageServiceError";
    this.code = code;
  }
}

const codes: Record<string, Code> = {
  Canceled: Code.Canceled,
  Cancelled: Code.Canceled,
  Unknown: Code.Unknown,
  InvalidArgument: Code.InvalidArgument,
  DeadlineExceeded: Code.DeadlineExceeded,
  NotFound: Code.NotFound,
  AlreadyExists: Code.AlreadyExists,
  PermissionDenied: Code.PermissionDenied,
  ResourceExhausted: Code.ResourceExhausted,
  FailedPrecondition: Code.FailedPrecondition,
  Aborted: Code.Aborted,
  OutOfRange: Code.OutOfRange,
  Unimplemented: Code.Unimplemented,
  Internal: Code.Internal,
  Unavailable: Code.Unavailable,
  DataLoss: Code.DataLoss,
  Unauthenticated: Code.Unauthenticated,
};

/** Converts any failure to the ConnectError the kubelet sees, keeping code and message. */
export function toConnectError(error: unknown, prefix?: string): ConnectError {
  if (error instanceof ConnectError) return error;
  const message = (error as Error)?.message ?? String(error);
  const text = prefix === undefined ? message : `${prefix}: ${message}`;
  if (
    error instanceof ImageServiceError ||
    error instanceof ContainerdError ||
    error instanceof NixStoreError ||
    error instanceof OciError
  ) {
    return new ConnectError(text, codes[error.code] ?? Code.Unknown, undefined, undefined, error);
  }
  return new ConnectError(text, Code.Internal, undefined, undefined, error);
}
