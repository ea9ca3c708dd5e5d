/** The closed set of error codes, named as gRPC names them. */
export type OciErrorCode =
  | "InvalidArgument"
  | "NotFound"
  | "FailedPrecondition"
  | "DataLoss"
  | "Internal";

export interface OciErrorOptions {
  cause?: unknown;
}

/** Every failure of this package is an `OciError` with one of the codes above. */
export class OciError extends Error {
  readonly code: OciErrorCode;

  constructor(code: OciErrorCode, message: string, options: OciErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "OciError";
    this.code = code;
  }
}

export function invalidArgument(message: string, options?: OciErrorOptions): OciError {
  return new OciError("InvalidArgument", message, options);
}
