import { type Code, ConnectError } from "@connectrpc/connect";
import { CodedError, errorCodeOf, messageOf } from "../coded-error.js";
import { codeFromGrpcStatus, codeToGrpcStatus } from "../grpc-status.js";

/**
 * The ConnectError a connect-es server answers for anything a handler threw: a ConnectError as it
 * is; otherwise the code {@link errorCodeOf} gives (a coded error's own, an abort's, a full
 * disk's, else Internal) and the error's message, after `prefix` when given. The error is kept as
 * the cause.
 */
export function toConnectError(error: unknown, prefix?: string): ConnectError {
  if (error instanceof ConnectError) return error;
  const message = messageOf(error);
  return new ConnectError(
    prefix === undefined ? message : `${prefix}: ${message}`,
    codeToGrpcStatus(errorCodeOf(error)) as Code,
    undefined,
    undefined,
    error,
  );
}

/**
 * The coded error a connect-es client throws for a failed call: a coded error as it is; anything
 * else through `ConnectError.from` (an aborted call is Canceled), with the status's code and its
 * message as the server sent it.
 */
export function fromConnectError(error: unknown): CodedError {
  if (CodedError.is(error)) return error;
  const connectError = ConnectError.from(error);
  return new CodedError(codeFromGrpcStatus(connectError.code), connectError.rawMessage, {
    cause: error,
  });
}
