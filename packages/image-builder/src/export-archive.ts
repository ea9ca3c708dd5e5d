import { writeOciArchive } from "@nix-snapshotter/oci";
import { asBuildError } from "./build-error.js";
import type { BuiltImage } from "./build-image.js";

export interface WriteImageArchiveOptions {
  /** Image names (full references) recorded in `index.json` and `manifest.json`. */
  names?: string[];
  storeDir?: string;
}

/**
 * Writes a built image as an OCI archive (OCI layout plus docker `manifest.json`) in memory.
 * Deterministic like the image itself.
 */
export function writeImageArchive(
  image: BuiltImage,
  options: WriteImageArchiveOptions = {},
): Buffer {
  try {
    return writeOciArchive({
      manifests: [{ descriptor: image.manifestDescriptor, names: options.names ?? [] }],
      blobs: image.blobs,
      ...(options.storeDir === undefined
        ? {}
        : { referenceOptions: { storeDir: options.storeDir } }),
    });
  } catch (error) {
    throw asBuildError(error, "archive");
  }
}
