import {
  type ArchiveContents,
  type ArchiveImage,
  loadArchiveImage,
  OciError,
} from "@nix-snapshotter/oci";
import { RegistryError } from "./errors.js";
import { createMemoryImageSource, type ImageSource } from "./push.js";

/** An image source over an OCI layout or docker archive, plus what the archive says about it. */
export interface ArchiveImageSource extends ImageSource {
  /** `oci` or `docker` (for a docker archive the manifest is synthesised, as containerd does). */
  format: ArchiveImage["format"];
  /** References the archive names its image by (`io.containerd.image.name`, docker RepoTags). */
  names: string[];
}

/**
 * Reads the single image of an archive (bytes or already read contents) as an image source.
 * Every blob is verified against its digest while loading: a tampered archive fails here with
 * DataLoss, before anything is sent anywhere.
 */
export function createArchiveImageSource(
  archive: Uint8Array | ArchiveContents,
): ArchiveImageSource {
  let image: ArchiveImage;
  try {
    image = loadArchiveImage(archive);
  } catch (error) {
    if (error instanceof OciError) {
      // OciError's codes are a subset of RegistryError's.
      throw new RegistryError(error.code, error.message, { cause: error });
    }
    throw error;
  }
  const blobs = new Map<string, Uint8Array>();
  blobs.set(image.manifestDescriptor.digest, image.manifestBlob);
  blobs.set(image.manifest.config.digest, image.configBlob);
  for (const layer of image.layers) blobs.set(layer.descriptor.digest, layer.data);
  return {
    ...createMemoryImageSource(image.manifestDescriptor, blobs),
    format: image.format,
    names: image.names,
  };
}
