import { CodedError, type CodedErrorOptions, type ErrorCode } from "@nix-snapshotter/errdefs";

/** The workspace's one code set (`@nix-snapshotter/errdefs`). */
export type ImageBuildErrorCode = ErrorCode;

export type ImageBuildErrorOptions = CodedErrorOptions;

/** Every failure of `buildImage` and its helpers is an `ImageBuildError`. */
export class ImageBuildError extends CodedError {
  static override readonly marker: symbol = Symbol.for(
    "@nix-snapshotter/image-builder.ImageBuildError",
  );
  override readonly name: string = "ImageBuildError";
}

/**
 * Re-throws any error as an `ImageBuildError` with `context` in front: another package's coded
 * error (an `OciError`) keeps its code, a missing file is NotFound, anything else as
 * `CodedError.from` codes it.
 */
export function asBuildError(error: unknown, context: string): ImageBuildError {
  if (ImageBuildError.is(error)) return error;
  if (!CodedError.is(error) && (error as NodeJS.ErrnoException | null)?.code === "ENOENT") {
    return new ImageBuildError("NotFound", `${context}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  return ImageBuildError.from(error, context);
}
