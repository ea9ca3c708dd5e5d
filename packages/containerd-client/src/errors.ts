import { Metadata, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import {
  CodedError,
  type CodedErrorOptions,
  codeFromGrpcStatus,
  codeToGrpcStatus,
  type ErrorCode,
  errorCodeOf,
  messageOf,
} from "@nix-snapshotter/errdefs";

/** The workspace's one code set (`@nix-snapshotter/errdefs`); containerd's errdefs map onto it. */
export type ContainerdErrorCode = ErrorCode;

export type ContainerdErrorOptions = CodedErrorOptions;

/** Every failure of this package: a code and a message naming the RPC and what was involved. */
export class ContainerdError extends CodedError {
  static override readonly marker: symbol = Symbol.for(
    "@nix-snapshotter/containerd-client.ContainerdError",
  );
  override readonly name: string = "ContainerdError";
}

/** True when `error` is a {@link ContainerdError} with one of the given codes (any code if none). */
export function isContainerdError(error: unknown, ...codes: ErrorCode[]): error is ContainerdError {
  return ContainerdError.is(error, ...codes);
}

/**
 * The one conversion from a grpc-js status: a failed call to containerd becomes a ContainerdError
 * whose message names the RPC (and the server, when it is not reachable).
 */
export function toContainerdError(error: unknown, rpc: string, target: string): ContainerdError {
  if (ContainerdError.is(error)) return error;
  const serviceError = error as Partial<ServiceError> | null;
  if (typeof serviceError?.code === "number") {
    const code = codeFromGrpcStatus(serviceError.code);
    const details = serviceError.details || serviceError.message || "no details";
    const message =
      code === "Unavailable"
        ? `${rpc}: ${target} is not reachable: ${details}`
        : `${rpc}: ${details}`;
    return new ContainerdError(code, message, { cause: error });
  }
  return new ContainerdError("Unknown", `${rpc}: ${messageOf(error)}`, { cause: error });
}

/**
 * The other direction, for a grpc-js server (test doubles of containerd): the status a coded error
 * (or anything else, as `CodedError.from` codes it) is answered with.
 */
export function toGrpcStatus(error: unknown): StatusObject {
  return {
    code: codeToGrpcStatus(errorCodeOf(error)),
    details: messageOf(error),
    metadata: new Metadata(),
  };
}
