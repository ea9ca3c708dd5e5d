import type { OutgoingHttpHeaders } from "node:http";
import { CodedError, type CodedErrorOptions, ErrorCode } from "@nix-snapshotter/errdefs";

/** Error codes of the OCI distribution spec (and Docker's registry) that this registry answers. */
export type DistributionErrorCode =
  | "NAME_INVALID"
  | "NAME_UNKNOWN"
  | "MANIFEST_UNKNOWN"
  | "BLOB_UNKNOWN"
  | "DIGEST_INVALID"
  | "UNSUPPORTED"
  | "TOOMANYREQUESTS"
  | "UNAVAILABLE"
  | "UNKNOWN";

/**
 * What an error is about, where the workspace's code alone does not pick the distribution code:
 * a NotFound `name` is NAME_UNKNOWN, a `blob` BLOB_UNKNOWN, anything else MANIFEST_UNKNOWN.
 */
export type RegistrySubject =
  | "name"
  | "manifest"
  | "blob"
  | "digest"
  | "url"
  | "method"
  | "endpoint"
  | "client";

export interface RegistryErrorOptions extends CodedErrorOptions {
  subject?: RegistrySubject;
  /** The `detail` of the error body (the names missing, the digest asked for). */
  detail?: unknown;
}

/**
 * The registry's error: a workspace {@link ErrorCode} and what it is about. The distribution
 * spec's code, the HTTP status and headers are derived only at the HTTP edge
 * ({@link toDistributionError}).
 */
export class RegistryError extends CodedError {
  static override readonly marker: symbol = Symbol.for("nix-registry.RegistryError");

  readonly subject: RegistrySubject | undefined;
  readonly detail: unknown;

  constructor(code: ErrorCode, message: string, options: RegistryErrorOptions = {}) {
    super(code, message, options.cause === undefined ? {} : { cause: options.cause });
    this.name = "RegistryError";
    this.subject = options.subject;
    this.detail = options.detail;
  }
}

/** An error as the HTTP edge answers it: `{"errors":[{code,message,detail}]}` with a status. */
export interface DistributionError {
  status: number;
  code: DistributionErrorCode;
  message: string;
  detail?: unknown;
  headers: OutgoingHttpHeaders;
}

/** The one conversion of any thrown value to the distribution spec's code, status and headers. */
export function toDistributionError(error: unknown): DistributionError {
  const registryError = RegistryError.from(error);
  const { code, subject, message } = registryError;
  const answer = (
    status: number,
    distributionCode: DistributionErrorCode,
    headers: OutgoingHttpHeaders = {},
  ): DistributionError => ({
    status,
    code: distributionCode,
    message,
    ...(registryError.detail === undefined ? {} : { detail: registryError.detail }),
    headers,
  });
  switch (code) {
    case ErrorCode.InvalidArgument:
      if (subject === "digest") return answer(400, "DIGEST_INVALID");
      if (subject === "url") return answer(414, "NAME_INVALID", { connection: "close" });
      return answer(400, "NAME_INVALID");
    case ErrorCode.NotFound:
      if (subject === "name") return answer(404, "NAME_UNKNOWN");
      if (subject === "blob") return answer(404, "BLOB_UNKNOWN");
      if (subject === "endpoint") return answer(404, "UNSUPPORTED");
      return answer(404, "MANIFEST_UNKNOWN");
    case ErrorCode.Unimplemented:
      return answer(405, "UNSUPPORTED", { allow: "GET, HEAD", connection: "close" });
    case ErrorCode.ResourceExhausted:
      if (subject === "client") return answer(429, "TOOMANYREQUESTS", { "retry-after": "1" });
      return answer(500, "UNKNOWN");
    case ErrorCode.DeadlineExceeded:
    case ErrorCode.Unavailable:
    case ErrorCode.Canceled:
      return answer(503, "UNAVAILABLE");
    default:
      return answer(500, "UNKNOWN");
  }
}
