import { CodedError, type ErrorCode } from "@nix-snapshotter/errdefs";

/** The workspace's one code set (`@nix-snapshotter/errdefs`). */
export type ImageServiceErrorCode = ErrorCode;

/**
 * Failures of the image service's own checks. It answers the kubelet with `toConnectError` from
 * `@nix-snapshotter/errdefs/connect`, like every connect-es edge of the workspace.
 */
export class ImageServiceError extends CodedError {
  static override readonly marker: symbol = Symbol.for(
    "@nix-snapshotter/cri-image-service.ImageServiceError",
  );
  override readonly name: string = "ImageServiceError";
}
