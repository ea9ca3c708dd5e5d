/** The closed set of error codes of registry operations, named as gRPC names them. */
export type RegistryErrorCode =
  | "InvalidArgument"
  | "NotFound"
  | "AlreadyExists"
  | "PermissionDenied"
  | "Unauthenticated"
  | "FailedPrecondition"
  | "ResourceExhausted"
  | "Unavailable"
  | "DataLoss"
  | "Internal";

export interface RegistryErrorOptions {
  cause?: unknown;
  /** Registry host (`ghcr.io`, `127.0.0.1:5000`) the failure concerns. */
  registry?: string;
  /** Repository inside the registry. */
  repository?: string;
  /** HTTP status of the response that caused the failure, if any. */
  status?: number;
}

/** Every failure of the registry client is a `RegistryError` with one of the codes above. */
export class RegistryError extends Error {
  readonly code: RegistryErrorCode;
  readonly registry: string | undefined;
  readonly repository: string | undefined;
  readonly status: number | undefined;

  constructor(code: RegistryErrorCode, message: string, options: RegistryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "RegistryError";
    this.code = code;
    this.registry = options.registry;
    this.repository = options.repository;
    this.status = options.status;
  }
}

/** The error code for an HTTP status that is not a success. */
export function codeForStatus(status: number): RegistryErrorCode {
  switch (status) {
    case 400:
    case 405:
    case 411:
    case 413:
    case 415:
      return "InvalidArgument";
    case 401:
      return "Unauthenticated";
    case 403:
      return "PermissionDenied";
    case 404:
      return "NotFound";
    case 409:
      return "AlreadyExists";
    case 416:
      return "FailedPrecondition";
    case 429:
      return "ResourceExhausted";
    default:
      return status >= 500 ? "Unavailable" : "FailedPrecondition";
  }
}

/** One entry of the `errors` array in a distribution error body. */
export interface DistributionErrorEntry {
  code: string;
  message: string;
}

/**
 * The `errors` of a distribution error body (`{"errors":[{"code","message","detail"}]}`), or an
 * empty array when the body is something else.
 */
export function parseDistributionErrors(body: string): DistributionErrorEntry[] {
  try {
    const parsed: unknown = JSON.parse(body);
    if (typeof parsed !== "object" || parsed === null) return [];
    const errors = (parsed as { errors?: unknown }).errors;
    if (!Array.isArray(errors)) return [];
    return errors.flatMap((entry: unknown) => {
      if (typeof entry !== "object" || entry === null) return [];
      const { code, message } = entry as { code?: unknown; message?: unknown };
      return [
        {
          code: typeof code === "string" ? code : "UNKNOWN",
          message: typeof message === "string" ? message : "",
        },
      ];
    });
  } catch {
    return [];
  }
}
