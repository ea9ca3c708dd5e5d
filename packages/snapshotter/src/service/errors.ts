import { Code, ConnectError } from "@connectrpc/connect";
import { type ErrorCode, errorCodeName, SnapshotterError } from "../errors.js";

/**
 * Converts anything a snapshotter call threw into the gRPC status containerd acts on:
 * SnapshotterError codes map one to one (they are gRPC codes), an aborted call is Canceled,
 * anything else is Internal with its message (never swallowed).
 */
export function toConnectError(error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  if (error instanceof SnapshotterError) {
    return new ConnectError(
      error.message,
      error.code as number as Code,
      undefined,
      undefined,
      error,
    );
  }
  if (error instanceof Error && error.name === "AbortError") {
    return new ConnectError(error.message, Code.Canceled, undefined, undefined, error);
  }
  const message = error instanceof Error ? error.message : String(error);
  return new ConnectError(message, Code.Internal, undefined, undefined, error);
}

/** The name of a gRPC code as containerd's errdefs spell it, for logs and metrics. */
export function codeName(code: Code | ErrorCode | 0): string {
  return code === 0 ? "OK" : errorCodeName(code as ErrorCode);
}
