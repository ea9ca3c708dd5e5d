export { toConnectError } from "@nix-snapshotter/errdefs/connect";
export type { ImageServiceErrorCode } from "./errors.js";
export { ImageServiceError } from "./errors.js";
export type { FilesystemUsageFigures } from "./image-fs-info.js";
export { filesystemUsage } from "./image-fs-info.js";
export type { CriImageService, ImageServiceOptions } from "./image-service.js";
export { createImageService, criNamespace, nixArchiveLimits } from "./image-service.js";
export type { NixImageReference } from "./nix-reference.js";
export { isNixReference, parseNixImageReference } from "./nix-reference.js";
