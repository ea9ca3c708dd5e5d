import { CodedError, type CodedErrorOptions, type ErrorCode } from "@nix-snapshotter/errdefs";

/** The workspace's one code set (`@nix-snapshotter/errdefs`). */
export type RegistryErrorCode = ErrorCode;

export interface RegistryErrorOptions extends CodedErrorOptions {
  /** Registry host (`ghcr.io`, `127.0.0.1:5000`) the failure concerns. */
  registry?: string;
  /** Repository inside the registry. */
  repository?: string;
  /** HTTP status of the response that caused the failure, if any. */
  status?: number;
  /**
   * The protocol the registry was found to speak when the client spoke the other one: `"https"`
   * when a plain-HTTP request met an HTTPS server, `"http"` when a TLS handshake met a plain-HTTP
   * server. A program adds its own advice (the CLI names its `--plain-http` flag).
   */
  registrySpeaks?: "https" | "http";
}

/** Every failure of the registry client is a `RegistryError`. */
export class RegistryError extends CodedError {
  static override readonly marker: symbol = Symbol.for(
    "@nix-snapshotter/image-builder.RegistryError",
  );
  override readonly name: string = "RegistryError";
  readonly registry: string | undefined;
  readonly repository: string | undefined;
  readonly status: number | undefined;
  readonly registrySpeaks: "https" | "http" | undefined;

  constructor(code: ErrorCode, message: string, options: RegistryErrorOptions = {}) {
    super(code, message, options);
    this.registry = options.registry;
    this.repository = options.repository;
    this.status = options.status;
    this.registrySpeaks = options.registrySpeaks;
  }
}

/** The error code for an HTTP status that is not a success. */
export function codeForStatus(status: number): ErrorCode {
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
