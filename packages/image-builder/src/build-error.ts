import { OciError } from "@nix-snapshotter/oci";

/** The closed set of error codes of image building, named as gRPC names them. */
export type ImageBuildErrorCode =
  | "InvalidArgument"
  | "NotFound"
  | "FailedPrecondition"
  | "DataLoss"
  | "Internal";

export interface ImageBuildErrorOptions {
  cause?: unknown;
}

/** Every failure of `buildImage` and its helpers is an `ImageBuildError`. */
export class ImageBuildError extends Error {
  readonly code: ImageBuildErrorCode;

  constructor(code: ImageBuildErrorCode, message: string, options: ImageBuildErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ImageBuildError";
    this.code = code;
  }
}

/** Re-throws an `OciError` (or any error) as an `ImageBuildError` with `context` in front. */
export function asBuildError(error: unknown, context: string): ImageBuildError {
  if (error instanceof ImageBuildError) return error;
  if (error instanceof OciError) {
    return new ImageBuildError(error.code, `${context}: ${error.message}`, { cause: error });
  }
  const code = (error as NodeJS.ErrnoException).code === "ENOENT" ? "NotFound" : "Internal";
  return new ImageBuildError(code, `${context}: ${(error as Error).message}`, { cause: error });
}
